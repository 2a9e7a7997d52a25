"""The batch step's stages, each alone on a tiny batch; their choice and order; checkpoint requests; the clock."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from drift.detectors import DriftMonitor
from drift.policy import Decision, DriftPolicy
from drift.policy_config import PolicyConfig
from drift.testing import ScriptedDetector
from learners.base import LearnReport
from serving.registry.versions import Version
from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.clock import DataClock, ManualClock, SystemClock
from stream.core.poll import as_columns
from stream.engine.checkpoint import CheckpointStore
from stream.engine.ledger import LearnLedger
from stream.engine.loop import Engine, EngineConfig
from stream.engine.oversight import Oversight
from stream.engine.progress import RunStats
from stream.engine.reconcile_port import Adoption
from stream.engine.stages import (
    BatchContext,
    ConsolidateStage,
    DriftStage,
    GateStage,
    GateTallyStage,
    LearnStage,
    LedgerStage,
    LiveModel,
    ObserveOutcomeStage,
    ObserveStage,
    ReconcileStage,
    ScoreStage,
    batch_stages,
    connect_drift_policy,
)
from stream.testing.doubles import ListSource, make_batch, make_records
from stream.window.count import CountWindow


# ------------------------------------------------------------------ doubles
class OnesLearner:
    """Predicts 1 for every row; counts what it learned and how often it consolidated."""

    def __init__(self, n_features: int = 3) -> None:
        self.n_features, self.learned, self.consolidations = n_features, 0, 0

    def predict_batch(self, X):
        return np.ones(len(X), dtype=np.int64)

    def learn_batch(self, X, y) -> LearnReport:
        self.learned += len(X)
        return LearnReport(n_samples=len(X), loss=0.5)

    def consolidate(self) -> int:
        self.consolidations += 1
        return 1

    def reset_consolidation(self) -> None:  # with consolidate: the Consolidating capability
        self.consolidations = 0

    def state_dict(self) -> dict:
        return {"learned": self.learned}

    def load_state_dict(self, state: dict) -> None:
        self.learned = state["learned"]


class Calls:
    """Records every method called on it (with arguments); answers from ``returns``."""

    def __init__(self, **returns) -> None:
        self.calls: list[tuple] = []
        self.returns = returns

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def method(*args, **kwargs):
            self.calls.append((name, *args))
            return self.returns.get(name)

        return method

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


def ctx_for(n: int = 8, **fields) -> BatchContext:
    ctx = BatchContext(make_batch(n, n_features=3), started=0.0)
    for name, value in fields.items():
        setattr(ctx, name, value)
    return ctx


def version(number: int = 3, status: str = "validated") -> Version:
    return Version(number=number, status=status, offsets={"test:0": (0, 9)})


# ------------------------------------------------------------------- stages
def test_score_counts_hits_for_classes_and_keeps_the_prediction():
    stats = RunStats()
    ctx = ctx_for(8)
    ScoreStage(LiveModel(OnesLearner()), stats).run(ctx)
    assert stats.predicted == 8 and stats.correct == int((ctx.batch.y == 1).sum())
    assert ctx.prediction.tolist() == [1] * 8


def test_score_counts_squared_error_for_values():
    stats = RunStats()
    batch = make_batch(4, n_features=3)
    targets = np.array([0.0, 1.0, 3.0, 1.0], dtype=np.float32)  # regression labels
    ctx = BatchContext(replace(batch, events=replace(batch.events, y=targets)), started=0.0)
    ScoreStage(LiveModel(OnesLearner()), stats).run(ctx)
    assert stats.predicted == 4 and stats.squared_error == pytest.approx(1 + 0 + 4 + 0)
    assert stats.correct == 0


def test_observe_hands_the_batch_prediction_and_learner_and_times_itself():
    observer, learner = Calls(), OnesLearner()
    ctx = ctx_for(prediction=np.zeros(8))
    ObserveStage(observer, LiveModel(learner)).run(ctx)
    (name, batch, pred, seen) = observer.calls[0]
    assert name == "before_learn" and batch is ctx.batch and pred is ctx.prediction and seen is learner
    assert ctx.observed > 0


def test_drift_reports_a_new_alarm_once_and_holds_validation_while_collecting():
    policy = DriftPolicy(DriftMonitor([ScriptedDetector([2])]), PolicyConfig(warmup_events=0))
    asked = []
    stage = DriftStage(policy, LiveModel(OnesLearner()), None, lambda: asked.append(1))
    first, second, third = ctx_for(), ctx_for(), ctx_for()
    stage.run(first)
    assert first.alarm is None and not first.held and first.prediction is not None  # predicted for the policy
    stage.run(second)
    assert second.alarm["detector"] == "scripted" and second.held and second.decision is None
    stage.run(third)
    assert third.alarm is None and third.held  # still collecting evidence: no new alarm
    assert asked == []


def test_drift_decision_asks_for_a_checkpoint_drops_the_prediction_and_a_rollback_tells_the_gate():
    v = version()
    rollback = Decision("rollback", "snapshot better", {}, v)
    policy = Calls(observe=rollback)
    policy.new_alarm, policy.holds_validation = None, False
    gate, asked = Calls(), []
    ctx = ctx_for(prediction=np.zeros(8))
    DriftStage(policy, LiveModel(OnesLearner()), gate, lambda: asked.append(1)).run(ctx)
    assert ctx.decision is rollback and ctx.held and ctx.prediction is None
    assert gate.calls == [("rolled_back", v)] and asked == [1]


def test_reconcile_adopts_a_winner_swapping_learner_and_ledger_and_telling_the_gate():
    v, winner = version(7), OnesLearner()
    reconciler = Calls(before_learn=Adoption(winner, v, ["a", "b"]))
    ledger = LearnLedger()
    ledger.record(np.array(["x"]))
    live, gate, asked = LiveModel(OnesLearner(), ledger), Calls(), []
    ctx = ctx_for(prediction=np.zeros(8))
    ReconcileStage(reconciler, "the view", live, gate, lambda: asked.append(1)).run(ctx)
    assert reconciler.calls[0][:2] == ("before_learn", "the view")
    assert live.learner is winner and live.ledger.ids() == {"a", "b"}
    assert gate.calls == [("adopted", v, winner)] and asked == [1]
    assert ctx.version is v and ctx.held and ctx.prediction is None


def test_reconcile_skips_a_batch_the_policy_decided_on_and_keeps_the_live_model_without_adoption():
    reconciler, live = Calls(), LiveModel(OnesLearner())
    ReconcileStage(reconciler, None, live, None, lambda: None).run(ctx_for(decision="decided"))
    assert reconciler.calls == []
    learner = live.learner
    ctx = ctx_for()
    ReconcileStage(reconciler, None, live, None, lambda: None).run(ctx)
    assert reconciler.names() == ["before_learn"] and live.learner is learner and not ctx.held


def test_gate_publishes_the_model_before_learning_only_when_due_and_not_held():
    v, learner = version(), OnesLearner()
    gate = Calls(due=True, before_learn=v)
    stage = GateStage(gate, LiveModel(learner), lambda: {"n_features": 3})
    held = ctx_for(held=True)
    stage.run(held)
    assert gate.calls == [] and held.version is None
    ctx = ctx_for(prediction=np.zeros(8))
    stage.run(ctx)
    assert gate.calls[-1] == ("before_learn", learner, ctx.batch, ctx.prediction, {"n_features": 3})
    assert ctx.version is v and learner.learned == 0
    gate.returns["due"] = False
    stage.run(later := ctx_for())
    assert gate.names() == ["due", "before_learn", "due"] and later.version is None


@pytest.mark.parametrize(
    ("status", "held", "expected"),
    [("validated", False, 1), ("rejected", False, 0), ("validated", True, 0)],
    ids=["validated-by-gate", "rejected", "adopted-retrain"],
)
def test_consolidate_anchors_only_on_a_version_the_gate_validated(status, held, expected):
    learner = OnesLearner()
    ConsolidateStage(LiveModel(learner)).run(ctx_for(version=version(status=status), held=held))
    ConsolidateStage(LiveModel(learner)).run(ctx_for())  # no version: nothing to anchor on
    assert learner.consolidations == expected


def test_learn_updates_the_counters_and_the_context():
    learner, stats = OnesLearner(), RunStats()
    ctx = ctx_for(8)
    LearnStage(LiveModel(learner), stats).run(ctx)
    assert learner.learned == 8 and ctx.report.n_samples == 8
    assert (stats.events_learned, stats.batches_learned, stats.last_loss) == (8, 1, 0.5)


def test_ledger_records_the_learned_ids_and_the_gate_tally_hears_of_the_batch():
    live = LiveModel(OnesLearner(), LearnLedger())
    ctx = ctx_for(3)
    LedgerStage(live).run(ctx)
    assert live.ledger.ids() == {"e0", "e1", "e2"}
    gate = Calls()
    GateTallyStage(gate).run(ctx)
    assert gate.calls == [("after_learn", ctx.batch)]


def test_observe_outcome_reports_what_the_stages_did_without_the_observers_own_time():
    observer, v = Calls(), version()
    ctx = ctx_for(version=v, alarm={"detector": "adwin"}, report=LearnReport(8), observed=100.0)
    ctx.started = time.perf_counter()
    ObserveOutcomeStage(observer).run(ctx)
    (name, batch, outcome) = observer.calls[0]
    assert name == "after_learn" and batch is ctx.batch
    assert outcome.version is v and outcome.alarm == {"detector": "adwin"} and outcome.report.n_samples == 8
    assert outcome.decision is None and -100 < outcome.seconds < -99  # the observer's 100 s are taken off


# ------------------------------------------------------------ choice, order
def names(stages) -> list[str]:
    return [type(s).__name__ for s in stages]


def test_a_bare_engine_runs_only_score_and_learn():
    assert names(batch_stages(LiveModel(), RunStats(), prequential=True)) == ["ScoreStage", "LearnStage"]
    assert names(batch_stages(LiveModel(), RunStats(), prequential=False)) == ["LearnStage"]


def test_every_part_configured_gives_every_stage_in_order():
    stages = batch_stages(
        LiveModel(OnesLearner(), LearnLedger()),
        RunStats(),
        prequential=True,
        oversight=Oversight(observer=Calls(), policy=Calls(), gate=Calls(), reconciler=Calls()),
        view=None,
    )
    assert names(stages) == [
        "ScoreStage",
        "ObserveStage",
        "DriftStage",
        "ReconcileStage",
        "GateStage",
        "ConsolidateStage",
        "LearnStage",
        "LedgerStage",
        "GateTallyStage",
        "ObserveOutcomeStage",
    ]


def test_connect_drift_policy_wires_what_was_not_given_and_keeps_what_was():
    gate, reconciler = Calls(), Calls()
    gate.registry, gate.validated = "the registry", "gate.validated"
    policy = DriftPolicy(DriftMonitor([ScriptedDetector()]))
    connect_drift_policy(policy, gate, reconciler)
    assert policy.snapshot_provider == "gate.validated" and policy.registry == "the registry"
    policy.on_retrain_request({"reason": "drift"})
    assert reconciler.calls == [("request", {"reason": "drift"})]
    own = DriftPolicy(DriftMonitor([ScriptedDetector()]), registry="mine", on_retrain_request=print)
    connect_drift_policy(own, gate, reconciler)
    assert own.registry == "mine" and own.on_retrain_request is print
    connect_drift_policy(None, gate, reconciler)  # no policy: nothing to wire


# ------------------------------------------------- checkpoints and the clock
def engine_for(tmp_path, *, clock=None, **config) -> Engine:
    return Engine(
        source=ListSource(make_records(100, n_features=3), batch_size=10),
        codec=JsonCodec(CodecConfig(n_features=3)),
        window=CountWindow(10),
        learner_builder=OnesLearner,
        store=CheckpointStore(tmp_path / "ckpt"),
        config=EngineConfig(poll_timeout_ms=0, **config),
        clock=clock,
    )


def feed_one_poll(engine: Engine) -> None:
    engine.feed(as_columns(engine.source.poll(0, 10)))


def test_without_cadences_an_engine_checkpoints_only_when_asked_and_at_the_end(tmp_path):
    engine = engine_for(tmp_path, checkpoint_every_batches=None, checkpoint_every_seconds=None)
    engine.start()
    for _ in range(3):
        feed_one_poll(engine)
    assert engine.stats.checkpoints == 0
    engine.request_checkpoint()
    assert engine.stats.checkpoints == 0  # durable at the end of the next loop turn, not mid-batch
    feed_one_poll(engine)
    assert engine.stats.checkpoints == 1
    feed_one_poll(engine)
    assert engine.stats.checkpoints == 1  # the request was served once
    summary = engine.finish("done")
    assert summary.checkpoints_this_run == 2 and summary.events_learned == 50


def test_the_checkpoint_cadence_in_seconds_reads_the_injected_clock(tmp_path):
    clock = ManualClock()
    engine = engine_for(tmp_path, clock=clock, checkpoint_every_batches=None, checkpoint_every_seconds=5.0)
    engine.start()
    feed_one_poll(engine)
    clock.advance(4_999)
    feed_one_poll(engine)
    assert engine.stats.checkpoints == 0
    clock.advance(1)
    feed_one_poll(engine)
    assert engine.stats.checkpoints == 1
    feed_one_poll(engine)
    assert engine.stats.checkpoints == 1  # the timer restarted at that checkpoint
    engine.close()


def test_the_batch_cadence_still_counts_batches(tmp_path):
    engine = engine_for(
        tmp_path, clock=ManualClock(), checkpoint_every_batches=2, checkpoint_every_seconds=None
    )
    engine.start()
    for _ in range(5):
        feed_one_poll(engine)
    assert engine.stats.checkpoints == 2
    engine.close()


def test_every_clock_has_a_monotonic_reading():
    manual, data = ManualClock(100), DataClock(100)
    data.observe(250)
    manual.advance(50)
    assert manual.monotonic_ms() == 150 and data.monotonic_ms() == 250
    system = SystemClock()
    first = system.monotonic_ms()
    assert system.monotonic_ms() >= first
