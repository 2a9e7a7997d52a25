"""Open the registry a URL names: Redis for deployments, a directory as the embedded default.

Kept apart from the protocol in :mod:`serving.registry.base` so the base
imports neither backend (the backends import the base).

>>> import tempfile
>>> open_registry(tempfile.mkdtemp())  # doctest: +ELLIPSIS
FileRegistry(...)
"""

from __future__ import annotations

from typing import Any

from serving.registry.base import ModelRegistry
from stream.core.errors import ConfigError


def open_registry(target: str, *, namespace: str = "streamlearn", **options: Any) -> ModelRegistry:
    """A registry for ``target``: ``redis://``/``rediss://`` URL, ``file://PATH`` or a plain path.

    Credentials and TLS travel in the Redis URL
    (``rediss://:PASSWORD@host:6380/0``). ``namespace`` prefixes every Redis
    key, so several deployments can share one Redis.

    Raises
    ------
    ConfigError
        ``target`` is empty or has an unknown scheme.
    """
    if not target:
        raise ConfigError("no registry given: pass --registry redis://HOST:6379/0 or a directory path")
    if target.startswith(("redis://", "rediss://", "unix://")):
        from serving.registry.redis_backend import RedisRegistry

        return RedisRegistry(target, namespace=namespace, **options)
    if "://" in target and not target.startswith("file://"):
        raise ConfigError(f"unknown registry URL {target!r}: use redis://, rediss:// or a directory path")
    from serving.registry.file_backend import FileRegistry

    return FileRegistry(target.removeprefix("file://"), **options)
