"""``streamlearn produce``: write a synthetic (optionally drifting or poisoned) stream to a topic."""

from __future__ import annotations

import time

import click

from stream.cli.errors import (
    require_broker,
    user_errors,
)
from stream.core.errors import ConfigError


@click.command()
@click.option("--bootstrap", default=None, help="Kafka bootstrap servers [env STREAMLEARN_KAFKA_BOOTSTRAP].")
@click.option("--topic", required=True)
@click.option("--events", "n_events", type=int, default=10_000, show_default=True)
@click.option(
    "--generator",
    type=click.Choice(["agrawal", "sea", "hyperplane", "rbf"]),
    default="hyperplane",
    show_default=True,
)
@click.option(
    "--partitions", type=int, default=3, show_default=True, help="Partitions if the topic is created."
)
@click.option("--drift-at", type=int, default=None, help="Switch concept at this record index.")
@click.option("--drift-width", type=int, default=1, show_default=True)
@click.option("--n-features", type=int, default=10, show_default=True, help="For hyperplane and rbf.")
@click.option("--rate", type=float, default=None, help="Records per second (default: as fast as possible).")
@click.option("--corrupt-every", type=int, default=None, help="Make every k-th record undecodable.")
@click.option(
    "--poison",
    default=None,
    metavar="KIND:START:COUNT",
    help="Corrupt COUNT decodable records from index START: label_flip or scale (features x1000). "
    "Exercises the drift policy's rollback.",
)
@click.option(
    "--start-time",
    default=None,
    metavar="TIME",
    help="Backdate the stream: record i gets timestamp TIME + i x --interval-ms (ISO-8601, @EPOCH_MS "
    "or relative like -2h), a history to replay by time. Default: append time.",
)
@click.option(
    "--interval-ms", type=int, default=10, show_default=True, help="Spacing of backdated timestamps."
)
@click.option("--seed", type=int, default=42, show_default=True)
@user_errors
def produce(
    bootstrap,
    topic,
    n_events,
    generator,
    partitions,
    drift_at,
    drift_width,
    n_features,
    rate,
    corrupt_every,
    poison,
    start_time,
    interval_ms,
    seed,
):
    """Write a synthetic stream (river generators, optional concept drift) to a topic."""
    from stream.core.settings import KafkaSettings
    from stream.sources.produce import produce as produce_stream

    bootstrap = bootstrap or KafkaSettings().bootstrap
    if not bootstrap:
        raise ConfigError("pass --bootstrap HOST:PORT (or set STREAMLEARN_KAFKA_BOOTSTRAP)")
    require_broker(bootstrap)
    started = time.monotonic()
    sent = produce_stream(
        bootstrap,
        topic,
        n_events,
        generator=generator,
        partitions=partitions,
        seed=seed,
        drift_at=drift_at,
        drift_width=drift_width,
        n_features=n_features,
        rate=rate,
        corrupt_every=corrupt_every,
        poison=_parse_poison(poison),
        start_ts_ms=_parse_time(start_time),
        interval_ms=interval_ms,
    )
    click.echo(
        f"[streamlearn] produced {sent:,} {generator} records to {topic} in {time.monotonic() - started:.1f}s",
        err=True,
    )


def _parse_time(spec: str | None) -> int | None:
    if spec is None:
        return None
    from stream.sources.bounds import parse_bound

    bound = parse_bound(spec)
    if bound.kind != "time":
        raise ConfigError(
            f"--start-time {spec!r} is not a time: use ISO-8601, @EPOCH_MS or a relative time like -2h"
        )
    return bound.ts_ms


def _parse_poison(spec: str | None) -> tuple[str, int, int] | None:
    if spec is None:
        return None
    from stream.sources.produce import POISONS

    kind, _, rest = spec.partition(":")
    start, _, count = rest.partition(":")
    if kind not in POISONS or not start.isdigit() or not count.isdigit():
        raise ConfigError(
            f"--poison {spec!r}: use KIND:START:COUNT with KIND one of {', '.join(POISONS)}, "
            "e.g. label_flip:20000:1000"
        )
    return kind, int(start), int(count)
