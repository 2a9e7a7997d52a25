"""``streamlearn broker``: the embedded in-memory Kafka-protocol broker (tansu) in the foreground."""

from __future__ import annotations

import sys
import time

import click

from stream.cli.errors import (
    require_free_port,
    user_errors,
)


@click.command()
@click.option("--port", type=int, default=9092, show_default=True)
@user_errors
def broker(port):
    """Run the embedded in-memory Kafka-protocol broker (tansu) on 127.0.0.1 until Ctrl-C or SIGTERM."""
    import signal

    from stream.sources.embedded_broker import EmbeddedBroker

    # Checked first: on a taken port tansu exits at once while whatever listens there
    # would answer the readiness probe, and "broker on :9092" would be a lie.
    require_free_port("127.0.0.1", port, option="--port")
    # SIGTERM (kill, a service manager) must stop tansu too, not orphan it holding the port:
    # raising unwinds through the context manager, which stops the child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with EmbeddedBroker(port=port) as b:
        click.echo(
            f"[streamlearn] embedded broker on {b.bootstrap} (in memory; Ctrl-C or SIGTERM to stop)", err=True
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
