"""Reconciliation: the daemon's full retrains, and adopting a better one without skipping an event.

The :class:`Reconciler` rides along the engine loop (:class:`~stream.engine.loop.Engine`)
and works only at batch boundaries. It sees the engine only through
:class:`~stream.engine.reconcile_port.EngineView` and hands it an
:class:`~stream.engine.reconcile_port.Adoption`:

1. **Schedule.** Every ``every_events`` learned events, every ``every_seconds``,
   or when the drift policy asks (``on_drift``), it launches a
   :class:`~stream.reconcile.job.RetrainJob` -- a separate torchrun process
   tree -- over ``[history, cutoff)``. The cutoff is, per partition, the first
   offset the live model has not learned: the daemon's position, or the
   oldest event still waiting in the open window if that is earlier. One job
   at a time; a job that crashes or times out is an audit event
   (``retrain_failed``) and the daemon carries on.
2. **Catch up.** When the job's candidate is in the registry and the daemon
   has read past its cutoff, the candidate is loaded aside and learns, in
   micro-batches, every record of ``[cutoff, position)`` that is not waiting
   in the open window -- exactly what the live model learned since the
   cutoff. Its EWC anchors are reset (the retrain is its new reference).
3. **Gate.** The caught-up candidate and the live model then meet on the next
   ``holdout_events`` of the stream, test-then-train, both scoring each batch
   before either learns it. If the candidate is no worse than the live model
   within ``tolerance`` it is adopted; otherwise the registry rejects it and
   the evidence is an audit event (``retrain_rejected``).
4. **Adopt.** At that batch boundary the engine swaps learners, publishes and
   validates the adopted state (parent: the retrain candidate) and
   checkpoints at the next loop turn. The adopted model has learned the
   retrain's range, the catch-up and the head-to-head batches once each --
   with ``--ledger`` the checkpoint's ledger says so, id by id.

A crash before that checkpoint restores the previous one: the old live model
and its positions, consistent with each other.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from learners.base import Consolidating
from serving.registry.versions import AuditEvent, Version
from stream.core.errors import (
    BrokerUnavailableError,
    ConfigError,
    RegistryError,
    SchemaMismatchError,
    StreamlearnError,
)
from stream.core.poll import PollColumns
from stream.core.records import MicroBatch, TopicPartition, merge_ranges
from stream.engine.gate import holdout_metric
from stream.engine.reconcile_port import Adoption, EngineView
from stream.reconcile.job import Launch, RetrainJob
from stream.reconcile.spec import RetrainSpec
from stream.reconcile.worker import RetrainResult
from stream.reconcile.worker_data import exact_bound

if TYPE_CHECKING:
    from serving.registry.base import ModelRegistry

log = logging.getLogger(__name__)

__all__ = ["ReconcileConfig", "Reconciler"]


@dataclass(frozen=True)
class ReconcileConfig:
    """When the daemon retrains, how, and how a candidate is judged (see the module docstring).

    One value for the ``--retrain-*`` options of ``streamlearn run`` too:
    ``epochs``, ``batch_size`` and ``shards`` are every job's recipe (its
    :class:`~stream.reconcile.spec.RetrainSpec`), ``launch.nproc`` its
    processes. ``on_drift`` is off unless asked for, as ``--retrain-on-drift``
    is: a daemon starts no torchrun process trees nobody asked for.
    """

    every_events: int | None = None
    every_seconds: float | None = None
    on_drift: bool = False
    history: str = "earliest"
    launch: Launch = field(default_factory=Launch)
    epochs: int = 3
    batch_size: int = 256
    shards: int = 8
    holdout_events: int = 1000
    tolerance: float = 0.01
    catchup_batch: int = 1000
    timeout_s: float = 3600.0
    job_root: str = ".streamlearn/retrain"
    job_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.every_events is not None and self.every_events < 1:
            raise ConfigError("--retrain-every-events must be at least 1")
        if self.every_seconds is not None and self.every_seconds <= 0:
            raise ConfigError("--retrain-every-seconds must be positive")
        if self.holdout_events < 1 or self.catchup_batch < 1:
            raise ConfigError("the retrain holdout and catch-up batch must be at least 1 event")
        if self.tolerance < 0:
            raise ConfigError("the retrain tolerance must be >= 0")

    @property
    def scheduled(self) -> bool:
        return self.every_events is not None or self.every_seconds is not None or self.on_drift


@dataclass
class _Shadow:
    """A caught-up candidate in its head-to-head with the live model."""

    result: RetrainResult
    learner: Any
    ids: list[str] | None
    ranges: dict[str, list[int]]
    catchup_events: int
    live_pred: list[np.ndarray] = field(default_factory=list)
    cand_pred: list[np.ndarray] = field(default_factory=list)
    truth: list[np.ndarray] = field(default_factory=list)
    holdout: dict[str, list[int]] = field(default_factory=dict)

    @property
    def scored(self) -> int:
        return sum(len(t) for t in self.truth)


class Reconciler:
    """Schedules retrains and reconciles their candidates with the live model; see the module docstring.

    ``spec`` is the template of every job (bootstrap, topics, learner,
    registry, recipe); its ``start``/``end`` are set per job. ``counts``:
    launched / failed / adopted / rejected.
    """

    def __init__(
        self,
        config: ReconcileConfig,
        spec: RetrainSpec,
        registry: ModelRegistry,
        *,
        read_spans: SpanReader | None = None,
    ) -> None:
        if not spec.registry:
            raise ConfigError("reconciliation needs a model registry (the candidate is published there)")
        self.config = config
        self.spec = spec
        self.registry = registry
        self._read_spans = read_spans or KafkaSpanReader(spec.bootstrap, spec.kafka, config.catchup_batch)
        self.counts = {"launched": 0, "failed": 0, "adopted": 0, "rejected": 0}
        self.last_outcome: str | None = None
        self._job: RetrainJob | None = None
        self._candidate: RetrainResult | None = None
        self._shadow: _Shadow | None = None
        self._requested: str | None = None
        self._last_launch_events = 0
        self._last_launch_at = time.monotonic()
        self._waiting_logged = False

    # ------------------------------------------------------------ requests
    def request(self, details: dict | None = None) -> None:
        """A retrain is wanted at the next batch boundary (the drift policy's ``on_retrain_request``)."""
        if self.config.on_drift:
            self._requested = (details or {}).get("reason", "requested")

    def offer(self, result: RetrainResult) -> None:
        """Reconcile a finished retrain (the daemon's own jobs arrive here; so can one run by hand)."""
        if self._candidate is not None or self._shadow is not None:
            raise ConfigError("a retrain candidate is already being reconciled")
        self._candidate = result

    @property
    def busy(self) -> bool:
        return self._job is not None or self._candidate is not None or self._shadow is not None

    # ----------------------------------------------------------- the loop
    def at_boundary(self, engine: EngineView) -> None:
        """Between batches: watch the job, start a catch-up, or launch a due retrain."""
        if self._job is not None:
            outcome = self._job.poll()
            if outcome is None:
                return
            job, self._job = self._job, None
            if not outcome.ok:
                self._failed(job, outcome)
                return
            self.offer(outcome.result)
        if self._candidate is not None and self._shadow is None:
            self._start_shadow(engine)
            return
        if not self.busy and self._due(engine):
            self._launch(engine)

    def before_learn(
        self, engine: EngineView, batch: MicroBatch, live_pred: np.ndarray | None
    ) -> Adoption | None:
        """Score the caught-up candidate against the live model on ``batch`` (not learned by either yet)."""
        shadow = self._shadow
        if shadow is None or not len(batch):
            return None
        if live_pred is None:
            live_pred = engine.learner.predict_batch(batch.X)
        shadow.live_pred.append(live_pred)
        shadow.cand_pred.append(shadow.learner.predict_batch(batch.X))
        shadow.truth.append(batch.y)
        merge_ranges(shadow.holdout, batch.events)
        if shadow.scored >= self.config.holdout_events:
            return self._decide(shadow)
        shadow.learner.learn_batch(batch.X, batch.y)
        if shadow.ids is not None:
            shadow.ids.extend(batch.events.ids.tolist())
        merge_ranges(shadow.ranges, batch.events)
        return None

    def close(self) -> None:
        """Stop a running job (the daemon is stopping; a half-done retrain is of no use)."""
        unjudged = self._shadow.result if self._shadow is not None else self._candidate
        if unjudged is not None:
            self._audit(
                "retrain_unjudged",
                unjudged.version,
                f"the daemon stopped before retrain v{unjudged.version} was caught up and compared; "
                f"it stays a candidate",
                {"ranges": unjudged.ranges},
            )
            self._shadow = self._candidate = None
        if self._job is not None:
            self._job.stop()
            self._audit(
                "retrain_failed",
                None,
                "the daemon stopped while the retrain ran; the job was stopped",
                {"job_dir": str(self._job.dir)},
            )
            self._job = None

    # ------------------------------------------------------------ launch
    def _due(self, engine: EngineView) -> bool:
        cfg = self.config
        learned = engine.events_learned
        if self._requested is not None:
            return True
        if cfg.every_events is not None and learned - self._last_launch_events >= cfg.every_events:
            return True
        return cfg.every_seconds is not None and time.monotonic() - self._last_launch_at >= cfg.every_seconds

    def _launch(self, engine: EngineView) -> None:
        cutoff = learned_cutoff(engine.positions, engine.pending())
        why = self._requested or (
            f"scheduled: {engine.events_learned - self._last_launch_events:,} events since the last retrain"
        )
        self._requested = None
        self._last_launch_events = engine.events_learned
        self._last_launch_at = time.monotonic()
        if not cutoff:
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        job_dir = Path(self.config.job_root) / f"{stamp}-{self.counts['launched'] + 1}"
        spec = replace(
            self.spec,
            start=self.config.history,
            end=exact_bound(cutoff, "earliest").spec,
            record_ids=engine.keeps_ledger,
            note=f"daemon retrain ({why})",
            codec=engine.codec_state,
        )
        job = RetrainJob(
            spec, job_dir, self.config.launch, timeout_s=self.config.timeout_s, env=self.config.job_env
        )
        try:
            job.start()
        except (OSError, StreamlearnError) as exc:
            self.counts["failed"] += 1
            self._audit(
                "retrain_failed", None, f"could not start the retrain: {exc}", {"job_dir": str(job_dir)}
            )
            return
        self._job = job
        self.counts["launched"] += 1
        self._audit(
            "retrain_started",
            None,
            why,
            {
                "job_dir": str(job_dir),
                "pid": job.pid,
                "from": self.config.history,
                "cutoff": {_key(tp): n for tp, n in cutoff.items()},
                "processes": self.config.launch.nproc,
                "nnodes": self.config.launch.nnodes,
            },
        )
        log.info("retrain launched in %s (%s)", job_dir, why)

    def _failed(self, job: RetrainJob, outcome) -> None:
        self.counts["failed"] += 1
        self.last_outcome = "failed"
        log.warning("retrain failed, the daemon carries on: %s", outcome.message)
        self._audit(
            "retrain_failed",
            None,
            outcome.message,
            {
                "exit_code": outcome.exit_code,
                "seconds": outcome.seconds,
                "log": outcome.log_path,
                "job_dir": str(job.dir),
            },
        )

    # ---------------------------------------------------------- catch up
    def _start_shadow(self, engine: EngineView) -> None:
        result = self._candidate
        positions = engine.positions
        cutoff = result.cutoff()
        behind = {tp: n for tp, n in cutoff.items() if positions.get(tp, -1) < n and _started(result, tp)}
        if behind:
            if not self._waiting_logged:
                log.info(
                    "retrain candidate v%s waits until the daemon reads past its cutoff %s",
                    result.version,
                    behind,
                )
                self._waiting_logged = True
            return
        self._waiting_logged = False
        try:
            learner = engine.new_learner(int(self.registry.get(result.version).schema.get("n_features") or 0))
            learner.load_state_dict(self.registry.load_state(result.version))
        except (RegistryError, SchemaMismatchError, ValueError) as exc:
            self._candidate = None
            self._reject(result, f"the candidate cannot be loaded into the live learner: {exc}", {})
            return
        started = time.monotonic()
        ids = _load_ids(result) if engine.keeps_ledger else None
        ranges = {k: [lo, hi - 1] for k, (lo, hi) in result.ranges.items() if hi > lo}
        try:
            caught = self._catch_up(engine, learner, cutoff, positions, ids, ranges)
        except BrokerUnavailableError as exc:
            # The live model is untouched; the candidate stays in the registry, unjudged.
            self._candidate = None
            self.counts["failed"] += 1
            self._audit(
                "retrain_failed",
                result.version,
                f"the catch-up could not read Kafka: {exc}",
                {"ranges": result.ranges},
            )
            return
        if isinstance(learner, Consolidating):
            learner.reset_consolidation()
        self._shadow = _Shadow(result, learner, ids, ranges, caught)
        self._candidate = None
        log.info(
            "retrain candidate v%s caught up on %d events in %.2fs; head-to-head over the next %d events",
            result.version,
            caught,
            time.monotonic() - started,
            self.config.holdout_events,
        )

    def _catch_up(
        self,
        engine: EngineView,
        learner,
        cutoff: dict[TopicPartition, int],
        positions: dict[TopicPartition, int],
        ids: list[str] | None,
        ranges: dict,
    ) -> int:
        """Learn every record of ``[cutoff, position)`` not waiting in the window; the number learned."""
        spans = {tp: (cutoff[tp], positions[tp]) for tp in cutoff if positions.get(tp, 0) > cutoff[tp]}
        if not spans:
            return 0
        waiting = engine.pending()
        skip = (
            set(zip(waiting.topic.tolist(), waiting.partition.tolist(), waiting.offset.tolist()))
            if waiting is not None and len(waiting)
            else set()
        )
        learned = 0
        for poll in self._read_spans(spans):
            events = engine.decode_events(poll)  # dead letters were sent when the daemon read them
            if skip and len(events):
                keep = np.fromiter(
                    (
                        (t, p, o) not in skip
                        for t, p, o in zip(
                            events.topic.tolist(), events.partition.tolist(), events.offset.tolist()
                        )
                    ),
                    bool,
                    len(events),
                )
                events = events.take(keep)
            if not len(events):
                continue
            learner.learn_batch(events.X, events.y)
            learned += len(events)
            merge_ranges(ranges, events)
            if ids is not None:
                ids.extend(events.ids.tolist())
        return learned

    # ------------------------------------------------------------- gate
    def _decide(self, shadow: _Shadow) -> Adoption | None:
        self._shadow = None
        y = np.concatenate(shadow.truth)
        name, live, higher = holdout_metric(np.concatenate(shadow.live_pred), y)
        _, cand, _ = holdout_metric(np.concatenate(shadow.cand_pred), y)
        tol = self.config.tolerance
        ok = cand >= live - tol if higher else cand <= live + tol
        result = shadow.result
        evidence = {
            "candidate": result.version,
            name: cand,
            f"live_{name}": live,
            "tolerance": tol,
            "holdout_events": int(len(y)),
            "holdout": shadow.holdout,
            "retrain_ranges": result.ranges,
            "retrain_events": result.events,
            "catchup_events": shadow.catchup_events,
            "retrain_metrics": result.metrics,
            "processes": result.world_size,
            "backend": result.backend,
        }
        verdict = "no worse" if ok else "worse"
        reason = (
            f"retrain v{result.version} caught up on {shadow.catchup_events:,} events: {name} {cand:.4f} vs "
            f"live {live:.4f} (tolerance {tol:g}) on the next {len(y):,} events: {verdict}"
        )
        if not ok:
            self._reject(result, reason, evidence)
            return None
        try:
            draft = Version(
                number=0,
                parent=result.version,
                offsets=shadow.ranges,
                holdout=shadow.holdout,
                metrics={name: cand, f"live_{name}": live},
                events_learned=int(shadow.learner.n_learned),
                schema=dict(self.registry.get(result.version).schema),
                learner=repr(shadow.learner),
                note=f"adopted full retrain v{result.version} + catch-up",
            )
            version = self.registry.publish(shadow.learner.state_dict(), draft)
            version = self.registry.validate(version.number, reason=reason)
        except RegistryError as exc:
            log.warning("could not publish the adopted retrain (keeping the live model): %s", exc)
            self._audit("retrain_failed", result.version, f"adoption could not be published: {exc}", evidence)
            return None
        self.counts["adopted"] += 1
        self.last_outcome = "adopted"
        self._audit("retrain_adopted", version.number, reason, evidence)
        log.info("adopted retrain v%s as v%d: %s", result.version, version.number, reason)
        return Adoption(shadow.learner, version, shadow.ids)

    def _reject(self, result: RetrainResult, reason: str, evidence: dict) -> None:
        self.counts["rejected"] += 1
        self.last_outcome = "rejected"
        log.info("retrain v%s rejected: %s", result.version, reason)
        try:
            self.registry.reject(result.version, reason=reason)
        except RegistryError as exc:
            log.warning("could not mark retrain v%s rejected: %s", result.version, exc)
        self._audit("retrain_rejected", result.version, reason, evidence)

    def _audit(self, kind: str, version: int | None, reason: str, details: dict) -> None:
        try:
            self.registry.record_event(AuditEvent(kind, version, reason=reason, details=details))
        except RegistryError as exc:
            log.warning("could not record the %s audit event: %s", kind, exc)


SpanReader = Callable[[dict[TopicPartition, tuple[int, int]]], Iterator[PollColumns]]
"""Reads per-partition ``[lo, hi)`` offset spans as polls (the catch-up's input)."""


class KafkaSpanReader:
    """A :data:`SpanReader` over Kafka: no consumer group, partitions merged in timestamp order."""

    def __init__(self, bootstrap: str, kafka_extra: dict, batch: int) -> None:
        self.bootstrap, self.extra, self.batch = bootstrap, dict(kafka_extra), batch

    def __call__(self, spans: dict[TopicPartition, tuple[int, int]]) -> Iterator[PollColumns]:
        from stream.core.settings import KafkaSettings
        from stream.reconcile.worker_data import read_spans
        from stream.sources.kafka import KafkaSourceConfig

        extra = {
            **KafkaSettings().client_options(),
            **self.extra,
        }  # security settings live in the environment
        config = KafkaSourceConfig(bootstrap=self.bootstrap, partitions=tuple(sorted(spans)), extra=extra)
        return read_spans(config, spans, max_records=self.batch)


def learned_cutoff(positions: dict[TopicPartition, int], pending) -> dict[TopicPartition, int]:
    """Per partition, the first offset the live model has not learned (position, or an older waiting event).

    >>> tp = TopicPartition("t", 0)
    >>> learned_cutoff({tp: 100}, None)
    {TopicPartition(topic='t', partition=0): 100}
    """
    cutoff = dict(positions)
    if pending is not None and len(pending):
        for topic, part, off in zip(
            pending.topic.tolist(), pending.partition.tolist(), pending.offset.tolist()
        ):
            tp = TopicPartition(topic, part)
            if tp in cutoff and off < cutoff[tp]:
                cutoff[tp] = off
    return cutoff


def _started(result: RetrainResult, tp: TopicPartition) -> bool:
    lo, hi = result.ranges[_key(tp)]
    return hi > lo


def _key(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


def _load_ids(result: RetrainResult) -> list[str]:
    if not result.ids_path:
        raise ConfigError("the retrain did not record its event ids, but the daemon keeps a ledger")
    return list(json.loads(Path(result.ids_path).read_text()))
