"""Credentials and TLS travel in the registry URL (real Redis with requirepass and a TLS port)."""

from __future__ import annotations

import pytest
import torch

from serving.registry.factory import open_registry
from serving.registry.versions import Version
from stream.core.errors import RegistryUnavailableError


@pytest.mark.parametrize("tls", [False, True], ids=["auth", "auth+tls"])
def test_password_and_tls_from_the_url(secure_redis, unique_name, tls):
    reg = open_registry(secure_redis.url(tls=tls), namespace=unique_name)
    try:
        v = reg.publish({"w": torch.arange(3.0)}, Version(number=0))
        reg.validate(v.number)
        assert torch.equal(reg.load_state(reg.current().number)["w"], torch.arange(3.0))
        assert secure_redis.password not in repr(reg)
    finally:
        reg.close()


@pytest.mark.parametrize("tls", [False, True], ids=["auth", "auth+tls"])
def test_a_wrong_password_says_so(secure_redis, unique_name, tls):
    reg = open_registry(secure_redis.url(tls=tls, password="wrong"), namespace=unique_name)
    try:
        with pytest.raises(RegistryUnavailableError, match="credentials|password|AUTH|auth") as info:
            reg.ping()
        assert "wrong" not in str(info.value).replace("wrong admin", "")
    finally:
        reg.close()


def test_plain_text_to_the_tls_port_fails_cleanly(secure_redis, unique_name):
    url = f"redis://:{secure_redis.password}@127.0.0.1:{secure_redis.tls_port}/0"
    reg = open_registry(url, namespace=unique_name, socket_timeout=1.0, retries=0)
    try:
        with pytest.raises(RegistryUnavailableError):
            reg.ping()
    finally:
        reg.close()
