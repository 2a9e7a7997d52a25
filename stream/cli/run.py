"""``streamlearn run``: learn from Kafka topics (or files) forever, checkpointing exactly once."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

import click

from stream.cli.errors import EXIT_UNTRUSTED_RESULT, fail, require_broker, why_nothing_learned
from stream.cli.members import MEMBER_OPTIONS, run_members
from stream.cli.options import (
    BOOTSTRAP,
    CHECKPOINTS,
    DRIFT,
    FILES,
    INTAKE,
    KAFKA_OPTIONS,
    KAFKA_SETTINGS,
    LABEL_COLUMN,
    LEARNER,
    MAX_DEAD_LETTER_RATE,
    MAX_POLL_RECORDS,
    PARTITIONS,
    QUIET,
    REGISTRY_AND_GATE,
    RETRAIN,
    TOPICS,
    WINDOW,
    drift_from,
    gate_from,
    learner_from,
    open_gate,
    reconcile_from,
    registry_from,
    source_from,
)
from stream.cli.record_options import RECORD_FORMAT, SCHEMA, schema_from, value_format_from
from stream.cli.table import Option, Values, with_options
from stream.core.errors import BrokerUnavailableError, ConfigError, StreamlearnError

if TYPE_CHECKING:
    from stream.engine.spec import EngineSpec

#: ``streamlearn run``'s options, in ``--help`` order.
RUN_OPTIONS = (
    BOOTSTRAP,
    TOPICS,
    PARTITIONS,
    Option("--group", "group", help="Consumer group (offsets committed there for lag monitoring)."),
    FILES,
    LABEL_COLUMN,
    SCHEMA,
    *RECORD_FORMAT,
    WINDOW,
    *CHECKPOINTS,
    Option(
        "--dead-letter",
        "dead_letter",
        help="kafka (<topic>.dlq) | file:PATH | none  [default: kafka, or file for --file]",
    ),
    Option(
        "--late-policy",
        "late_policy",
        type=click.Choice(["dead_letter", "drop"]),
        default="dead_letter",
        show_default=True,
    ),
    Option(
        "--dedup-window",
        "dedup_window",
        type=click.IntRange(min=0),
        default=1_000_000,
        show_default=True,
        help="Remember this many recent event ids; a record repeating one is never learned twice (0: off).",
    ),
    Option(
        "--duplicates",
        "duplicate_policy",
        type=click.Choice(["dead_letter", "drop"]),
        default="dead_letter",
        show_default=True,
        help="What happens to a record whose id was taken in recently.",
    ),
    MAX_DEAD_LETTER_RATE,
    Option(
        "--labels-topic",
        "labels_topic",
        help="Learn from delayed labels: join this topic's {id, y} records by id with the --topic records "
        "(prediction logs or {id, x}); see docs/feedback.md.",
    ),
    Option(
        "--join-ttl",
        "join_ttl",
        default="1h",
        show_default=True,
        help="How far apart (record time) a prediction and its label may be; later, both are dead-lettered.",
    ),
    Option(
        "--join-max-pending",
        "join_max_pending",
        type=click.IntRange(min=1),
        default=1_000_000,
        show_default=True,
        help="Most predictions and labels waiting for their other half; beyond it the oldest is dead-lettered.",
    ),
    Option(
        "--until-idle",
        "until_idle",
        type=float,
        help="Exit once no record arrived for SECONDS and the lag is known to be 0 (an outage is not idle).",
    ),
    Option("--max-events", "max_events", type=int, help="Exit after learning this many events."),
    Option(
        "--backend",
        "backend",
        type=click.Choice(["kafka-python", "confluent"]),
        default="kafka-python",
        show_default=True,
    ),
    KAFKA_OPTIONS,
    *INTAKE,
    MAX_POLL_RECORDS,
    Option(
        "--ledger/--no-ledger", "ledger", default=False, help="Record learned event ids (exactly-once audit)."
    ),
    Option(
        "--metrics-port",
        "metrics_port",
        type=click.IntRange(1, 65535),
        help="Serve Prometheus /metrics on this port (host: STREAMLEARN_METRICS_HOST, default 127.0.0.1).",
    ),
    QUIET,
    *LEARNER,
    *REGISTRY_AND_GATE,
    *DRIFT,
    *RETRAIN,
    *MEMBER_OPTIONS,
    KAFKA_SETTINGS,
)


@click.command()
@with_options(RUN_OPTIONS)
def run(opts: Values) -> None:
    """Learn from Kafka topics (or files) forever, checkpointing exactly-once."""
    from stream.engine.builder import EngineExtras, build_engine
    from stream.engine.metrics_endpoint import progress_reporter
    from stream.reconcile.options import build_reconciler

    # Configuration first: a typo is reported as such, before anything is opened or reached.
    learner, drift, retrain = learner_from(opts), drift_from(opts), reconcile_from(opts)
    if not opts.files and not opts.bootstrap:
        raise ConfigError(
            "no Kafka to read from: pass --bootstrap HOST:PORT (or set STREAMLEARN_KAFKA_BOOTSTRAP), "
            "use --file for local data, or try `streamlearn demo` for an embedded broker"
        )
    spec = run_spec(opts, learner=learner, drift=drift)
    if opts.members is not None:
        _run_members(opts, spec, retrain)
        return
    gate = open_gate(spec)
    reconciler = build_reconciler(retrain, spec, gate)
    if not opts.files:
        require_broker(opts.bootstrap)  # in seconds, where each Kafka client would wait out its own timeout
    extras = EngineExtras(on_progress=progress_reporter(opts.quiet, opts.metrics_port), quiet=opts.quiet)
    engine = build_engine(spec, gate=gate, reconciler=reconciler, extras=extras)
    summary = run_engine(engine)
    print_summary(summary, gate, reconciler, label_column=opts.label_column if opts.files else None)
    if engine.feedback is not None:
        print_join(engine.feedback.join.report())
    _fail_bounded(opts, summary)


def _run_members(opts: Values, spec, retrain) -> None:
    """``--members``: launch them, or -- as one of them -- run; rank 0 sums the run up for all.

    A member's mistake that no restart mends, and a bounded run's failed
    verdict, are noted for the launcher (:func:`~stream.members.launch.note_fatal`)
    rather than exited with: torchrun restarts members that exit non-zero.
    """
    from stream.members.engine import MembersLostError
    from stream.members.launch import note_fatal

    try:
        engine = run_members(opts, spec, retrain=retrain)
        if engine is None:
            return  # the launcher: the members are done
        try:
            summary = run_engine(engine)
        finally:
            engine.dist.close()
    except (MembersLostError, BrokerUnavailableError):
        raise  # a restart may mend these: torchrun's to retry
    except StreamlearnError as exc:
        note_fatal(spec.checkpoints.dir, str(exc))
        raise
    if engine.dist.rank == 0:
        print_summary(summary, engine.gate)
        verdict = bounded_verdict(opts, summary)
        if verdict is not None:
            note_fatal(spec.checkpoints.dir, verdict, EXIT_UNTRUSTED_RESULT)


def _fail_bounded(opts: Values, summary) -> None:
    verdict = bounded_verdict(opts, summary)
    if verdict is not None:
        fail(verdict, EXIT_UNTRUSTED_RESULT)


def bounded_verdict(opts: Values, summary) -> str | None:
    """Why a bounded run failed (its dead-letter rate ended above the threshold); ``None``: it did not.

    A bounded run is a job whose numbers someone will read: it fails. The daemon was warned
    when the rate passed, and keeps (and ends) its usual way: a bad producer must not kill it.
    """
    if opts.until_idle is None and opts.max_events is None and not opts.files:
        return None
    return dead_letter_verdict(summary)


def run_spec(opts: Values, *, learner, drift) -> EngineSpec:
    """The engine ``streamlearn run`` builds from its resolved options."""
    from stream.engine.config import EngineConfig
    from stream.engine.spec import CheckpointSpec, EngineSpec, IntakeSpec

    return EngineSpec(
        source=source_from(opts),
        window=opts.window,
        learner=learner,
        schema=schema_from(opts),
        value_format=value_format_from(opts),
        checkpoints=CheckpointSpec(
            dir=opts.checkpoint_dir, keep=opts.checkpoint_keep, on_unreadable=opts.on_unreadable_checkpoint
        ),
        dead_letter=opts.dead_letter or ("file:" if opts.files else "kafka"),
        loop=EngineConfig(
            checkpoint_every_batches=opts.checkpoint_every_batches,
            checkpoint_every_seconds=opts.checkpoint_every_seconds,
            until_idle_seconds=opts.until_idle,
            max_events=opts.max_events,
            late_policy=opts.late_policy,
            ledger=opts.ledger,
            max_poll_records=opts.max_poll_records,
            dedup_window=opts.dedup_window,
            duplicate_policy=opts.duplicate_policy,
            max_dead_letter_rate=opts.max_dead_letter_rate,
        ),
        gate=gate_from(opts),
        registry=registry_from(opts),
        drift=drift,
        intake=IntakeSpec(mode=opts.intake, prefetch=opts.intake_prefetch),
        join=join_from(opts),
    )


def join_from(opts: Values):
    """The join of delayed labels ``--labels-topic`` asks for (``None`` without one)."""
    if not opts.labels_topic:
        return None
    from stream.engine.join import JoinConfig, parse_ttl

    return JoinConfig(
        labels_topic=opts.labels_topic, ttl_ms=parse_ttl(opts.join_ttl), max_pending=opts.join_max_pending
    )


def print_join(report: dict) -> None:
    """The end-of-run line of a join of delayed labels."""
    click.echo(
        f"[streamlearn] labels joined {report['joined']:,}; waiting: {report['pending_features']:,} predictions, "
        f"{report['pending_labels']:,} labels ({report['pending_bytes']:,} bytes); expired "
        f"{report['expired_features'] + report['expired_labels']:,}, evicted {report['evicted']:,}, "
        f"repeated labels ignored {report['repeated_labels']:,}",
        err=True,
    )


def run_engine(engine, *, install_signals: bool = True):
    """Run a built engine to its end, stopping cleanly on SIGTERM/SIGINT; its :class:`~stream.engine.config.RunSummary`."""
    from stream.engine.signals import install_stop_signals

    if install_signals:
        install_stop_signals(engine)
    # torch leaves ~1M long-lived objects behind at import; without freezing
    # them every full collection walks them all (measured: -40% throughput).
    gc.collect()
    gc.freeze()
    return engine.run()


def fail_on_dead_letters(summary) -> None:
    """Exit 1 (:data:`~stream.cli.errors.EXIT_UNTRUSTED_RESULT`) when the run's dead-letter rate ended above its threshold."""
    verdict = dead_letter_verdict(summary)
    if verdict is not None:
        fail(verdict, EXIT_UNTRUSTED_RESULT)


def dead_letter_verdict(summary) -> str | None:
    """The line saying the run's dead-letter rate ended above its threshold (``None``: it did not)."""
    verdict = summary.dead_letter_rate
    if verdict is None or not verdict.exceeded:
        return None
    return (
        f"{verdict.rate:.1%} of the records were not learned (above --max-dead-letter-rate "
        f"{verdict.threshold:g}): the results cover only the rest"
    )


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
    if summary.unknown_fields:
        shown = ", ".join(
            f"{k} ({v:,})" for k, v in sorted(summary.unknown_fields.items(), key=lambda kv: -kv[1])[:8]
        )
        click.echo(f"[streamlearn] fields not in the feature schema (not learned from): {shown}", err=True)
    verdict = summary.dead_letter_rate
    if verdict is not None and verdict.exceeded:
        from stream.engine.rejects import HINT

        click.echo(f"[streamlearn] WARNING {verdict.describe()}; {HINT}", err=True)
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
