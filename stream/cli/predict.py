"""``streamlearn predict``: a features topic in, a prediction-log topic out, with the registry's validated model.

The loop is :class:`~stream.sources.prediction_stream.PredictionStream`; this
module checks the command line, opens the registry, the consumer, the producer
and the dead-letter destination, and prints progress and a summary like ``run``.
"""

from __future__ import annotations

import click

from stream.cli.errors import require_broker, require_registry, require_registry_dir, require_topics
from stream.cli.options import (
    BOOTSTRAP,
    KAFKA_OPTIONS,
    KAFKA_SETTINGS,
    MAX_POLL_RECORDS,
    QUIET,
    REGISTRY,
    REGISTRY_NAMESPACE,
    TOPICS,
)
from stream.cli.table import Option, Values, with_options
from stream.core.errors import ConfigError

#: ``streamlearn predict``'s options, in ``--help`` order.
PREDICT_OPTIONS = (
    BOOTSTRAP,
    TOPICS.but(help="Features topic to predict (repeatable): records {id, x, ts}; a y is ignored."),
    Option(
        "--to",
        "to",
        metavar="TOPIC",
        help="Topic the predictions go to, one per record, keyed like it (created if missing).",
    ),
    Option(
        "--group",
        "group",
        help="Consumer group: positions are committed there (else in a file in --checkpoint-dir).",
    ),
    Option(
        "--from",
        "start",
        type=click.Choice(["earliest", "latest"]),
        default="earliest",
        show_default=True,
        help="Where a partition without a committed position starts.",
    ),
    REGISTRY.but(
        help="The registry whose validated version predicts: a directory or redis://HOST:6379/0 "
        "[env STREAMLEARN_REGISTRY_URL; default .streamlearn/registry]."
    ),
    REGISTRY_NAMESPACE,
    Option(
        "--checkpoint-dir",
        "checkpoint_dir",
        default=".streamlearn/predict",
        show_default=True,
        help="Positions without --group (positions-<--to>.json) and the dead-letter spool.",
    ),
    Option(
        "--dead-letter",
        "dead_letter",
        default="kafka",
        show_default=True,
        help="Where records that cannot be predicted go, with the reason: kafka (<topic>.dlq) | "
        "file:PATH | none (counted only).",
    ),
    Option(
        "--exactly-once",
        "exactly_once",
        is_flag=True,
        help="Produce each poll's predictions and commit its offsets in one Kafka transaction "
        "(needs --group, one process per group; readers use isolation_level=read_committed).",
    ),
    Option(
        "--until-idle",
        "until_idle",
        type=float,
        help="Exit once no record arrived for SECONDS and the lag is known to be 0.",
    ),
    Option(
        "--no-wait",
        "no_wait",
        is_flag=True,
        help="Fail (exit 2) when the registry has no validated version yet, instead of waiting for one.",
    ),
    Option(
        "--poll-interval",
        "poll_interval",
        type=float,
        default=1.0,
        show_default=True,
        help="How often the registry is read for a new validated version when notifications are missed.",
    ),
    Option("--device", "device", default="cpu", show_default=True, help="cpu | cuda | cuda:N"),
    MAX_POLL_RECORDS,
    KAFKA_OPTIONS,
    QUIET,
    KAFKA_SETTINGS,
)


@click.command()
@with_options(PREDICT_OPTIONS)
def predict(opts: Values) -> None:
    """Predict every record of a features topic into a prediction-log topic, hot-swapping versions.

    Each output record is the API's prediction-log record (id, x, version,
    prediction, probabilities, classes, ts), keyed by the input's key, so the
    daemon joins it with labels as it joins the API's. Delivery is at least
    once: a poll's predictions are produced and flushed before its positions
    are committed (--exactly-once: in one transaction).
    """
    from learners.choice import parse_options

    if not opts.bootstrap:
        raise ConfigError(
            "no Kafka to read from: pass --bootstrap HOST:PORT (or set STREAMLEARN_KAFKA_BOOTSTRAP)"
        )
    if not opts.topics:
        raise ConfigError("name the features topic: --topic TOPIC")
    if not opts.to:
        raise ConfigError("name the topic the predictions go to: --to TOPIC")
    if opts.to in opts.topics:
        raise ConfigError(f"--to {opts.to!r} is also a --topic: predictions would be predicted again")
    if opts.exactly_once and not opts.group:
        raise ConfigError(
            "--exactly-once commits the offsets in the transaction, to a consumer group: pass --group"
        )
    if opts.registry == "none":
        raise ConfigError("predict needs a registry: pass --registry DIR or redis://HOST:6379/0")
    kafka_options = parse_options(opts.kafka_options, "--kafka-option")
    require_registry_dir(opts.registry)
    require_broker(opts.bootstrap)
    run_prediction(opts, kafka_options)


def run_prediction(opts: Values, kafka_options: dict) -> None:
    from serving.api.hot_swap import HotSwapper, ModelSlot
    from serving.registry.factory import open_registry
    from stream.core.deadletter import CountingSink
    from stream.engine.signals import install_stop_signals
    from stream.sources.deadletter_kafka import open_dead_letter_sink
    from stream.sources.prediction_stream import PositionsFile, PredictionStream, PredictionStreamConfig

    registry = open_registry(opts.registry, namespace=opts.registry_namespace)
    require_registry(registry)
    if registry.current() is None and opts.no_wait:
        raise ConfigError(
            f"no validated version in the registry {opts.registry} yet (--no-wait): "
            "`streamlearn run` publishes one"
        )
    source = _source(opts, kafka_options)
    require_topics(source.config)
    _ensure_output_topic(opts)
    click.echo(f"[streamlearn] predicting {', '.join(opts.topics)} -> {opts.to} ({opts.registry})", err=True)
    slot = ModelSlot()
    swapper = HotSwapper(
        registry,
        slot,
        poll_interval=opts.poll_interval,
        device=opts.device,
        on_swap=lambda m: click.echo(f"[streamlearn] predicting with version {m.version.number}", err=True),
    )
    if swapper.sync_now() is None:
        click.echo(f"[streamlearn] waiting for a validated version in {opts.registry} ...", err=True)
    producer = _producer(opts)
    sink = open_dead_letter_sink(
        opts.dead_letter, opts.bootstrap, opts.checkpoint_dir, opts.kafka.client_options()
    )
    loop = PredictionStream(
        source,
        producer,
        slot,
        PredictionStreamConfig(
            output_topic=opts.to,
            until_idle_s=opts.until_idle,
            max_poll_records=opts.max_poll_records,
            transactional_group=opts.group if opts.exactly_once else None,
        ),
        positions=None if opts.group else PositionsFile(opts.checkpoint_dir, opts.to),
        dead_letters=CountingSink(sink),
        on_progress=None if opts.quiet else _progress_printer(),
    )
    install_stop_signals(loop)
    swapper.start()
    try:
        summary = loop.run()
    finally:
        swapper.stop()
        producer.close(timeout=10)
        loop.dead_letters.close()
        registry.close()
    versions = ", ".join(f"v{v}: {n:,}" for v, n in sorted(summary.by_version.items())) or "none"
    click.echo(
        f"[streamlearn] stopped ({summary.stopped_because}): read {summary.read:,} records, "
        f"predicted {summary.predicted:,} ({versions}), dead letters {sum(summary.dead_letters.values()):,}"
        f"{_reasons(summary.dead_letters)}, {summary.elapsed_seconds:.1f}s",
        err=True,
    )


def _reasons(dead_letters: dict[str, int]) -> str:
    return f" ({', '.join(f'{k}: {n:,}' for k, n in sorted(dead_letters.items()))})" if dead_letters else ""


def _progress_printer():
    """The progress line, its rate over the time since the line before (as ``run``'s)."""
    last = {"at": 0.0, "predicted": 0}

    def line(summary) -> None:
        rate = (summary.predicted - last["predicted"]) / max(summary.elapsed_seconds - last["at"], 1e-9)
        last.update(at=summary.elapsed_seconds, predicted=summary.predicted)
        lag = f"{summary.lag:,}" if summary.lag is not None else "?"
        click.echo(
            f"[streamlearn] predicted {summary.predicted:,} of {summary.read:,} read, {rate:,.0f} rows/s, "
            f"version {summary.version}, lag {lag}, dead-letter {sum(summary.dead_letters.values()):,}",
            err=True,
        )

    return line


def _source(opts: Values, kafka_options: dict):
    from stream.sources.kafka import KafkaSource, KafkaSourceConfig

    kafka = opts.kafka
    return KafkaSource(
        KafkaSourceConfig(
            bootstrap=opts.bootstrap,
            topics=tuple(opts.topics),
            group_id=opts.group,
            auto_offset_reset=opts.start,
            client_id=f"{kafka.client_id}-predict",
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=kafka.heartbeat_interval_ms,
            max_poll_interval_ms=kafka.max_poll_interval_ms,
            extra={**kafka.client_options(), **kafka_options},
        )
    )


def _ensure_output_topic(opts: Values) -> None:
    """Create ``--to`` when missing, with as many partitions as the first features topic."""
    from kafka import KafkaConsumer

    from stream.sources.produce import ensure_topic

    probe = KafkaConsumer(bootstrap_servers=opts.bootstrap, **opts.kafka.client_options())
    try:
        partitions = len(probe.partitions_for_topic(opts.topics[0]) or ()) or 1
    finally:
        probe.close()
    if ensure_topic(opts.bootstrap, opts.to, partitions):
        click.echo(f"[streamlearn] created topic {opts.to} ({partitions} partition(s))", err=True)


def _producer(opts: Values):
    from kafka import KafkaProducer

    settings = dict(
        bootstrap_servers=opts.bootstrap,
        client_id=f"{opts.kafka.client_id}-predict",
        acks="all",
        linger_ms=5,
        **opts.kafka.client_options(),
    )
    if not opts.exactly_once:
        return KafkaProducer(**settings)
    # One transactional id per group (and output topic): a restarted process fences its predecessor.
    producer = KafkaProducer(
        **settings, enable_idempotence=True, transactional_id=f"streamlearn-predict-{opts.group}-{opts.to}"
    )
    producer.init_transactions()
    return producer
