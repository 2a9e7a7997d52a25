"""The ``streamlearn`` command line: run, serve, inspect, produce, demo, broker.

Every user-facing failure (unreachable broker, missing topic, bad config)
prints one line ``streamlearn: error: ...`` and exits with code 2; tracebacks
are for bugs only (set ``STREAMLEARN_DEBUG=1`` to see them for errors too).
How, and the checks that run before a command starts: :mod:`stream.cli_errors`.
"""

from __future__ import annotations

import functools
import gc
import logging
import sys
import time
from typing import Callable

import click

from stream.cli_errors import (
    OneLineGroup,
    check_label_column,
    label_column_option,
    require_broker,
    require_free_port,
    require_registry,
    user_errors,
    why_nothing_learned,
)
from stream.errors import ConfigError
from stream.learner_choice import LearnerChoice, parse_options
from stream.reconcile_options import retrain_options


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


# --------------------------------------------------------------------- run
_LEARNER_FIELDS = (
    "model",
    "model_options",
    "optimizer",
    "lr",
    "steps_per_batch",
    "minibatch_size",
    "task",
    "n_classes",
    "n_features",
    "device",
    "seed",
    "torch_threads",
    "ewc_strength",
    "ewc_decay",
    "ewc_every",
    "replay",
    "replay_capacity",
    "replay_mix",
    "avalanche",
    "avalanche_options",
    "avalanche_plugins",
)


def learner_options(fn: Callable) -> Callable:
    """Options that choose and configure the learner (shared by run and demo).

    The command receives them as one ``learner`` argument, a validated
    :class:`~stream.learner_choice.LearnerChoice`.
    """

    @functools.wraps(fn)
    def with_choice(*args, **kwargs):
        return fn(*args, learner=LearnerChoice(**{k: kwargs.pop(k) for k in _LEARNER_FIELDS}), **kwargs)

    decorators = [
        click.option(
            "--model",
            default="logistic",
            show_default=True,
            help="logistic | mlp | resmlp, or any river estimator by name, e.g. "
            "river.tree.HoeffdingAdaptiveTreeClassifier",
        ),
        click.option(
            "--model-option",
            "model_options",
            multiple=True,
            help="Model keyword KEY=VALUE (JSON value), e.g. hidden=[128,64], standardize=false, "
            "or a river estimator's parameter.",
        ),
        click.option("--optimizer", default="adam", show_default=True, help="adam | adamw | sgd"),
        click.option("--lr", type=float, default=0.05, show_default=True, help="Learning rate."),
        click.option(
            "--steps-per-batch",
            type=int,
            default=1,
            show_default=True,
            help="Passes over each micro-batch (Avalanche: train epochs).",
        ),
        click.option(
            "--minibatch-size",
            type=int,
            default=None,
            help="Split each micro-batch into shuffled chunks of N rows, one step each (more updates "
            "per event: better accuracy, lower throughput). Default: one step per micro-batch.",
        ),
        click.option(
            "--task",
            type=click.Choice(["classification", "regression"]),
            default="classification",
            show_default=True,
        ),
        click.option(
            "--classes",
            "n_classes",
            type=int,
            default=2,
            show_default=True,
            help="Number of classes (labels are 0..N-1).",
        ),
        click.option(
            "--n-features",
            type=int,
            default=None,
            help="Feature dimension; default: locked by the first valid record.",
        ),
        click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N"),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option(
            "--torch-threads",
            type=int,
            default=1,
            show_default=True,
            envvar="STREAMLEARN_TORCH_THREADS",
            help="CPU threads for torch ops. 1 suits small models: the Kafka client and decoding "
            "need the other cores, and oversubscribed torch threads stall.",
        ),
        click.option(
            "--ewc-strength",
            type=float,
            default=0.0,
            show_default=True,
            help="Online EWC penalty strength (0: off). Holds parameters that mattered for past data.",
        ),
        click.option(
            "--ewc-decay",
            type=float,
            default=0.9,
            show_default=True,
            help="Weight of the old Fisher information at each consolidation.",
        ),
        click.option(
            "--ewc-every",
            type=int,
            default=50,
            show_default=True,
            help="Consolidate every N batches (also at each validated version).",
        ),
        click.option(
            "--replay",
            type=click.Choice(["none", "reservoir", "balanced"]),
            default="none",
            show_default=True,
            help="Rehearsal buffer mixed into every update.",
        ),
        click.option(
            "--replay-capacity", type=int, default=2000, show_default=True, help="Buffer size in events."
        ),
        click.option(
            "--replay-mix",
            type=float,
            default=1.0,
            show_default=True,
            help="Replayed events per new event in each update.",
        ),
        click.option(
            "--avalanche",
            default=None,
            metavar="STRATEGY",
            help="Train --model with an Avalanche strategy instead (Naive, EWC, Replay, LwF, "
            "SynapticIntelligence, GEM, AGEM, ...); needs streamlearn[avalanche].",
        ),
        click.option(
            "--avalanche-option",
            "avalanche_options",
            multiple=True,
            help="Strategy keyword KEY=VALUE (JSON value), e.g. ewc_lambda=10 or mem_size=2000.",
        ),
        click.option(
            "--avalanche-plugin",
            "avalanche_plugins",
            multiple=True,
            help='An extra Avalanche plugin, NAME or NAME:{json kwargs}, e.g. LwFPlugin:{"alpha":0.5}.',
        ),
    ]
    fn_with_options = user_errors(with_choice)  # a bad choice is a one-line error too
    for deco in reversed(decorators):
        fn_with_options = deco(fn_with_options)
    return fn_with_options


def registry_options(fn: Callable) -> Callable:
    """Options that choose the model registry and the validation gate (shared by run and demo)."""
    decorators = [
        click.option(
            "--registry",
            default=None,
            help="Where versions are published: a directory, redis://HOST:6379/0 (rediss:// for TLS, "
            "password in the URL), or 'none' [env STREAMLEARN_REGISTRY_URL; default "
            ".streamlearn/registry].",
        ),
        click.option(
            "--registry-namespace",
            default=None,
            help="Redis key prefix [env STREAMLEARN_REGISTRY_NAMESPACE].",
        ),
        click.option(
            "--publish-every-batches",
            type=int,
            default=20,
            show_default=True,
            help="Publish a candidate version every N micro-batches ...",
        ),
        click.option(
            "--publish-every-seconds",
            type=float,
            default=2.0,
            show_default=True,
            help="... or every T seconds, whichever comes first.",
        ),
        click.option(
            "--validation-tolerance",
            type=float,
            default=0.01,
            show_default=True,
            help="A candidate is validated if its holdout metric is no worse than the validated "
            "version's by more than this (accuracy points, or RMSE).",
        ),
        click.option(
            "--holdout-min-events",
            type=int,
            default=100,
            show_default=True,
            help="Smallest newest-batch accepted as holdout evidence.",
        ),
    ]
    for deco in reversed(decorators):
        fn = deco(fn)
    return fn


def drift_options(fn: Callable) -> Callable:
    """Options of drift detection and the drift policy (shared by run and demo); one ``drift`` argument."""

    @functools.wraps(fn)
    def with_choice(*args, **kwargs):
        from drift.choice import DriftChoice

        choice = DriftChoice(
            detectors=tuple(kwargs.pop("drift_detectors")) or ("adwin",),
            feature_method=kwargs.pop("feature_drift"),
            feature_window=kwargs.pop("feature_drift_window"),
            options=tuple(kwargs.pop("drift_options")),
        )
        return fn(*args, drift=choice, **kwargs)

    decorators = [
        click.option(
            "--drift-detector",
            "drift_detectors",
            multiple=True,
            metavar="NAME",
            help="Error-stream drift detector: adwin (default), page_hinkley, ddm, eddm, kswin; repeatable; "
            "'none' turns drift handling off.",
        ),
        click.option(
            "--feature-drift",
            type=click.Choice(["none", "ks", "psi"]),
            default="none",
            show_default=True,
            help="Also watch each input feature against a reference window (KS tests with FDR control, "
            "or PSI).",
        ),
        click.option(
            "--feature-drift-window",
            type=int,
            default=1000,
            show_default=True,
            help="Events in the feature reference and recent windows.",
        ),
        click.option(
            "--drift-option",
            "drift_options",
            multiple=True,
            metavar="KEY=VALUE",
            help="Drift policy setting, e.g. warmup_batches=20, evidence_batches=3, rollback_margin=0.05, "
            "cooldown_batches=10, ewc_factor=0.1, replay_refresh=0.5 (see docs/drift.md).",
        ),
    ]
    fn_with_options = user_errors(with_choice)
    for deco in reversed(decorators):
        fn_with_options = deco(fn_with_options)
    return fn_with_options


def open_gate(registry, namespace, every_batches, every_seconds, tolerance, holdout_min_events):
    """The validation gate over the chosen registry, or None for ``--registry none``."""
    from serving.registry import open_registry
    from serving.settings import RegistrySettings
    from stream.validation import GateConfig, ValidationGate

    settings = RegistrySettings()
    target = registry or settings.url
    if target == "none":
        return None
    reg = open_registry(target, namespace=namespace or settings.namespace, keep_states=settings.keep_states)
    require_registry(reg)
    return ValidationGate(
        reg,
        GateConfig(
            every_batches=every_batches,
            every_seconds=every_seconds,
            tolerance=tolerance,
            holdout_min_events=holdout_min_events,
        ),
    )


@main.command()
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
    from stream.daemon_metrics import progress_reporter
    from stream.settings import CheckpointSettings, KafkaSettings

    kafka = KafkaSettings()
    ckpt = CheckpointSettings()
    bootstrap = bootstrap or kafka.bootstrap
    if not files and not bootstrap:
        raise ConfigError(
            "no Kafka to read from: pass --bootstrap HOST:PORT (or set STREAMLEARN_KAFKA_BOOTSTRAP), "
            "use --file for local data, or try `streamlearn demo` for an embedded broker"
        )
    from stream.source import parse_partitions
    from stream.window import parse_window

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
    _print_summary(summary, gate, reconciler, label_column=label_column if files else None)


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
    from stream.checkpoint import CheckpointStore
    from stream.codec import CodecConfig, JsonCodec
    from stream.daemon import Engine, EngineConfig, install_stop_signals
    from stream.deadletter_kafka import open_dead_letter_sink
    from stream.progress import ProgressPrinter
    from stream.source import KafkaSourceConfig, parse_partitions
    from stream.window import parse_window

    window_config = parse_window(window)
    codec = JsonCodec(
        CodecConfig(task=task, n_classes=n_classes, n_features=n_features, y_field=label_column)
    )
    if files:
        from stream.file_source import FileSource

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
            from stream.confluent_source import ConfluentKafkaSource

            source = ConfluentKafkaSource(source_config)
        else:
            from stream.source import KafkaSource

            source = KafkaSource(source_config)
    store = CheckpointStore(checkpoint_dir, keep=keep, on_unreadable=on_unreadable_checkpoint)
    # Locked before anything else touches the directory (the dead-letter spool
    # lives there too); the engine holds the lock from here until it closes.
    store.lock()
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


def _print_summary(summary, gate=None, reconciler=None, label_column=None) -> None:
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


# ----------------------------------------------------------------- produce
@main.command()
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
    from stream.produce import produce as produce_stream
    from stream.settings import KafkaSettings

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
    from stream.replay_range import parse_bound

    bound = parse_bound(spec)
    if bound.kind != "time":
        raise ConfigError(
            f"--start-time {spec!r} is not a time: use ISO-8601, @EPOCH_MS or a relative time like -2h"
        )
    return bound.ts_ms


def _parse_poison(spec: str | None) -> tuple[str, int, int] | None:
    if spec is None:
        return None
    from stream.produce import POISONS

    kind, _, rest = spec.partition(":")
    start, _, count = rest.partition(":")
    if kind not in POISONS or not start.isdigit() or not count.isdigit():
        raise ConfigError(
            f"--poison {spec!r}: use KIND:START:COUNT with KIND one of {', '.join(POISONS)}, "
            "e.g. label_flip:20000:1000"
        )
    return kind, int(start), int(count)


# ------------------------------------------------------------------ broker
@main.command()
@click.option("--port", type=int, default=9092, show_default=True)
@user_errors
def broker(port):
    """Run the embedded in-memory Kafka-protocol broker (tansu) on 127.0.0.1 until Ctrl-C or SIGTERM."""
    import signal

    from stream.embedded import EmbeddedBroker

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


# -------------------------------------------------------------------- demo
@main.command()
@click.option("--bootstrap", default=None, help="Use this Kafka instead of starting the embedded broker.")
@click.option(
    "--events",
    "n_events",
    type=int,
    default=400_000,
    show_default=True,
    help="Stream length; the default takes about a minute on a 2-core machine.",
)
@click.option(
    "--generator",
    type=click.Choice(["agrawal", "sea", "hyperplane", "rbf"]),
    default="hyperplane",
    show_default=True,
)
@click.option("--topic", default="streamlearn-demo", show_default=True)
@click.option("--window", default="count:100", show_default=True)
@click.option(
    "--workdir",
    default=".streamlearn",
    show_default=True,
    help="Where the registry, checkpoints and logs go (one demo-<id>/ folder per run).",
)
@click.option(
    "--api-port",
    type=int,
    default=8000,
    show_default=True,
    help="Port of the prediction API on 127.0.0.1 (a free one is used if it is taken).",
)
@click.option("--keep-serving", is_flag=True, help="Keep the API up after the stream ends, until Ctrl-C.")
@learner_options
@registry_options
@drift_options
@user_errors
def demo(
    bootstrap,
    n_events,
    generator,
    topic,
    window,
    workdir,
    api_port,
    keep_serving,
    learner,
    registry,
    registry_namespace,
    publish_every_batches,
    publish_every_seconds,
    validation_tolerance,
    holdout_min_events,
    drift,
):
    """The embedded default: broker + drifting stream + daemon + registry + API, end to end."""
    from stream.demo import DemoConfig, run_demo

    run_demo(
        DemoConfig(
            bootstrap=bootstrap,
            n_events=n_events,
            generator=generator,
            topic=topic,
            window=window,
            workdir=workdir,
            api_port=api_port,
            keep_serving=keep_serving,
            registry=registry,
            registry_namespace=registry_namespace,
            seed=learner.seed,
            gate_args=(
                publish_every_batches,
                publish_every_seconds,
                validation_tolerance,
                holdout_min_events,
            ),
            learner_factory=learner.factory(),
            task=learner.task,
            n_classes=learner.n_classes,
            n_features=learner.n_features,
            drift=drift,
        )
    )


# The inspect, replay, retrain and serve commands live in their own modules; importing them registers them on `main`.
from stream import cli_inspect as _cli_inspect  # noqa: E402,F401
from stream import cli_replay as _cli_replay  # noqa: E402,F401
from stream import cli_retrain as _cli_retrain  # noqa: E402,F401
from stream import cli_serve as _cli_serve  # noqa: E402,F401

if __name__ == "__main__":
    # `python -m stream.cli`: the commands registered from other modules are on
    # the importable stream.cli.main, not on this __main__ copy.
    from stream.cli import main as registered_main

    registered_main()
