"""The drift policy: turn detector alarms into decisions -- roll back, adapt, or dismiss -- with evidence.

An alarm alone does not say what happened. A corrupted live model (a poisoned
batch, exploding inputs, divergence) and a world that changed both raise the
error rate; they need opposite responses. So on an alarm the policy collects
evidence: for the next ``evidence_batches`` micro-batches it scores the live
model and the last validated snapshot on the *same* events, before the live
model learns them (prequential), and then decides:

``rollback``
    A validated version is clearly better: better by at least ``rollback_margin`` and
    a one-sided paired test (McNemar for classes, t on squared errors for
    regression) below ``significance``. The live model is corrupted: the
    learner is restored from that version and the registry serves it. Besides
    the current validated version, ``lookback_versions`` older validated ones
    are scored too: if the current one is itself corrupted (the damage was
    slow to show), the best older one wins and the registry's pointer moves
    back to it, so the API follows at once. Decided
    as soon as the evidence is conclusive, even before ``evidence_batches``.
``adapt``
    The snapshot is not better and the live model has degraded by at least
    ``degradation`` from its level before the alarm: the world changed. The
    learner's plasticity is raised for ``plasticity_events`` events (EWC
    relaxed by ``ewc_factor``, ``replay_refresh`` of the replay buffer evicted)
    and a full retrain is requested. With a validated snapshot to go back
    to, the verdict first waits: a corrupt burst that is still going on looks
    just like this. The policy keeps scoring both models on the latest
    batches; when the burst ends the snapshot is clearly better again
    (``rollback``), or right again with the live model unharmed (``dismiss``).
    Only an anomaly that lasts ``burst_events`` events after the alarm is a
    change: then it adapts.
``dismiss``
    Neither: a false alarm, or a change the model absorbed on its own.

Detectors are fed only after a warm-up of ``warmup_events`` events: a model
still learning its first concept has a falling error rate, a change they would
rightly flag. While evidence is collected the validation gate holds (no
candidate is validated, so a corrupted model is never served), and for
``cooldown_events`` events after an adapt or dismiss decision further alarms
are noted but not acted on: one drift, one decision. After a rollback the
detectors re-arm at once, so a corrupt burst longer than the evidence window
gets a rollback of its own.

The three periods are counted in events (``len(batch)`` summed over the
batches observed), not batches, so they mean the same at any window size. A
batch belongs to a period when the events observed *before* it fall short of
the period's end, so a period lasts at least its number of events, rounded up
to whole batches (the batch that crosses the end still belongs to it):

- warm-up: the batch is warm-up while fewer than ``warmup_events`` events
  were observed before it (``warmup_events=2000``: 4 batches of 500, 20 of
  100, 7 of 300);
- cool-down and raised plasticity start with the decision batch (its events
  count): they end ``cooldown_events`` / ``plasticity_events`` events after
  the first event of that batch. An alarm on a batch that starts before the
  cool-down's end is noted only; the plasticity is restored before the first
  batch that starts at or after its end is learned.

Every alarm and decision is an audit event in the registry
(``drift_alarm``, ``rollback``, ``adapt``, ``drift_dismissed``,
``retrain_request``) with metrics, the evidence window's offsets and the
detector's statistics; events that cannot be written (registry down) wait in
an outbox that is part of the checkpoint. Margins are in accuracy points for
classification and fractions of the RMSE for regression.

Examples
--------
>>> import tempfile
>>> from drift.detectors import DriftMonitor, ErrorDriftDetector
>>> from learners.neural.learner import TorchLearner
>>> from stream.testing.doubles import make_batch
>>> policy = DriftPolicy(DriftMonitor([ErrorDriftDetector("adwin")]))
>>> learner = TorchLearner(n_features=3, device="cpu")
>>> batch = make_batch(200, n_features=3)
>>> policy.observe(learner, batch, learner.predict_batch(batch.X)) is None
True
>>> policy.state
'watching'
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

import numpy as np

from drift.alarm import OpenAlarm, RecentEvidence
from drift.base import Signal
from drift.detectors import DriftMonitor
from drift.evidence import PairedEvidence, RecentLevel, batch_errors
from drift.policy_config import PolicyConfig
from learners.base import Adaptable, Learner
from serving.registry.versions import AuditEvent, Version, json_plain
from stream.core.errors import ConfigError, RegistryError, SchemaMismatchError
from stream.core.records import MicroBatch, merge_ranges

log = logging.getLogger(__name__)

__all__ = ["Decision", "DriftPolicy", "DECISION_KINDS"]

DECISION_KINDS = ("rollback", "adapt", "drift_dismissed")
SnapshotProvider = Callable[[Learner], "tuple[Learner, Version] | None"]


@dataclass(frozen=True)
class Decision:
    """One decision and its evidence; ``version`` is the snapshot it was compared with (if any)."""

    kind: Literal["rollback", "adapt", "drift_dismissed"]
    reason: str
    evidence: Mapping[str, Any]
    version: Version | None = None


class DriftPolicy:
    """Decides on alarms of ``monitor``; see the module docstring.

    Parameters
    ----------
    monitor
        The detectors, fed every batch while no alarm is open.
    config
        Thresholds and levers.
    registry
        Where audit events go (and whose pointer a rollback moves back);
        ``None`` keeps decisions in the log only.
    snapshot
        ``learner -> (validated learner, its Version) | None``; normally
        :meth:`stream.engine.gate.ValidationGate.validated`. Without one the
        policy can adapt or dismiss, never roll back.
    on_retrain_request
        Called with the ``retrain_request`` audit event's details when the
        policy asks for a full retrain.
    task
        ``classification`` or ``regression`` (how errors and metrics are computed).
    """

    def __init__(
        self,
        monitor: DriftMonitor,
        config: PolicyConfig | None = None,
        *,
        registry=None,
        snapshot: SnapshotProvider | None = None,
        on_retrain_request: Callable[[dict], None] | None = None,
        task: str = "classification",
    ) -> None:
        self.monitor = monitor
        self.config = config or PolicyConfig()
        self.registry = registry
        self.snapshot_provider = snapshot
        self.on_retrain_request = on_retrain_request
        self.task = task
        self._level = RecentLevel(task, self.config.reference_batches)
        self._alarm: OpenAlarm | None = None
        self._batches = 0  # batches observed: the alarm's ``batch`` in the audit evidence
        self._events = 0  # events observed: the warm-up, cool-down and plasticity periods
        self._batch_start = 0  # events observed before the batch at hand: where its periods start
        self._cooldown_until = 0  # in events
        self._plasticity_until: int | None = None  # in events; None: plasticity not raised
        self._outbox: list[dict] = []
        self.counts = {
            "alarms": 0,
            "warnings": 0,
            "suppressed": 0,
            "rollback": 0,
            "adapt": 0,
            "drift_dismissed": 0,
            "retrain_request": 0,
        }
        self.last_decision: Decision | None = None
        #: The signal (``detector``, ``level``, ``evidence``) of an alarm the
        #: latest :meth:`observe` opened, else ``None``: the engine reports it
        #: with that batch.
        self.new_alarm: dict | None = None
        self._older: dict[int, tuple[Learner, Version]] = {}  # loaded once per alarm

    # ------------------------------------------------------------ engine API
    @property
    def state(self) -> str:
        """``watching``, ``collecting`` (an alarm is open) or ``cooling`` (right after a decision)."""
        if self._alarm is not None:
            return "collecting"
        return "cooling" if self._events < self._cooldown_until else "watching"

    @property
    def open_alarm(self) -> dict | None:
        """The open alarm's signal (``detector``, ``level``, ``evidence``), or ``None``."""
        return None if self._alarm is None else dict(self._alarm.signal)

    @property
    def holds_validation(self) -> bool:
        """True while an alarm is open: the gate must not validate a candidate now."""
        return self._alarm is not None

    def observe(self, learner: Learner, batch: MicroBatch, pred: np.ndarray) -> Decision | None:
        """Look at one batch the live model predicted (before it learns it); maybe decide.

        A ``rollback`` decision has already restored ``learner`` from the
        snapshot when this returns; ``adapt`` has already raised its plasticity.
        """
        self.new_alarm = None
        self._flush_outbox()
        self._batches += 1
        self._batch_start = self._events
        self._events += len(batch.y)
        self._maybe_restore_plasticity(learner)
        if self._alarm is not None:
            return self._collect(learner, batch, pred)
        errors = batch_errors(self.task, pred, batch.y)
        if self._batch_start < self.config.warmup_events:
            # A model that is still learning its first concept has a falling
            # error rate, which change detectors rightly call a change. The
            # detectors start once it has settled.
            self._level.add(errors)
            return None
        signal = self.monitor.update(batch.X, errors)
        if signal.level == "warning":
            self.counts["warnings"] += 1
        if signal.is_drift:
            if self._batch_start < self._cooldown_until:
                self.counts["suppressed"] += 1
                log.info(
                    "drift alarm from %s during the cool-down after the last decision: noted, not acted on",
                    signal.detector,
                )
            else:
                self._open_alarm(learner, signal, batch)
                return None  # the alarm batch is not evidence: it may be the corrupt data itself
        self._level.add(errors)
        return None

    # --------------------------------------------------------------- alarm
    def _open_alarm(self, learner: Learner, signal: Signal, batch: MicroBatch) -> None:
        offsets: dict[str, list[int]] = {}
        merge_ranges(offsets, batch.events)
        snap = self._snapshot(learner)
        self._alarm = OpenAlarm(
            signal={
                "detector": signal.detector,
                "level": signal.level,
                "evidence": json_plain(signal.evidence),
            },
            batch=self._batches,
            offsets=offsets,
            reference=self._level.metric,
            evidence=PairedEvidence(self.task),
            recent=RecentEvidence(self.task, self.config.min_evidence_events),
            snapshot_version=None if snap is None else snap[1].number,
        )
        self._load_older(learner, snap)
        self._alarm.compare_older(self._older)
        self.counts["alarms"] += 1
        self.new_alarm = dict(self._alarm.signal)
        reason = f"{signal.detector} raised a drift alarm; collecting evidence on the next batches"
        log.warning("%s (reference %s %.4f)", reason, self._metric_name, self._alarm.reference)
        self._audit(
            "drift_alarm",
            self._alarm.snapshot_version,
            reason,
            {
                "signal": self._alarm.signal,
                "window": offsets,
                "reference": _num(self._alarm.reference),
                "metric": self._metric_name,
                "snapshot_version": self._alarm.snapshot_version,
            },
        )

    def _collect(self, learner: Learner, batch: MicroBatch, pred: np.ndarray) -> Decision | None:
        alarm = self._alarm
        snap = self._snapshot(learner)
        offsets: dict[str, list[int]] = {}
        merge_ranges(offsets, batch.events)
        snap_pred = pred  # nothing to compare with: snapshot == live
        if snap is not None:
            alarm.snapshot_version = snap[1].number
            snap_pred = snap[0].predict_batch(batch.X)
        if not self._older and alarm.older:
            self._load_older(learner, snap)  # resumed from a checkpoint mid-alarm
        older = {n: self._older[n][0].predict_batch(batch.X) for n in alarm.older if n in self._older}
        alarm.record(batch.y, pred, snap_pred, older, offsets)
        version = snap[1] if snap is not None else None
        if alarm.waiting:
            return self._wait(learner, snap)
        ev, cfg = alarm.evidence, self.config
        if ev.n < cfg.min_evidence_events:
            return None
        best = self._best_snapshot(snap)
        if best is not None:
            return self._rollback(learner, *best)
        if ev.batches < cfg.evidence_batches:
            return None
        if not self._degraded(ev.live_metric, alarm.reference):
            return self._dismiss(version)
        if snap is not None and alarm.after_events < cfg.burst_events:
            # A burst still going on looks like this: wait for it to end before adapting to it.
            alarm.waiting = True
            log.warning("both models degraded: waiting up to %d events for a burst to end", cfg.burst_events)
            return None
        return self._adapt(learner, version)

    def _wait(self, learner: Learner, snap: tuple[Learner, Version] | None) -> Decision | None:
        """After an adapt verdict: roll back when the burst ends, adapt once it has lasted ``burst_events``."""
        alarm, cfg = self._alarm, self.config
        version = snap[1] if snap is not None else None
        recent = alarm.recent.window()
        best = self._best_snapshot(snap, recent=True)
        if best is not None:
            return self._rollback(learner, *best)
        old_world_back = not self._degraded(recent.snapshot_metric, alarm.reference)
        if old_world_back and not self._degraded(recent.live_metric, alarm.reference):
            return self._dismiss(version, recent, "the anomaly is over and the live model held up")
        if alarm.after_events < cfg.burst_events:
            return None
        if old_world_back:
            return self._dismiss(version, recent, "the snapshot is right again and not clearly better")
        return self._adapt(learner, version)

    # ------------------------------------------------------------- criteria
    @property
    def _metric_name(self) -> str:
        return "accuracy" if self.task == "classification" else "rmse"

    def _snapshot_clearly_better(self, ev: PairedEvidence) -> bool:
        live, snap = ev.live_metric, ev.snapshot_metric
        if self.task == "classification":
            margin_ok = snap - live >= self.config.rollback_margin
        else:
            margin_ok = snap <= live * (1 - self.config.rollback_margin)
        return margin_ok and ev.p_snapshot_better() < self.config.significance

    def _degraded(self, live: float, reference: float) -> bool:
        if math.isnan(reference):
            return False  # no level before the alarm to have fallen from
        if self.task == "classification":
            return reference - live >= self.config.degradation
        return live >= reference * (1 + self.config.degradation)

    def _load_older(self, learner: Learner, snap: tuple[Learner, Version] | None) -> None:
        """Up to ``lookback_versions`` validated versions before the snapshot, ready to predict.

        If a corrupted version was validated before the alarm (the damage
        was slow to show), the version before it is the one to go back to.
        """
        self._older = {}
        if snap is None or self.registry is None or self.config.lookback_versions == 0:
            return
        try:
            for version in self.registry.history(limit=200):
                if len(self._older) >= self.config.lookback_versions:
                    break
                if version.number >= snap[1].number or version.status != "validated":
                    continue
                older = learner.clone()
                try:
                    older.load_state_dict(self.registry.load_state(version.number))
                except SchemaMismatchError as exc:
                    # Another model shape was validated before (the registry is shared with
                    # an earlier run): it cannot score these batches, so it is no option.
                    log.warning(
                        "validated version %d does not fit this learner; not compared: %s",
                        version.number,
                        exc,
                    )
                    continue
                self._older[version.number] = (older, version)
        except (RegistryError, ConfigError) as exc:
            log.warning("older validated versions are not compared (%s)", exc)

    def _best_snapshot(self, snap: tuple[Learner, Version] | None, *, recent: bool = False):
        """``(learner, version, evidence)`` of the newest validated version clearly better than live, or None.

        On the evidence window, or with ``recent`` on the latest batches.
        """
        alarm = self._alarm
        options = []
        if snap is not None:
            options.append((snap[0], snap[1], alarm.recent.window() if recent else alarm.evidence))
        for n, ev in alarm.older.items():
            if n in self._older:
                options.append((*self._older[n], alarm.recent_older[n].window() if recent else ev))
        # The current version first, then older ones newest first: an older
        # version replaces a current one only when the current one is no cure.
        options[1:] = sorted(options[1:], key=lambda o: -o[1].number)
        return next((o for o in options if self._snapshot_clearly_better(o[2])), None)

    def _evidence(self, ev: PairedEvidence | None = None) -> dict:
        alarm = self._alarm
        ev = ev or alarm.evidence
        return {
            "metric": self._metric_name,
            "live": _num(ev.live_metric),
            "snapshot": _num(ev.snapshot_metric),
            "reference": _num(alarm.reference),
            "p_snapshot_better": ev.p_snapshot_better(),
            "events": ev.n,
            "batches": ev.batches,
            "window": dict(ev.offsets),
            "alarm": alarm.signal,
            "alarm_window": alarm.offsets,
            "snapshot_version": alarm.snapshot_version,
            "paired": ev.to_dict(),
            "older_versions": {
                str(n): {"snapshot": _num(o.snapshot_metric), "p_snapshot_better": o.p_snapshot_better()}
                for n, o in alarm.older.items()
                if o.n
            },
            "thresholds": {
                "rollback_margin": self.config.rollback_margin,
                "significance": self.config.significance,
                "degradation": self.config.degradation,
            },
            **(alarm.wait_details() if alarm.waiting else {}),
        }

    # ------------------------------------------------------------ decisions
    def _rollback(
        self, learner: Learner, snap_learner: Learner, version: Version, ev: PairedEvidence
    ) -> Decision:
        evidence = self._evidence(ev)
        discarded = int(learner.n_learned) - int(snap_learner.n_learned)
        learner.load_state_dict(snap_learner.state_dict())
        evidence.update(automatic=True, discarded_events=discarded, to=version.number)
        reason = (
            f"validated v{version.number} clearly better than the live model: {self._metric_name} "
            f"{_fmt(evidence['snapshot'])} vs {_fmt(evidence['live'])} on {evidence['events']} events "
            f"(p={evidence['p_snapshot_better']:.2g}); live model rolled back"
        )
        self._record_rollback(version, reason, evidence)
        return self._decided(Decision("rollback", reason, evidence, version))

    def _record_rollback(self, version: Version, reason: str, evidence: dict) -> None:
        """One ``rollback`` audit event; the pointer moves back only if it left the snapshot."""
        if self.registry is None:
            return
        try:
            pointer, _ = self.registry.pointer()
            if pointer is not None and pointer != version.number:
                self.registry.rollback(
                    to=version.number, reason=reason, details={**evidence, "pointer_moved": True}
                )
                return
        except RegistryError as exc:
            log.warning("could not move the registry pointer back to v%d: %s", version.number, exc)
            evidence = {**evidence, "pointer_error": str(exc)}
        self._audit("rollback", version.number, reason, {**evidence, "from": None, "pointer_moved": False})

    def _adapt(self, learner: Learner, version: Version | None) -> Decision:
        evidence = self._evidence()
        adaptable = isinstance(learner, Adaptable)  # on a drift decision only: rare, not per batch
        changes = (
            learner.adapt(ewc_factor=self.config.ewc_factor, replay_refresh=self.config.replay_refresh)
            if adaptable
            else {}
        )
        if adaptable and self.config.plasticity_events:
            # This batch is the first learned with the raised plasticity: the period starts with it.
            self._plasticity_until = self._batch_start + self.config.plasticity_events
        evidence.update(changes=json_plain(changes), plasticity_events=self.config.plasticity_events)
        reason = (
            f"both models degraded ({self._metric_name} live {_fmt(evidence['live'])}, snapshot "
            f"{_fmt(evidence['snapshot'])}, before the alarm {_fmt(evidence['reference'])}): the world changed; "
            f"plasticity raised" + ("" if changes else " (this learner has no plasticity levers)")
        )
        self._audit("adapt", None if version is None else version.number, reason, evidence)
        if self.config.request_retrain:
            details = {
                "reason": "drift: the world changed",
                "evidence_window": evidence["window"],
                "alarm_window": evidence["alarm_window"],
                "live": evidence["live"],
                "reference": evidence["reference"],
            }
            self._audit("retrain_request", None, "the drift policy asks for a full retrain", details)
            self.counts["retrain_request"] += 1
            if self.on_retrain_request is not None:
                self.on_retrain_request(details)
        self._level.clear()  # the old level belongs to the old world
        return self._decided(Decision("adapt", reason, evidence, version))

    def _dismiss(self, version: Version | None, ev: PairedEvidence | None = None, why: str = "") -> Decision:
        evidence = self._evidence(ev)
        why = why or "the snapshot is not clearly better and the live model has not degraded"
        reason = (
            f"no action: {why} ({self._metric_name} {_fmt(evidence['live'])} vs "
            f"{_fmt(evidence['reference'])} before the alarm)"
        )
        self._audit("drift_dismissed", None if version is None else version.number, reason, evidence)
        return self._decided(Decision("drift_dismissed", reason, evidence, version))

    def _decided(self, decision: Decision) -> Decision:
        log.warning("drift decision: %s -- %s", decision.kind, decision.reason)
        self.counts[decision.kind] += 1
        self.last_decision = decision
        self._alarm = None
        self._older = {}
        # After a rollback the detectors re-arm at once: a corrupt burst longer
        # than the evidence window corrupts the restored model again, and that
        # deserves its own rollback. Adapting and dismissing cool down: one
        # change of the world, one decision.
        cooldown = 0 if decision.kind == "rollback" else self.config.cooldown_events
        self._cooldown_until = self._batch_start + cooldown  # in events, from the decision batch on
        self.monitor.reset()  # the next alarm is about the next change
        return decision

    def _maybe_restore_plasticity(self, learner: Learner) -> None:
        if self._plasticity_until is not None and self._batch_start >= self._plasticity_until:
            changes = learner.restore_plasticity() if isinstance(learner, Adaptable) else {}
            log.info("drift adaptation over: plasticity restored %s", changes)
            self._plasticity_until = None

    def _snapshot(self, learner: Learner) -> tuple[Learner, Version] | None:
        return None if self.snapshot_provider is None else self.snapshot_provider(learner)

    # ---------------------------------------------------------------- audit
    def _audit(self, kind: str, version: int | None, reason: str, details: Mapping[str, Any]) -> None:
        self._outbox.append(AuditEvent(kind, version, reason=reason, details=details).to_dict())
        self._flush_outbox()

    def _flush_outbox(self) -> None:
        if self.registry is None:
            self._outbox.clear()
            return
        while self._outbox:
            doc = self._outbox[0]
            try:
                self.registry.record_event(AuditEvent.from_dict(doc))
            except RegistryError as exc:
                log.warning(
                    "audit event %s waits in the outbox (%d queued): %s", doc["kind"], len(self._outbox), exc
                )
                return
            self._outbox.pop(0)

    # ------------------------------------------------------- snapshot/resume
    def snapshot(self) -> dict:
        """Plain data for the checkpoint: detectors, open alarm, counters, outbox."""
        alarm = self._alarm
        return {
            "monitor": self.monitor.snapshot(),
            "level": self._level.snapshot(),
            "batches": self._batches,
            "events": self._events,
            "cooldown_until_events": self._cooldown_until,
            "plasticity_until_events": self._plasticity_until,
            "counts": dict(self.counts),
            "outbox": list(self._outbox),
            "alarm": None if alarm is None else alarm.to_dict(),
        }

    def restore(self, state: Mapping[str, Any] | None) -> None:
        if not state:
            return
        self.monitor.restore(state.get("monitor"))
        self._level.restore(state.get("level") or [])
        self._batches = int(state.get("batches", 0))
        if "events" in state:
            self._events = int(state["events"])
            self._cooldown_until = int(state.get("cooldown_until_events", 0))
            until = state.get("plasticity_until_events")
            self._plasticity_until = None if until is None else int(until)
        else:
            # A state from before the periods were counted in events (only the batch-based
            # ``cooldown_until`` / ``plasticity_until``): batch numbers cannot be turned into
            # events, so the periods restart from safe values. The event count starts at 0 (the
            # warm-up runs once more: detectors wait ``warmup_events`` events), no cool-down, and
            # raised plasticity, if any, is restored on the next batch.
            self._events = 0
            self._cooldown_until = 0
            self._plasticity_until = None if state.get("plasticity_until") is None else 0
        self.counts.update({k: int(v) for k, v in (state.get("counts") or {}).items()})
        self._outbox = [dict(d) for d in state.get("outbox") or []]
        a = state.get("alarm")
        self._alarm = None if a is None else OpenAlarm.from_dict(a, self.config.min_evidence_events)

    def __repr__(self) -> str:
        return f"DriftPolicy({self.monitor!r}, {self.config!r})"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _num(x: float) -> float | None:
    """JSON has no NaN: an undefined metric is null."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)
