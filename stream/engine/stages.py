"""The batch step as stages: each does one job on a :class:`~stream.engine.batch_context.BatchContext`.

The engine runs, for every micro-batch, the stages :func:`batch_stages` chose
once at start -- only those for parts that are configured, so a bare engine
(no observer, policy, reconciler, gate or ledger) runs just score and learn:

1. :class:`ScoreStage` -- test, then train: the live model predicts the batch
   it has not learned yet; the run's accuracy / squared error count it.
2. :class:`ObserveStage` -- the observer sees the batch and that prediction.
3. :class:`DriftStage` -- the drift policy looks at it and may decide (a
   rollback also resets the gate); a decision asks for a checkpoint.
4. :class:`ReconcileStage` -- a caught-up retrain meets the live model here
   and may be adopted: learner and ledger swapped, checkpoint asked for.
5. :class:`GateStage` -- when due and not held, the model *before* learning
   this batch is published and validated on it (its unseen holdout).
6. :class:`ConsolidateStage` -- a version the gate just validated becomes the
   learner's EWC anchor (still before learning: the state that proved itself).
7. :class:`LearnStage` -- the learner learns the batch; :class:`LedgerStage`
   records its ids; :class:`GateTallyStage` adds it to the next candidate's range.
8. :class:`RehearseStage` -- when the engine has time to spare, the learner
   takes its rehearsal steps on the batch it just learned (never while a
   drift alarm is open: the batch may be a corrupt burst).
9. :class:`ObserveOutcomeStage` -- the observer hears what happened.

With a learner that tests-then-trains in chunks
(:class:`~learners.base.ChunkedPrequential` with ``score_chunk`` set, and
prequential scoring on), score and learn fuse into :class:`ScoreLearnStage`
at the learn stage's place, and the stages that read the prediction move
after it::

    reconcile -> gate -> consolidate -> score+learn -> ledger -> tally
    -> observe -> drift -> rehearse -> observe outcome

The gate and the reconciler still judge the model *before* the batch, with
their own prediction of the whole batch (``ctx.prediction`` is ``None`` for
them), and the gate still holds while the policy's alarm is open. The drift
policy sees the chunked predictions of this batch right after it is learned:
a decision then acts before the next batch is learned (a rollback discards
this batch with the rest, after the gate's tally, so the gate's ranges stay
the restored version's), and the alarm and decision are reported with the
batch that caused them.

Examples
--------
>>> from learners.neural.learner import TorchLearner
>>> from stream.engine.progress import RunStats
>>> from stream.testing.doubles import make_batch
>>> live, stats = LiveModel(TorchLearner(n_features=3)), RunStats()
>>> stages = batch_stages(live, stats, prequential=True)
>>> [type(s).__name__ for s in stages]
['ScoreStage', 'LearnStage']
>>> ctx = BatchContext(make_batch(40, n_features=3), started=0.0)
>>> for stage in stages:
...     stage.run(ctx)
>>> stats.predicted, stats.events_learned, ctx.report.n_samples
(40, 40, 40)
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from learners.base import ChunkedPrequential, Consolidating, LearnReport, Rehearsing
from stream.core import metrics
from stream.engine.batch_context import BatchContext, LiveModel, ScoredRows
from stream.engine.ledger import LearnLedger
from stream.engine.observer import BatchObserver, BatchOutcome
from stream.engine.oversight import Oversight
from stream.engine.progress import RunStats
from stream.engine.reconcile_port import Adoption, EngineView, Reconciler

if TYPE_CHECKING:
    from drift.policy import DriftPolicy
    from stream.engine.gate import ValidationGate

__all__ = [
    "BatchContext",
    "ConsolidateStage",
    "DriftStage",
    "GateStage",
    "GateTallyStage",
    "LearnStage",
    "LedgerStage",
    "LiveModel",
    "ObserveOutcomeStage",
    "ObserveStage",
    "ReconcileStage",
    "ScoreLearnStage",
    "ScoreStage",
    "Stage",
    "batch_stages",
    "chunked_learner",
    "connect_drift_policy",
]


class Stage(Protocol):
    def run(self, ctx: BatchContext) -> None:
        """Do this stage's one job on the batch in ``ctx``; record what it did there."""
        ...


class ScoreStage:
    """Prequential scoring: predict before learning, count hits (classes) or squared error (values)."""

    __slots__ = ("live", "stats")

    def __init__(self, live: LiveModel, stats: RunStats) -> None:
        self.live, self.stats = live, stats

    def run(self, ctx: BatchContext) -> None:
        batch = ctx.batch
        y = batch.y
        pred = self.live.learner.predict_batch(batch.X)
        count_predictions(self.stats, pred, y)
        ctx.prediction = pred


def count_predictions(stats: RunStats, pred: np.ndarray, y: np.ndarray) -> None:
    """The run's prequential counters: hits (classes) or squared error (values)."""
    if metrics.is_classification(y):
        stats.observe_predictions(correct=metrics.count_correct(pred, y), total=len(y))
    else:
        stats.observe_predictions(total=len(y), squared_error=metrics.squared_error(pred, y))


class ScoreLearnStage:
    """Chunked test-then-train: each chunk predicted by the model updated on the chunks before it, then learned.

    Counts the predictions as :class:`ScoreStage` does and the learning as
    :class:`LearnStage` does; ``proba`` keeps the class probabilities for an
    observer (its log loss).
    """

    __slots__ = ("live", "proba", "stats")

    def __init__(self, live: LiveModel, stats: RunStats, *, proba: bool = False) -> None:
        self.live, self.stats, self.proba = live, stats, proba

    def run(self, ctx: BatchContext) -> None:
        batch = ctx.batch
        out = self.live.learner.learn_prequential(batch.X, batch.y, proba=self.proba)
        count_predictions(self.stats, out.prediction, batch.y)
        count_learned(self.stats, out.report)
        ctx.prediction, ctx.proba, ctx.report = out.prediction, out.proba, out.report


class ObserveStage:
    """The observer's look at the batch before it is learned (its time is not the engine's).

    ``chunked``: it runs after :class:`ScoreLearnStage`, and the observer
    scores the batch through the chunked predictions (:class:`ScoredRows`),
    not through the learner that has learned it since.
    """

    __slots__ = ("chunked", "live", "observer")

    def __init__(self, observer: BatchObserver, live: LiveModel, *, chunked: bool = False) -> None:
        self.observer, self.live, self.chunked = observer, live, chunked

    def run(self, ctx: BatchContext) -> None:
        t = time.perf_counter()
        scorer = ScoredRows(ctx.prediction, ctx.proba) if self.chunked else self.live.learner
        self.observer.before_learn(ctx.batch, ctx.prediction, scorer)
        ctx.observed += time.perf_counter() - t


class DriftStage:
    """The drift policy's look at the batch: maybe an alarm, maybe a decision that changes the learner."""

    __slots__ = ("gate", "live", "policy", "request_checkpoint")

    def __init__(
        self,
        policy: DriftPolicy,
        live: LiveModel,
        gate: ValidationGate | None,
        request_checkpoint: Callable[[], None],
    ) -> None:
        self.policy, self.live, self.gate = policy, live, gate
        self.request_checkpoint = request_checkpoint

    def run(self, ctx: BatchContext) -> None:
        policy, learner = self.policy, self.live.learner
        pred = ctx.prediction
        if pred is None:
            pred = learner.predict_batch(ctx.batch.X)
        decision = policy.observe(learner, ctx.batch, pred)
        ctx.alarm = policy.new_alarm
        if decision is None:
            ctx.prediction = pred
            ctx.held = policy.holds_validation
            return
        if decision.kind == "rollback" and self.gate is not None and decision.version is not None:
            self.gate.rolled_back(decision.version)
        ctx.decision, ctx.held = decision, True
        ctx.prediction = None  # the learner may have changed
        self.request_checkpoint()  # a decision changes the learner: durable at the next loop turn


class ReconcileStage:
    """A caught-up retrain's head-to-head with the live model on this batch; adopt it if it won."""

    __slots__ = ("gate", "live", "reconciler", "request_checkpoint", "view")

    def __init__(
        self,
        reconciler: Reconciler,
        view: EngineView,
        live: LiveModel,
        gate: ValidationGate | None,
        request_checkpoint: Callable[[], None],
    ) -> None:
        self.reconciler, self.view, self.live, self.gate = reconciler, view, live, gate
        self.request_checkpoint = request_checkpoint

    def run(self, ctx: BatchContext) -> None:
        if ctx.decision is not None:
            return  # the policy just changed the learner: no fair comparison on this batch
        adoption = self.reconciler.before_learn(self.view, ctx.batch, ctx.prediction)
        if adoption is not None:
            self.adopt(adoption)
            ctx.version, ctx.held, ctx.prediction = adoption.version, True, None

    def adopt(self, adoption: Adoption) -> None:
        """Swap in the reconciled retrain (already published and validated) before this batch is learned."""
        live = self.live
        live.learner = adoption.learner
        if live.ledger is not None and adoption.learned_ids is not None:
            # The ledger describes the model: now the adopted one's learned ids.
            live.ledger = LearnLedger()
            live.ledger.record(np.asarray(adoption.learned_ids))
        if self.gate is not None:
            self.gate.adopted(adoption.version, adoption.learner)
        self.request_checkpoint()  # durable at the next loop turn


class GateStage:
    """When the gate is due and nothing holds it: publish the model before it learns this batch, gate it.

    ``policy``: a drift policy whose open alarm holds the gate, when no
    drift stage ran before this one (chunked test-then-train).
    """

    __slots__ = ("gate", "live", "policy", "schema")

    def __init__(
        self,
        gate: ValidationGate,
        live: LiveModel,
        schema: Callable[[], dict],
        policy: DriftPolicy | None = None,
    ) -> None:
        self.gate, self.live, self.schema, self.policy = gate, live, schema, policy

    def run(self, ctx: BatchContext) -> None:
        if ctx.held or (self.policy is not None and self.policy.holds_validation) or not self.gate.due():
            return
        # Before learning: this batch is the candidate's unseen holdout.
        ctx.version = self.gate.before_learn(self.live.learner, ctx.batch, ctx.prediction, self.schema())


class ConsolidateStage:
    """EWC anchors on a state that just proved itself: the version the gate validated on this batch."""

    __slots__ = ("live",)

    def __init__(self, live: LiveModel) -> None:
        self.live = live

    def run(self, ctx: BatchContext) -> None:
        version = ctx.version
        # A held batch's version is an adopted retrain's, not the gate's: the
        # reconciler already reset the candidate's anchors.
        if version is None or ctx.held or version.status != "validated":
            return
        learner = self.live.learner
        if isinstance(learner, Consolidating):  # only on a validated version: rare, not per batch
            learner.consolidate()


class LearnStage:
    """The live learner learns the batch; the run's counters follow."""

    __slots__ = ("live", "stats")

    def __init__(self, live: LiveModel, stats: RunStats) -> None:
        self.live, self.stats = live, stats

    def run(self, ctx: BatchContext) -> None:
        batch = ctx.batch
        report = self.live.learner.learn_batch(batch.X, batch.y)
        count_learned(self.stats, report)
        ctx.report = report


def count_learned(stats: RunStats, report: LearnReport) -> None:
    """The run's learning counters after one batch."""
    stats.events_learned += report.n_samples
    stats.batches_learned += 1
    stats.last_loss = report.loss


class LedgerStage:
    """Records the ids of the learned batch in the live model's ledger (``--ledger``)."""

    __slots__ = ("live",)

    def __init__(self, live: LiveModel) -> None:
        self.live = live

    def run(self, ctx: BatchContext) -> None:
        self.live.ledger.record(ctx.batch.events.ids)


class GateTallyStage:
    """Tells the gate the batch was learned: it joins the next candidate's offset range."""

    __slots__ = ("gate",)

    def __init__(self, gate: ValidationGate) -> None:
        self.gate = gate

    def run(self, ctx: BatchContext) -> None:
        self.gate.after_learn(ctx.batch)


class RehearseStage:
    """The learner's rehearsal steps when ``spare_time()`` says so and no drift alarm is open."""

    __slots__ = ("live", "policy", "spare_time", "stats")

    def __init__(
        self, live: LiveModel, stats: RunStats, spare_time: Callable[[], bool], policy: DriftPolicy | None
    ) -> None:
        self.live, self.stats, self.spare_time, self.policy = live, stats, spare_time, policy

    def run(self, ctx: BatchContext) -> None:
        if not self.spare_time() or (self.policy is not None and self.policy.holds_validation):
            return  # lagging, or an open alarm's batches may be a corrupt burst: not worth repeating
        self.stats.rehearsal_steps += self.live.learner.rehearse()


class ObserveOutcomeStage:
    """The observer hears what happened to the batch and the engine's time on it."""

    __slots__ = ("observer",)

    def __init__(self, observer: BatchObserver) -> None:
        self.observer = observer

    def run(self, ctx: BatchContext) -> None:
        outcome = BatchOutcome(
            report=ctx.report,
            decision=ctx.decision,
            version=ctx.version,
            alarm=ctx.alarm,
            seconds=time.perf_counter() - ctx.started - ctx.observed,
        )
        self.observer.after_learn(ctx.batch, outcome)


def chunked_learner(learner: object) -> bool:
    """Whether ``learner`` tests-then-trains in chunks (resolved once, when the engine's learner exists).

    >>> from learners.neural.learner import TorchLearner
    >>> chunked_learner(TorchLearner(n_features=2, score_chunk=8)), chunked_learner(TorchLearner(n_features=2))
    (True, False)
    """
    return isinstance(learner, ChunkedPrequential) and learner.score_chunk is not None


def batch_stages(
    live: LiveModel,
    stats: RunStats,
    *,
    prequential: bool,
    oversight: Oversight | None = None,
    view: EngineView | None = None,
    request_checkpoint: Callable[[], None] = lambda: None,
    schema: Callable[[], dict] = dict,
    chunked: bool | None = None,
    spare_time: Callable[[], bool] | None = None,
) -> list[Stage]:
    """The stages for the configured parts, in their order (see the module docstring).

    ``view`` is what ``reconciler`` sees of the engine; ``request_checkpoint``
    and ``schema`` are the engine's. The ledger stage is in when ``live``
    has a ledger now (the engine's ledger is on or off for the whole run).
    ``chunked``: score and learn fused, in chunks (only with ``prequential``);
    ``None`` asks :func:`chunked_learner` of ``live``'s learner.
    ``spare_time``: asked after each batch whether the learner may rehearse
    (:class:`RehearseStage`; only for a :class:`~learners.base.Rehearsing`
    learner); ``None``: no rehearsal.
    """
    parts = oversight or Oversight()
    if chunked is None:
        chunked = chunked_learner(live.learner)
    if chunked and prequential:
        return _chunked_stages(live, stats, parts, view, request_checkpoint, schema, spare_time)
    observer, policy, gate, reconciler = parts.observer, parts.policy, parts.gate, parts.reconciler
    stages: list[Stage] = []
    if prequential:
        stages.append(ScoreStage(live, stats))
    if observer is not None:
        stages.append(ObserveStage(observer, live))
    if policy is not None:
        stages.append(DriftStage(policy, live, gate, request_checkpoint))
    if reconciler is not None:
        stages.append(ReconcileStage(reconciler, view, live, gate, request_checkpoint))
    if gate is not None:
        stages += [GateStage(gate, live, schema), ConsolidateStage(live)]
    stages.append(LearnStage(live, stats))
    if live.ledger is not None:
        stages.append(LedgerStage(live))
    if gate is not None:
        stages.append(GateTallyStage(gate))
    return _finish(stages, live, stats, parts, spare_time)


def _chunked_stages(
    live: LiveModel,
    stats: RunStats,
    parts: Oversight,
    view: EngineView | None,
    request_checkpoint: Callable[[], None],
    schema: Callable[[], dict],
    spare_time: Callable[[], bool] | None,
) -> list[Stage]:
    """The order for chunked test-then-train (see the module docstring)."""
    observer, policy, gate, reconciler = parts.observer, parts.policy, parts.gate, parts.reconciler
    stages: list[Stage] = []
    if reconciler is not None:
        stages.append(ReconcileStage(reconciler, view, live, gate, request_checkpoint))
    if gate is not None:
        stages += [GateStage(gate, live, schema, policy), ConsolidateStage(live)]
    stages.append(ScoreLearnStage(live, stats, proba=observer is not None))
    if live.ledger is not None:
        stages.append(LedgerStage(live))
    if gate is not None:
        stages.append(GateTallyStage(gate))
    if observer is not None:
        stages.append(ObserveStage(observer, live, chunked=True))
    if policy is not None:
        stages.append(DriftStage(policy, live, gate, request_checkpoint))
    return _finish(stages, live, stats, parts, spare_time)


def _finish(
    stages: list[Stage],
    live: LiveModel,
    stats: RunStats,
    parts: Oversight,
    spare_time: Callable[[], bool] | None,
) -> list[Stage]:
    """The stages every order ends with: rehearse (if the learner rehearses), then the outcome."""
    if spare_time is not None and isinstance(live.learner, Rehearsing):
        stages.append(RehearseStage(live, stats, spare_time, parts.policy))
    if parts.observer is not None:
        stages.append(ObserveOutcomeStage(parts.observer))
    return stages


def connect_drift_policy(
    policy: DriftPolicy | None, gate: ValidationGate | None = None, reconciler: Reconciler | None = None
) -> None:
    """Wire a drift policy to the engine's other parts, leaving whatever it was given explicitly.

    Its retrain requests go to ``reconciler``; its snapshot is the gate's
    validated version, and its audit trail goes to the registry the gate
    publishes to. Whoever builds an engine with a policy calls this once.

    >>> from drift.detectors import DriftMonitor
    >>> from drift.policy import DriftPolicy
    >>> from drift.testing import ScriptedDetector
    >>> class Retrains:
    ...     def request(self, details=None): print("retrain", details)
    >>> policy = DriftPolicy(DriftMonitor([ScriptedDetector()]))
    >>> connect_drift_policy(policy, gate=None, reconciler=Retrains())
    >>> policy.on_retrain_request({"reason": "drift"})
    retrain {'reason': 'drift'}
    """
    if policy is None:
        return
    if reconciler is not None and policy.on_retrain_request is None:
        policy.on_retrain_request = reconciler.request
    if gate is not None:
        if policy.snapshot_provider is None:
            policy.snapshot_provider = gate.validated
        if policy.registry is None:
            policy.registry = gate.registry
