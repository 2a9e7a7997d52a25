"""docker-compose.yml stays in step with the CLI: every streamlearn command in it parses."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from stream.cli import main

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def test_every_streamlearn_service_command_is_a_valid_cli_invocation():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    built = {name: svc for name, svc in services.items() if svc.get("build")}
    assert {"producer", "learner"} <= set(built)
    for name, svc in built.items():
        args = svc["command"]
        ctx = main.make_context("streamlearn", list(args), resilient_parsing=False)
        sub = main.get_command(ctx, args[0])
        assert isinstance(sub, click.Command), f"{name}: unknown command {args[0]!r}"
        sub.make_context(args[0], list(args[1:]))  # raises on unknown or malformed options
        assert svc["environment"]["STREAMLEARN_KAFKA_BOOTSTRAP"] == "kafka:9092"
