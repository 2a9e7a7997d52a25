"""The ``streamlearn`` command group: one module per command, registered here with ``add_command``.

Every user-facing failure (unreachable broker, missing topic, bad config)
prints one line ``streamlearn: error: ...`` and exits with code 2; tracebacks
are for bugs only (set ``STREAMLEARN_DEBUG=1`` to see them for errors too).
How, and the checks that run before a command starts: :mod:`stream.cli.errors`.
"""

from __future__ import annotations

import logging

import click

from stream.cli.broker import broker
from stream.cli.demo import demo
from stream.cli.errors import (
    OneLineGroup,
)
from stream.cli.inspect import inspect
from stream.cli.predict import predict
from stream.cli.produce import produce
from stream.cli.replay import replay
from stream.cli.retrain import retrain
from stream.cli.run import run
from stream.cli.serve import serve


@click.group(
    cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="streamlearn")
def main(verbose: int) -> None:
    """streamlearn: learn continuously from Kafka streams, exactly once."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python logs every refused connection while a broker starts; our own
    # errors say what matters. -vv shows its chatter again.
    logging.getLogger("kafka").setLevel(logging.DEBUG if verbose >= 2 else logging.CRITICAL)


# Registered here, imported nowhere else: a command module never imports this one.
for _command in (run, produce, predict, broker, demo, inspect, replay, retrain, serve):
    main.add_command(_command)

if __name__ == "__main__":
    main()
