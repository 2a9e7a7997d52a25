"""The one engine builder: an :class:`~stream.engine.spec.EngineSpec` in, a ready :class:`~stream.engine.loop.Engine` out.

``streamlearn run``, ``streamlearn demo`` and every lane of ``streamlearn
replay`` build their engines here, so an engine is wired one way: source,
codec, window, checkpoint store (locked first), dead-letter sink, validation
gate, drift policy and -- built by the caller, which may import the
reconciliation layer -- the reconciler.

Examples
--------
>>> import os, tempfile, orjson
>>> from stream.engine.spec import CheckpointSpec, EngineSpec, SourceSpec
>>> from stream.sources.produce import synthetic_rows
>>> d = tempfile.mkdtemp(); path = os.path.join(d, "sea.jsonl")
>>> with open(path, "wb") as f:
...     _ = f.write(b"\\n".join(orjson.dumps(r) for r in synthetic_rows("sea", 600, seed=1)))
>>> spec = EngineSpec(
...     source=SourceSpec(files=(path,)), window="count:200", dead_letter="none",
...     checkpoints=CheckpointSpec(dir=os.path.join(d, "ck")),
... )
>>> summary = build_engine(spec, extras=EngineExtras(on_progress=lambda stats: None)).run()
>>> summary.events_learned, summary.stopped_because
(600, 'end of input')
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from stream.core.clock import SystemClock
from stream.core.errors import ConfigError
from stream.engine.checkpoint import CheckpointStore
from stream.engine.gate import ValidationGate
from stream.engine.loop import Engine
from stream.engine.oversight import Oversight
from stream.engine.spec import EngineSpec, RegistrySpec
from stream.engine.stages import connect_drift_policy

if TYPE_CHECKING:
    from stream.core.clock import Clock
    from stream.engine.observer import BatchObserver
    from stream.engine.progress import RunStats
    from stream.sources.base import Source

__all__ = ["EngineExtras", "build_engine", "open_gate"]


@dataclass(frozen=True)
class EngineExtras:
    """What a caller adds to an engine beyond its spec (all optional).

    ``source`` replaces the one the spec describes (a backtest's
    :class:`~stream.replay.driver.FeedSource`); ``clock`` drives windows and
    cadences (a backtest's data clock); ``observer`` sees every scored batch;
    ``on_progress`` gets the run's stats (default: a progress line, or none
    when ``quiet``).
    """

    source: Source | None = None
    clock: Clock | None = None
    observer: BatchObserver | None = None
    on_progress: Callable[[RunStats], None] | None = None
    quiet: bool = False
    #: Makes the engine from its parts (the keyword arguments of :class:`Engine`): a
    #: scale-out member's :class:`~stream.members.engine.MemberEngine`; ``None``: an :class:`Engine`.
    make_engine: Callable[..., Engine] | None = None


def open_gate(spec: EngineSpec, clock: Clock | None = None) -> ValidationGate | None:
    """The validation gate ``spec`` describes over its registry, or ``None`` without one (not pinged).

    Its seconds cadence reads ``clock`` (the engine's; the system clock by default).
    """
    if spec.gate is None or spec.registry is None:
        return None
    clock = clock or SystemClock()
    return ValidationGate(_open_registry(spec.registry), spec.gate, clock=lambda: clock.monotonic_ms() / 1000)


def _open_registry(spec: RegistrySpec):
    from serving.registry.factory import open_registry

    return open_registry(spec.url, namespace=spec.namespace, keep_states=spec.keep_states)


def build_engine(
    spec: EngineSpec,
    *,
    gate: ValidationGate | None = None,
    reconciler: Any = None,
    extras: EngineExtras | None = None,
) -> Engine:
    """An engine as ``spec`` describes it; its checkpoint directory is locked until the engine closes.

    ``gate`` is the spec's gate when the caller opened it already (to check
    the registry, or to build ``reconciler`` over it); otherwise the builder
    opens it. ``reconciler`` is a :class:`~stream.reconcile.reconciler.Reconciler`
    or ``None``.

    Raises
    ------
    ConfigError, CheckpointLockedError
        A setting the parts refuse, or another process holds the checkpoint directory.
    """
    from stream.codec.json_codec import JsonCodec
    from stream.engine.progress import ProgressPrinter
    from stream.sources.deadletter_kafka import open_dead_letter_sink
    from stream.window.spec import parse_window

    extras = extras or EngineExtras()
    gate = gate if gate is not None else open_gate(spec, extras.clock)
    policy = spec.drift.build(task=spec.learner.task) if spec.drift is not None else None
    connect_drift_policy(policy, gate, reconciler)
    if extras.source is not None and spec.intake.mode == "process":
        raise ConfigError("--intake process reads the spec's own source; this caller feeds the engine itself")
    source = extras.source if extras.source is not None else _open_source(spec)
    codec = JsonCodec(spec.decode)
    ckpt = spec.checkpoints
    store = CheckpointStore(ckpt.dir, keep=ckpt.keep, on_unreadable=ckpt.on_unreadable)
    # Locked before anything else touches the directory (the dead-letter spool
    # lives there too); the engine holds the lock from here until it closes.
    store.lock()
    make_engine = extras.make_engine or Engine
    try:
        return make_engine(
            source=source,
            codec=codec,
            window=parse_window(spec.window, clock=extras.clock),
            learner_builder=spec.learner.factory(),
            store=store,
            dead_letters=open_dead_letter_sink(
                spec.dead_letter, spec.source.kafka_bootstrap, ckpt.dir, spec.source.kafka.client_options()
            ),
            config=spec.loop,
            clock=extras.clock,
            on_progress=(
                extras.on_progress
                if extras.on_progress is not None
                else (None if extras.quiet else ProgressPrinter())
            ),
            oversight=Oversight(
                gate=gate,
                policy=policy,
                observer=extras.observer,
                reconciler=reconciler,
                feedback=_feedback_loop(spec, gate),
            ),
        )
    except BaseException:
        store.unlock()
        raise


def _feedback_loop(spec: EngineSpec, gate: ValidationGate | None):
    """The join of delayed labels the spec asks for, reporting live metrics to the gate's registry (or the spec's)."""
    if spec.join is None:
        return None
    from stream.engine.feedback_loop import FeedbackLoop

    if gate is not None:
        registry = gate.registry
    else:
        registry = _open_registry(spec.registry) if spec.registry is not None else None
    return FeedbackLoop(spec.join, registry)


def _open_source(spec: EngineSpec) -> Source:
    """The source ``spec.source`` describes (not opened yet); with ``--intake process``, the child process that reads it."""
    factory = _source_factory(spec)
    if spec.intake.mode == "inline":
        return factory()
    from stream.engine.intake_process import BoundedProcessIntake, ProcessIntake

    loop = spec.loop
    intake = BoundedProcessIntake if spec.source.files else ProcessIntake
    factory()  # made once here too: a bad path or option is reported before a process starts
    return intake(
        factory,
        spec.decode,
        # The engine dead-letters a duplicate id's record: it needs the records' keys and headers too.
        with_records=loop.dedup_window > 0 and loop.duplicate_policy == "dead_letter",
        prefetch=spec.intake.prefetch,
    )


def _source_factory(spec: EngineSpec) -> Callable[[], Source]:
    """What makes the source ``spec.source`` describes: files, or a Kafka consumer of the chosen backend (picklable)."""
    from stream.sources.base import parse_partitions
    from stream.sources.kafka import KafkaSourceConfig

    src = spec.source
    if src.files:
        from stream.sources.files import FileSource

        return functools.partial(FileSource, list(src.files), label_column=src.label_column)
    kafka = src.kafka
    config = KafkaSourceConfig(
        bootstrap=src.bootstrap,
        # With a join, the labels topic is read beside the features (stream.engine.join).
        topics=tuple(src.topics) + ((spec.join.labels_topic,) if spec.join is not None else ()),
        group_id=src.group,
        partitions=tuple(parse_partitions(src.partitions)),
        client_id=kafka.client_id,
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        max_poll_interval_ms=kafka.max_poll_interval_ms,
        # The command line's client options win over the environment's security settings.
        extra={**kafka.client_options(), **src.kafka_options},
    )
    if src.backend == "confluent":
        from stream.sources.confluent import ConfluentKafkaSource

        return functools.partial(ConfluentKafkaSource, config)
    from stream.sources.kafka import KafkaSource

    return functools.partial(KafkaSource, config)
