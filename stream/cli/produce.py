"""``streamlearn produce``: write a synthetic (optionally drifting or poisoned) stream to a topic."""

from __future__ import annotations

import time

import click

from stream.cli.errors import require_broker
from stream.cli.options import BOOTSTRAP, TOPICS
from stream.cli.record_options import RECORD_FORMAT, value_format_from
from stream.cli.table import Option, Values, with_options
from stream.core.errors import ConfigError

#: ``streamlearn produce``'s options, in ``--help`` order.
PRODUCE_OPTIONS = (
    BOOTSTRAP,
    TOPICS.but(name="topic", multiple=False, required=True, help=None),
    Option("--events", "n_events", type=int, default=10_000, show_default=True),
    Option(
        "--generator",
        "generator",
        type=click.Choice(["agrawal", "sea", "hyperplane", "rbf", "clicks"]),
        default="hyperplane",
        show_default=True,
        help="river's numeric generators, or clicks: impressions as named fields (user, ad, device, country, "
        "amount, age with missing values, hour, is_new) and a 0/1 click, with a drift of ad preferences at "
        "--drift-at (default: halfway). See docs/features.md.",
    ),
    Option(
        "--partitions",
        "partitions",
        type=int,
        default=3,
        show_default=True,
        help="Partitions if the topic is created.",
    ),
    Option("--drift-at", "drift_at", type=int, help="Switch concept at this record index."),
    Option("--drift-width", "drift_width", type=int, default=1, show_default=True),
    Option(
        "--n-features", "n_features", type=int, default=10, show_default=True, help="For hyperplane and rbf."
    ),
    Option("--rate", "rate", type=float, help="Records per second (default: as fast as possible)."),
    Option("--corrupt-every", "corrupt_every", type=int, help="Make every k-th record undecodable."),
    Option(
        "--poison",
        "poison",
        metavar="KIND:START:COUNT",
        help="Corrupt COUNT decodable records from index START: label_flip or scale (features x1000). "
        "Exercises the drift policy's rollback.",
    ),
    Option(
        "--start-time",
        "start_time",
        metavar="TIME",
        help="Backdate the stream: record i gets timestamp TIME + i x --interval-ms (ISO-8601, @EPOCH_MS "
        "or relative like -2h), a history to replay by time. Default: append time.",
    ),
    Option(
        "--interval-ms",
        "interval_ms",
        type=int,
        default=10,
        show_default=True,
        help="Spacing of backdated timestamps.",
    ),
    Option("--seed", "seed", type=int, default=42, show_default=True),
    *RECORD_FORMAT,
)


@click.command()
@with_options(PRODUCE_OPTIONS)
def produce(opts: Values) -> None:
    """Write a synthetic stream (river generators, optional concept drift) to a topic."""
    from stream.sources.produce import SyntheticStream
    from stream.sources.produce import produce as produce_stream

    bootstrap, topic = opts.bootstrap, opts.topic
    if not bootstrap:
        raise ConfigError("pass --bootstrap HOST:PORT (or set STREAMLEARN_KAFKA_BOOTSTRAP)")
    require_broker(bootstrap)
    started = time.monotonic()
    sent = produce_stream(
        bootstrap,
        topic,
        SyntheticStream(
            n=opts.n_events,
            generator=opts.generator,
            seed=opts.seed,
            drift_at=opts.drift_at,
            drift_width=opts.drift_width,
            n_features=opts.n_features,
            corrupt_every=opts.corrupt_every,
            poison=_parse_poison(opts.poison),
            start_ts_ms=_parse_time(opts.start_time),
            interval_ms=opts.interval_ms,
        ),
        serialize=_serializer(value_format_from(opts), topic),
        rows=_click_rows(opts) if opts.generator == "clicks" else None,
        partitions=opts.partitions,
        rate=opts.rate,
    )
    click.echo(
        f"[streamlearn] produced {sent:,} {opts.generator} records to {topic} in {time.monotonic() - started:.1f}s",
        err=True,
    )


def _click_rows(opts: Values):
    """The click stream's records (``stream.testing.click_stream``), with fresh ids and the stream's timing."""
    import uuid

    from stream.testing.click_stream import click_records

    n = opts.n_events
    drift = 0.5 if opts.drift_at is None else min(max(opts.drift_at / max(n, 1), 0.0), 1.0)
    start = _parse_time(opts.start_time)
    prefix = f"{uuid.uuid4().hex[:8]}-"
    for i, rec in enumerate(click_records(n, seed=opts.seed, drift_at=drift)):
        rec.pop("p", None)  # the ground truth stays out of the stream
        rec["id"] = f"{prefix}{i}"
        if start is not None:
            rec["ts"] = start + i * opts.interval_ms
        yield rec


def _serializer(value_format, topic: str):
    """``row -> bytes`` in the configured format; with a registry the subject is Confluent's default ``<topic>-value``."""
    import orjson

    if value_format is None:
        return orjson.dumps
    from stream.codec.formats import serializer_for

    subject = f"{topic}-value" if value_format.registry_url else None
    return serializer_for(value_format, subject).serialize


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
