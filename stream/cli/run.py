"""``streamlearn run``: learn from Kafka topics (or files) forever, checkpointing exactly once."""

from __future__ import annotations

import gc

import click

from learners.choice import parse_options
from stream.cli.errors import (
    check_label_column,
    label_column_option,
    require_broker,
    user_errors,
    why_nothing_learned,
)
from stream.cli.options import drift_options, learner_options, open_gate, registry_options
from stream.core.errors import ConfigError
from stream.reconcile.options import retrain_options


@click.command()
@click.option("--bootstrap", default=None, help="Kafka bootstrap servers [env STREAMLEARN_KAFKA_BOOTSTRAP].")
@click.option("--topic", "topics", multiple=True, help="Topic to learn from (repeatable).")
@click.option(
    "--partition",
    "partitions",
    multiple=True,
    help="Explicit TOPIC:N partition instead of group subscription (repeatable).",
)
@click.option("--group", default=None, help="Consumer group (offsets committed there for lag monitoring).")
@click.option(
    "--file",
    "files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Learn from JSONL/CSV files instead of Kafka (repeatable).",
)
@label_column_option
@click.option(
    "--window",
    default="count:1000",
    show_default=True,
    help="count:N | processing:5s | event:10s[,lateness=2s,idle=5s]",
)
@click.option("--checkpoint-dir", default=None, help="Checkpoint directory [env STREAMLEARN_CHECKPOINT_DIR].")
@click.option("--checkpoint-every-batches", type=int, default=None)
@click.option("--checkpoint-every-seconds", type=float, default=None)
@click.option(
    "--on-unreadable-checkpoint",
    type=click.Choice(["refuse", "fresh"]),
    default="refuse",
    show_default=True,
    help="When checkpoints exist but none can be read: refuse to start, or set them aside "
    "(*.unreadable) and learn from scratch.",
)
@click.option(
    "--dead-letter",
    default=None,
    help="kafka (<topic>.dlq) | file:PATH | none  [default: kafka, or file for --file]",
)
@click.option(
    "--late-policy", type=click.Choice(["dead_letter", "drop"]), default="dead_letter", show_default=True
)
@click.option(
    "--dedup-window",
    type=click.IntRange(min=0),
    default=1_000_000,
    show_default=True,
    help="Remember this many recent event ids; a record repeating one is never learned twice (0: off).",
)
@click.option(
    "--duplicates",
    "duplicate_policy",
    type=click.Choice(["dead_letter", "drop"]),
    default="dead_letter",
    show_default=True,
    help="What happens to a record whose id was taken in recently.",
)
@click.option(
    "--until-idle",
    type=float,
    default=None,
    help="Exit once no record arrived for SECONDS and the lag is known to be 0 (an outage is not idle).",
)
@click.option("--max-events", type=int, default=None, help="Exit after learning this many events.")
@click.option(
    "--backend", type=click.Choice(["kafka-python", "confluent"]), default="kafka-python", show_default=True
)
@click.option(
    "--kafka-option",
    "kafka_options",
    multiple=True,
    help="Extra client option KEY=VALUE (JSON value: 10, true; else a string).",
)
@click.option("--max-poll-records", type=int, default=5000, show_default=True)
@click.option("--ledger/--no-ledger", default=False, help="Record learned event ids (exactly-once audit).")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Prometheus /metrics on this port (host: STREAMLEARN_METRICS_HOST, default 127.0.0.1).",
)
@click.option("--quiet", is_flag=True, help="No progress lines.")
@learner_options
@registry_options
@drift_options
@retrain_options
@user_errors
def run(
    bootstrap,
    topics,
    partitions,
    group,
    files,
    label_column,
    window,
    checkpoint_dir,
    checkpoint_every_batches,
    checkpoint_every_seconds,
    on_unreadable_checkpoint,
    dead_letter,
    late_policy,
    dedup_window,
    duplicate_policy,
    until_idle,
    max_events,
    backend,
    kafka_options,
    max_poll_records,
    ledger,
    metrics_port,
    quiet,
    learner,
    registry,
    registry_namespace,
    publish_every_batches,
    publish_every_seconds,
    validation_tolerance,
    holdout_min_events,
    drift,
    retrain,
):
    """Learn from Kafka topics (or files) forever, checkpointing exactly-once."""
    from stream.core.settings import CheckpointSettings, KafkaSettings
    from stream.engine.metrics_endpoint import progress_reporter

    kafka = KafkaSettings()
    ckpt = CheckpointSettings()
    bootstrap = bootstrap or kafka.bootstrap
    if not files and not bootstrap:
        raise ConfigError(
            "no Kafka to read from: pass --bootstrap HOST:PORT (or set STREAMLEARN_KAFKA_BOOTSTRAP), "
            "use --file for local data, or try `streamlearn demo` for an embedded broker"
        )
    from stream.sources.base import parse_partitions
    from stream.window.spec import parse_window

    # Configuration first: a typo is reported as such, before anything is opened or reached.
    parse_window(window)
    parse_partitions(partitions)
    check_label_column(label_column, files)
    gate = open_gate(
        registry,
        registry_namespace,
        publish_every_batches,
        publish_every_seconds,
        validation_tolerance,
        holdout_min_events,
    )
    checkpoint_dir = checkpoint_dir or ckpt.dir
    kafka_extra = {**kafka.client_options(), **parse_options(kafka_options, "--kafka-option")}
    reconciler = retrain.build(
        bootstrap=None if files else bootstrap,
        topics=topics,
        learner=learner,
        gate=gate,
        kafka_extra=parse_options(kafka_options, "--kafka-option"),
        checkpoint_dir=checkpoint_dir,
    )
    learner_factory, policy = learner.factory(), drift.build(task=learner.task)
    if not files:
        require_broker(bootstrap)  # in seconds, where each Kafka client would wait out its own timeout
    summary = run_engine(
        bootstrap=None if files else bootstrap,
        topics=topics,
        partitions=partitions,
        group=group,
        files=files,
        label_column=label_column,
        window=window,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every_batches=checkpoint_every_batches or ckpt.every_batches,
        checkpoint_every_seconds=checkpoint_every_seconds or ckpt.every_seconds,
        keep=ckpt.keep,
        on_unreadable_checkpoint=on_unreadable_checkpoint,
        dead_letter=dead_letter or ("file:" if files else "kafka"),
        late_policy=late_policy,
        dedup_window=dedup_window,
        duplicate_policy=duplicate_policy,
        until_idle=until_idle,
        max_events=max_events,
        backend=backend,
        kafka_extra=kafka_extra,
        kafka_settings=kafka,
        max_poll_records=max_poll_records,
        ledger=ledger,
        quiet=quiet,
        on_progress=progress_reporter(quiet, metrics_port),
        learner_factory=learner_factory,
        task=learner.task,
        n_classes=learner.n_classes,
        n_features=learner.n_features,
        gate=gate,
        policy=policy,
        reconciler=reconciler,
    )
    print_summary(summary, gate, reconciler, label_column=label_column if files else None)


def run_engine(
    *,
    bootstrap,
    topics,
    partitions,
    group,
    files,
    window,
    checkpoint_dir,
    checkpoint_every_batches,
    checkpoint_every_seconds,
    keep,
    dead_letter,
    late_policy,
    until_idle,
    max_events,
    backend,
    kafka_extra,
    kafka_settings,
    max_poll_records,
    ledger,
    quiet,
    learner_factory,
    task,
    n_classes,
    n_features,
    install_signals=True,
    gate=None,
    policy=None,
    reconciler=None,
    on_progress=None,
    engine_hook=None,
    on_unreadable_checkpoint="refuse",
    dedup_window=1_000_000,
    duplicate_policy="dead_letter",
    label_column="y",
):
    """Wire source, codec, window, learner, checkpoint store, gate and drift policy together and run the engine.

    ``engine_hook(engine)`` is called before the run (the demo keeps a handle to stop it).
    ``on_unreadable_checkpoint`` is the store's ``on_unreadable`` policy; ``label_column``
    names the label of ``files``.
    """
    from stream.codec.json_codec import CodecConfig, JsonCodec
    from stream.engine.checkpoint import CheckpointStore
    from stream.engine.loop import Engine, EngineConfig, install_stop_signals
    from stream.engine.progress import ProgressPrinter
    from stream.engine.stages import connect_drift_policy
    from stream.sources.base import parse_partitions
    from stream.sources.deadletter_kafka import open_dead_letter_sink
    from stream.sources.kafka import KafkaSourceConfig
    from stream.window.spec import parse_window

    window_config = parse_window(window)
    codec = JsonCodec(
        CodecConfig(task=task, n_classes=n_classes, n_features=n_features, y_field=label_column)
    )
    if files:
        from stream.sources.files import FileSource

        source = FileSource(list(files), label_column=label_column)
    else:
        source_config = KafkaSourceConfig(
            bootstrap=bootstrap,
            topics=tuple(topics),
            group_id=group,
            partitions=tuple(parse_partitions(partitions)),
            client_id=kafka_settings.client_id,
            session_timeout_ms=kafka_settings.session_timeout_ms,
            heartbeat_interval_ms=kafka_settings.heartbeat_interval_ms,
            max_poll_interval_ms=kafka_settings.max_poll_interval_ms,
            extra=kafka_extra,
        )
        if backend == "confluent":
            from stream.sources.confluent import ConfluentKafkaSource

            source = ConfluentKafkaSource(source_config)
        else:
            from stream.sources.kafka import KafkaSource

            source = KafkaSource(source_config)
    store = CheckpointStore(checkpoint_dir, keep=keep, on_unreadable=on_unreadable_checkpoint)
    # Locked before anything else touches the directory (the dead-letter spool
    # lives there too); the engine holds the lock from here until it closes.
    store.lock()
    connect_drift_policy(policy, gate, reconciler)
    try:
        engine = Engine(
            source=source,
            codec=codec,
            window=window_config,
            learner_builder=learner_factory,
            store=store,
            dead_letters=open_dead_letter_sink(
                dead_letter, bootstrap, checkpoint_dir, kafka_settings.client_options()
            ),
            config=EngineConfig(
                checkpoint_every_batches=checkpoint_every_batches,
                checkpoint_every_seconds=checkpoint_every_seconds,
                until_idle_seconds=until_idle,
                max_events=max_events,
                late_policy=late_policy,
                ledger=ledger,
                max_poll_records=max_poll_records,
                dedup_window=dedup_window,
                duplicate_policy=duplicate_policy,
            ),
            on_progress=on_progress if on_progress is not None else (None if quiet else ProgressPrinter()),
            gate=gate,
            policy=policy,
            reconciler=reconciler,
        )
    except BaseException:
        store.unlock()
        raise
    if engine_hook is not None:
        engine_hook(engine)
    if install_signals:
        install_stop_signals(engine)
    # torch leaves ~1M long-lived objects behind at import; without freezing
    # them every full collection walks them all (measured: -40% throughput).
    gc.collect()
    gc.freeze()
    return engine.run()


def print_summary(summary, gate=None, reconciler=None, label_column=None) -> None:
    """The end-of-run lines; ``label_column`` (file input) names the label when nothing was learned."""
    acc = f"{summary.accuracy:.3f}" if summary.accuracy is not None else "n/a"
    click.echo(
        f"[streamlearn] stopped ({summary.stopped_because}): learned {summary.events_learned:,} events in "
        f"{summary.batches_learned:,} batches, prequential accuracy {acc}, "
        f"dead letters {sum(summary.dead_letters.values()):,}, late {summary.late:,}, "
        f"duplicate ids {summary.duplicates:,}, {summary.elapsed_seconds:.1f}s",
        err=True,
    )
    if summary.events_learned == 0 and (why := why_nothing_learned(summary.dead_letters, label_column)):
        click.echo(f"[streamlearn] {why}", err=True)
    status = summary.dead_letter_status
    if status is not None and not status.healthy:
        click.echo(f"[streamlearn] WARNING {status.describe()}: a restart sends them first", err=True)
    if summary.outage is not None:
        click.echo(f"[streamlearn] {summary.outage.describe()}", err=True)
    if gate is not None:
        c = gate.counts
        click.echo(
            f"[streamlearn] model versions: {c['published']} published, {c['validated']} validated, "
            f"{c['rejected']} rejected, {c['failed']} failed to publish ({gate.registry!r})",
            err=True,
        )
    if summary.drift is not None:
        d = summary.drift
        click.echo(
            f"[streamlearn] drift: {d['alarms']} alarm(s) -> {d['rollback']} rollback(s), {d['adapt']} "
            f"adaptation(s), {d['drift_dismissed']} dismissed; {d['retrain_request']} retrain request(s) "
            f"(details: GET /events)",
            err=True,
        )
    if reconciler is not None:
        c = reconciler.counts
        click.echo(
            f"[streamlearn] full retrains: {c['launched']} launched, {c['adopted']} adopted, {c['rejected']} "
            f"rejected, {c['failed']} failed (details: GET /events?kind=retrain_...)",
            err=True,
        )
