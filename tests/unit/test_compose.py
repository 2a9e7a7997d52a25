"""docker-compose.yml stays valid and in step with the CLI.

* Compose itself accepts the file: tests/e2e/test_compose_config.py (it runs
  ``docker compose config``, a subprocess).
* Every streamlearn command in it parses with the click CLI.
* Services reach each other by compose service names only (no loopback, which
  inside a container is the container itself), the API binds every interface
  and its port is published, and the learner keeps its checkpoints on a named
  volume.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from stream.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
#: Settings that name an address to *bind* (where an empty host or 0.0.0.0 is right),
#: as opposed to one to connect to (which must be a compose service name).
BIND_SETTINGS = frozenset({"KAFKA_LISTENERS"})


# --------------------------------------------------------------------------- helpers


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _env(svc: dict[str, Any]) -> dict[str, str | None]:
    """A service's ``environment`` as a dict, whichever of the two syntaxes it uses."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        out: dict[str, str | None] = {}
        for item in env:
            key, sep, value = item.partition("=")
            out[key] = value if sep else None
        return out
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def _streamlearn_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in _services().items() if svc.get("build")}


def _parse(args: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse a streamlearn command line with the real CLI: (subcommand, its parameters)."""
    args = [str(a) for a in args]
    ctx = main.make_context("streamlearn", list(args), resilient_parsing=False)
    sub = main.get_command(ctx, args[0])
    assert isinstance(sub, click.Command), f"unknown command {args[0]!r}"
    sub_ctx = sub.make_context(args[0], list(args[1:]))  # raises on unknown or malformed options
    return args[0], sub_ctx.params


def _service_with_command(subcommand: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    found = [
        (name, svc) for name, svc in _streamlearn_services().items() if str(svc["command"][0]) == subcommand
    ]
    assert len(found) == 1, f"expected one service running `streamlearn {subcommand}`, found {found}"
    name, svc = found[0]
    return name, svc, _parse(svc["command"])[1]


def _container_ports(svc: dict[str, Any]) -> set[int]:
    """Container ports published on the host (short or long ``ports`` syntax)."""
    out = set()
    for spec in svc.get("ports") or []:
        if isinstance(spec, dict):
            if spec.get("published") is not None:
                out.add(int(spec["target"]))
            continue
        parts = str(spec).split("/")[0].split(":")
        if (
            len(parts) >= 2
        ):  # HOST:CONTAINER or IP:HOST:CONTAINER; a bare port is not published on a fixed one
            out.add(int(parts[-1]))
    return out


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/]*@)?(?P<host>\[[^\]]*\]|[^:/]*)(?::\d+)?")
_VOTER = re.compile(r"^\d+@(?P<host>[^:]+):\d+$")
_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9_.-]+):\d+$")


def _endpoints(setting: str, value: str) -> list[str]:
    """Hosts named in a setting's value: URLs, KRaft voters, and bootstrap host:port lists."""
    hosts = []
    for part in value.split(","):
        part = part.strip()
        for pattern in (_URL, _VOTER):
            m = pattern.match(part)
            if m:
                hosts.append(m.group("host"))
                break
        else:
            if "BOOTSTRAP" in setting.upper():
                m = _HOST_PORT.match(part)
                assert m, f"{setting}={value!r}: expected HOST:PORT[,HOST:PORT...]"
                hosts.append(m.group("host"))
    return hosts


def _settings(svc: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) of every environment variable and every command-line option value."""
    pairs = [(k, v) for k, v in _env(svc).items() if v is not None]
    command = svc.get("command") or []
    if isinstance(command, str):
        command = command.split()
    command = [str(a) for a in command]
    for prev, arg in zip(["<command>", *command], command):
        pairs.append((prev if prev.startswith("-") else "<arg>", arg))
    return pairs


# --------------------------------------------------------------------------- in step with the CLI


def test_every_streamlearn_service_command_is_a_valid_cli_invocation():
    built = _streamlearn_services()
    assert {"producer", "learner", "api"} <= set(built)
    for name, svc in built.items():
        try:
            subcommand, _ = _parse(svc["command"])
        except click.ClickException as exc:
            pytest.fail(f"{name}: {svc['command']} does not parse: {exc.format_message()}")
        if subcommand in {"run", "produce"}:
            assert _env(svc).get("STREAMLEARN_KAFKA_BOOTSTRAP") == "kafka:9092", name


def test_one_image_built_from_the_project_dockerfile():
    built = _streamlearn_services()
    contexts = {
        str(svc["build"] if isinstance(svc["build"], str) else svc["build"]["context"])
        for svc in built.values()
    }
    assert contexts == {"."}
    assert len({svc.get("image") for svc in built.values()}) == 1, "one image, several commands"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ENTRYPOINT \[\"streamlearn\"\]", dockerfile, re.M)
    assert re.search(r"^USER (?!root)\S+", dockerfile, re.M), "the image runs as a non-root user"
    assert re.search(r"^EXPOSE 8000\b", dockerfile, re.M)


def test_kafka_runs_kraft_and_both_backing_services_have_healthchecks():
    services = _services()
    kafka_env = _env(services["kafka"])
    assert "controller" in (kafka_env.get("KAFKA_PROCESS_ROLES") or "")
    assert not any(k.startswith("KAFKA_ZOOKEEPER") for k in kafka_env)
    assert kafka_env.get("CLUSTER_ID"), "apache/kafka requires CLUSTER_ID in KRaft mode once KAFKA_* are set"
    assert services["kafka"]["healthcheck"]["test"]
    assert "redis-cli" in " ".join(services["redis"]["healthcheck"]["test"])
    assert "ping" in " ".join(services["redis"]["healthcheck"]["test"])


# --------------------------------------------------------------------------- names and ports


def test_services_address_each_other_by_compose_service_names():
    services = _services()
    names = set(services)
    for name, svc in services.items():
        for dep in svc.get("depends_on") or []:
            assert dep in names, f"{name} depends on unknown service {dep!r}"
        for setting, value in _settings(svc):
            lowered = value.lower()
            assert not any(lb in lowered for lb in LOOPBACK_NAMES), (
                f"{name}: {setting}={value!r} names loopback, which inside a container is the "
                "container itself; use a compose service name"
            )
            for host in _endpoints(setting, value):
                if setting in BIND_SETTINGS:
                    assert host in {"", "0.0.0.0"} | names, f"{name}: {setting}={value!r}"
                else:
                    assert host in names, (
                        f"{name}: {setting}={value!r} names {host!r}, not a service of this compose file"
                    )


def test_learner_publishes_to_redis_and_checkpoints_on_a_named_volume():
    name, svc, params = _service_with_command("run")
    assert params["registry"] == "redis://redis:6379/0"
    ckpt = params["checkpoint_dir"] or _env(svc).get("STREAMLEARN_CHECKPOINT_DIR")
    assert ckpt, f"{name}: no checkpoint directory"
    named = set(_compose().get("volumes") or {})
    mounts = [str(v).split(":") for v in svc.get("volumes") or []]
    assert any(
        src in named and (ckpt == dst or ckpt.startswith(dst.rstrip("/") + "/")) for src, dst, *_ in mounts
    ), f"{name}: {ckpt} is not on a named volume ({mounts})"
    conditions = {dep: spec.get("condition") for dep, spec in svc["depends_on"].items()}
    assert conditions.get("kafka") == conditions.get("redis") == "service_healthy"
    assert svc.get("restart") in {"always", "unless-stopped", "on-failure"}


def test_api_serves_the_redis_registry_on_a_published_port():
    name, svc, params = _service_with_command("serve")
    env = _env(svc)
    assert (params["registry"] or env.get("STREAMLEARN_REGISTRY_URL")) == "redis://redis:6379/0"
    # Inside a container 127.0.0.1 (serve's default) is unreachable from anywhere else.
    host = params["host"] or env.get("STREAMLEARN_SERVING_HOST")
    assert host == "0.0.0.0", f"{name} must bind every interface, not {host!r}"
    port = params["port"] or int(env.get("STREAMLEARN_SERVING_PORT") or 8000)
    assert port in _container_ports(svc), f"{name}: container port {port} is not published"
    check = " ".join(svc["healthcheck"]["test"])
    assert f":{port}/health/ready" in check
    assert "curl" not in check and "wget" not in check, "python:3.11-slim has neither curl nor wget"
    assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    # The admin token comes from the caller's environment, never a literal in the file.
    assert "STREAMLEARN_SERVING_ADMIN_TOKEN" in env
    token = env["STREAMLEARN_SERVING_ADMIN_TOKEN"]
    assert token is None or token.startswith("${"), f"{name}: hard-coded admin token"
