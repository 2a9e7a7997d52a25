"""Chunked test-then-train: the learner's pass over a batch, and how the engine's stages use it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drift.detectors import DriftMonitor
from drift.policy import DriftPolicy
from drift.policy_config import PolicyConfig
from drift.testing import ScriptedDetector
from learners.base import ChunkedPrequential
from learners.choice import LearnerChoice
from learners.neural.learner import TorchLearner
from learners.state_io import dumps_state, loads_state
from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.errors import ConfigError
from stream.engine.batch_context import ScoredRows
from stream.engine.checkpoint import CheckpointStore
from stream.engine.ledger import LearnLedger
from stream.engine.loop import Engine, EngineConfig
from stream.engine.oversight import Oversight
from stream.engine.progress import RunStats
from stream.engine.stages import BatchContext, GateStage, LiveModel, batch_stages
from stream.testing.doubles import ListSource, make_batch, make_records
from stream.window.count import CountWindow


def data(n: int = 256, d: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)


def learner(**kw) -> TorchLearner:
    return TorchLearner(
        "mlp", n_features=4, lr=0.05, device="cpu", seed=3, model_kwargs={"hidden": (8,)}, **kw
    )


def same_weights(a: TorchLearner, b: TorchLearner) -> bool:
    sa, sb = a.module.state_dict(), b.module.state_dict()
    return all(np.array_equal(sa[k].numpy(), sb[k].numpy()) for k in sa)


# ------------------------------------------------------------------ learner
@pytest.mark.parametrize("chunk", [None, 256, 1000])
def test_one_chunk_is_exactly_predict_then_learn(chunk):
    X, y = data()
    fused, plain = learner(score_chunk=chunk), learner()
    out = fused.learn_prequential(X, y)
    expected = plain.predict_batch(X)
    plain.learn_batch(X, y)
    assert np.array_equal(out.prediction, expected)
    assert same_weights(fused, plain) and fused.n_learned == plain.n_learned == 256


@pytest.mark.parametrize("extra", [{}, {"minibatch_size": 8, "steps_per_batch": 2}])
def test_each_chunk_is_predicted_by_the_model_updated_on_the_chunks_before_it(extra):
    X, y = data(100)
    fused, manual = learner(score_chunk=32, **extra), learner(**extra)
    out = fused.learn_prequential(X, y)
    expected = []
    # The batch's input statistics first (its features have all arrived; no label is used),
    # then per chunk: predict, learn without feeding the statistics again.
    manual.update_scalers(torch.from_numpy(X))
    for start in range(0, 100, 32):  # the last chunk has 4 rows
        expected.append(manual.predict_batch(X[start : start + 32]))
        manual.learn_tensors(
            *manual.checked_tensors(X[start : start + 32], y[start : start + 32]), scaled=True
        )
    assert np.array_equal(out.prediction, np.concatenate(expected))
    assert same_weights(fused, manual) and fused.n_learned == 100
    assert out.report.n_samples == 100 and out.report.loss_value() > 0


def test_probabilities_back_the_predictions_and_regression_works():
    X, y = data(90)
    out = learner(score_chunk=16).learn_prequential(X, y, proba=True)
    assert out.proba.shape == (90, 2) and np.allclose(out.proba.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(out.proba.argmax(axis=1), out.prediction)
    assert learner(score_chunk=16).learn_prequential(X, y).proba is None
    reg = TorchLearner(n_features=4, task="regression", device="cpu", score_chunk=16)
    out = reg.learn_prequential(X, X[:, 0].copy(), proba=True)
    assert out.prediction.dtype == np.float32 and out.prediction.shape == (90,) and out.proba is None


def test_an_empty_batch_learns_nothing():
    out = learner(score_chunk=8).learn_prequential(
        np.zeros((0, 4), np.float32), np.zeros(0, np.int64), proba=True
    )
    assert out.prediction.shape == (0,) and out.proba.shape == (0, 2) and out.report.n_samples == 0


def test_fresher_predictions_win_on_an_autocorrelated_stream():
    # The label holds for runs of 250 rows and the features say nothing: only
    # the recent past predicts it, and a whole-window prediction is stale.
    # (SGD: Adam's momentum lags a flip by ~10 steps, see docs/learners.md.)
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(8) % 2, 250)
    X = rng.normal(size=(2000, 4)).astype(np.float32)
    scores = {}
    for chunk in (None, 16):
        lrn = TorchLearner(n_features=4, optimizer="sgd", lr=1.0, device="cpu", score_chunk=chunk)
        hits = [
            lrn.learn_prequential(X[i : i + 500], y[i : i + 500]).prediction == y[i : i + 500]
            for i in range(0, 2000, 500)
        ]
        scores[chunk] = np.concatenate(hits).mean()
    assert scores[16] > scores[None] + 0.2


def test_deterministic_and_a_state_round_trip_keeps_the_option():
    X, y = data()
    a, b = learner(score_chunk=16, minibatch_size=4), learner(score_chunk=16, minibatch_size=4)
    assert np.array_equal(a.learn_prequential(X, y).prediction, b.learn_prequential(X, y).prediction)
    assert same_weights(a, b)
    state = loads_state(dumps_state(a.state_dict()))
    assert state["config"]["score_chunk"] == 16
    c = a.clone()
    assert c.score_chunk == 16 and c.n_learned == 0
    c.load_state_dict(state)
    assert np.array_equal(a.learn_prequential(X, y).prediction, c.learn_prequential(X, y).prediction)
    # A state saved without chunking loads into a chunked learner (not a compatibility key).
    learner(score_chunk=8).load_state_dict(learner().state_dict())


@pytest.mark.parametrize("kw", [{}, {"minibatch_size": 4, "steps_per_batch": 2}])
def test_the_chunks_run_without_reading_the_device_one_transfer_at_the_end(monkeypatch, kw):
    # On CUDA each of these reads would wait for the device: none may happen per chunk.
    import torch

    from learners.neural.plugins import PluginSpec

    reads: list[str] = []
    for name in ("cpu", "item", "tolist", "__float__", "__int__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, _name=name, **k):
            reads.append(_name)
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    plugins = PluginSpec(ewc_strength=10, ewc_every=2, replay="reservoir", seed=0).build(
        task="classification", n_classes=2
    )
    X, y = data(80)
    for chunked in (learner(score_chunk=8, **kw), learner(score_chunk=8, plugins=plugins, **kw)):
        reads.clear()
        chunked.learn_prequential(X, y, proba=True)  # 10 chunks
        assert reads == ["cpu"]


@pytest.mark.parametrize("bad", [0, -3, True, 2.5, "16"])
def test_a_bad_chunk_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="score_chunk"):
        learner(score_chunk=bad)


def test_the_capability_and_the_cli_choice():
    assert isinstance(learner(score_chunk=4), ChunkedPrequential)
    assert LearnerChoice(score_chunk=24).factory()(3).score_chunk == 24
    assert LearnerChoice().factory()(3).score_chunk == 32  # on by default for torch models
    assert LearnerChoice(score_chunk=0).factory()(3).score_chunk is None  # 0: off
    assert LearnerChoice(model="river.linear_model.LogisticRegression").factory()(3)  # no chunking, no error
    with pytest.raises(ConfigError, match="--score-chunk"):
        LearnerChoice(model="river.linear_model.LogisticRegression", score_chunk=8)


def test_scored_rows_answer_only_for_their_batch():
    rows = ScoredRows(np.array([0, 1]), None)
    with pytest.raises(ValueError, match="2 rows"):
        rows.predict_batch(np.zeros((3, 1)))
    with pytest.raises(ValueError, match="probabilities"):
        rows.predict_proba_batch(np.zeros((2, 1)))


# ------------------------------------------------------------------- stages
class Recorder:
    """An observer and a policy stand-in: records what it was shown."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []
        self.new_alarm = None
        self.holds_validation = False

    def before_learn(self, batch, pred, learner):
        self.seen.append(("observe", pred.copy(), learner.predict_proba_batch(batch.X).copy()))

    def after_learn(self, batch, outcome):
        self.seen.append(("outcome", outcome.report.n_samples))

    def observe(self, learner, batch, pred):
        self.seen.append(("drift", pred.copy(), learner.n_learned))


class Gate:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def due(self):
        return True

    def before_learn(self, learner, batch, pred, schema):
        self.calls.append(f"publish pred={pred is not None} learned={learner.n_learned}")

    def after_learn(self, batch):
        self.calls.append("tally")


def names(stages) -> list[str]:
    return [type(s).__name__ for s in stages]


def test_chunking_fuses_score_and_learn_and_moves_observe_and_drift_after_it():
    parts = Oversight(observer=Recorder(), policy=Recorder(), gate=Gate(), reconciler=Recorder())
    live = LiveModel(learner(score_chunk=8), LearnLedger())
    assert names(batch_stages(live, RunStats(), prequential=True, oversight=parts)) == [
        "ReconcileStage",
        "GateStage",
        "ConsolidateStage",
        "ScoreLearnStage",
        "LedgerStage",
        "GateTallyStage",
        "ObserveStage",
        "DriftStage",
        "ObserveOutcomeStage",
    ]
    # Without prequential scoring, or with chunking off, the order is today's.
    assert names(batch_stages(live, RunStats(), prequential=False)) == ["LearnStage", "LedgerStage"]
    plain = LiveModel(learner())
    assert names(batch_stages(plain, RunStats(), prequential=True)) == ["ScoreStage", "LearnStage"]
    assert names(batch_stages(plain, RunStats(), prequential=True, chunked=True)) == ["ScoreLearnStage"]


def run_stages(stages, batch) -> BatchContext:
    ctx = BatchContext(batch, started=0.0)
    for stage in stages:
        stage.run(ctx)
    return ctx


def test_the_stages_feed_stats_observer_and_policy_with_the_chunked_predictions():
    watcher, gate = Recorder(), Gate()
    live, stats = LiveModel(learner(score_chunk=10)), RunStats()
    stages = batch_stages(
        live, stats, prequential=True, oversight=Oversight(observer=watcher, policy=watcher, gate=gate)
    )
    batch = make_batch(40, n_features=4)
    expected = learner(score_chunk=10).learn_prequential(batch.X, batch.y, proba=True)
    ctx = run_stages(stages, batch)
    assert np.array_equal(ctx.prediction, expected.prediction)
    assert stats.predicted == 40 and stats.events_learned == 40 and stats.batches_learned == 1
    assert stats.correct == int((expected.prediction == batch.y).sum())
    (_, obs_pred, obs_proba), (_, drift_pred, learned), outcome = watcher.seen
    assert np.array_equal(obs_pred, expected.prediction) and np.allclose(obs_proba, expected.proba)
    assert np.array_equal(drift_pred, expected.prediction) and learned == 40  # after learning
    assert outcome == ("outcome", 40)
    # The gate judged the model before the batch, with its own whole-batch prediction.
    assert gate.calls == ["publish pred=False learned=0", "tally"]


def test_an_open_alarm_holds_the_gate_when_drift_runs_after_learning():
    gate, policy = Gate(), Recorder()
    stage = GateStage(gate, LiveModel(learner()), dict, policy)
    policy.holds_validation = True
    stage.run(BatchContext(make_batch(8, n_features=4), started=0.0))
    assert gate.calls == []
    policy.holds_validation = False
    stage.run(BatchContext(make_batch(8, n_features=4), started=0.0))
    assert gate.calls == ["publish pred=False learned=0"]


def test_a_drift_decision_on_chunked_predictions_is_taken_after_the_batch_and_asks_for_a_checkpoint():
    policy = DriftPolicy(
        DriftMonitor([ScriptedDetector(fire_at=[2])]),
        PolicyConfig(warmup_events=0, evidence_batches=1, min_evidence_events=1),
    )
    asked: list[int] = []
    live = LiveModel(learner(score_chunk=10))
    stages = batch_stages(
        live,
        RunStats(),
        prequential=True,
        oversight=Oversight(policy=policy),
        request_checkpoint=lambda: asked.append(1),
    )
    outcomes = [run_stages(stages, make_batch(40, n_features=4, seed=i)) for i in range(4)]
    alarms = [o.alarm is not None for o in outcomes]
    decisions = [o.decision.kind if o.decision is not None else None for o in outcomes]
    assert alarms == [False, True, False, False]
    assert decisions[2] in ("adapt", "drift_dismissed") and asked == [1]
    assert live.learner.n_learned == 160  # every batch learned; the decision acts on the next one


# ------------------------------------------------------------------- engine
def test_an_engine_with_a_chunked_learner_counts_chunked_predictions(tmp_path):
    def build(d):
        return TorchLearner(n_features=d, lr=0.1, device="cpu", score_chunk=10)

    watcher = Recorder()
    engine = Engine(
        source=ListSource(make_records(120, n_features=3)),
        codec=JsonCodec(CodecConfig(n_features=3)),
        window=CountWindow(50),
        learner_builder=build,
        store=CheckpointStore(tmp_path / "ckpt"),
        config=EngineConfig(until_idle_seconds=0),
        oversight=Oversight(observer=watcher),
    )
    summary = engine.run()
    assert summary.events_learned == 120 and engine.stats.predicted == 120
    assert [s[1] for s in watcher.seen if s[0] == "outcome"] == [50, 50, 20]


def test_replays_window_metrics_score_the_chunked_predictions(tmp_path):
    from stream.replay.metrics import WindowMetrics

    metrics = WindowMetrics("classification", n_classes=2)
    engine = Engine(
        source=ListSource(make_records(300, n_features=3)),
        codec=JsonCodec(CodecConfig(n_features=3)),
        window=CountWindow(100),
        learner_builder=lambda d: TorchLearner(n_features=d, lr=0.1, device="cpu", score_chunk=10),
        store=CheckpointStore(tmp_path / "ckpt"),
        config=EngineConfig(until_idle_seconds=0),
        oversight=Oversight(observer=metrics),
    )
    engine.run()
    overall = metrics.result()["overall"]
    assert overall["accuracy"] == pytest.approx(engine.stats.accuracy)
    assert 0 < overall["log_loss"] < 0.7 and metrics.result()["windows"]["events"] == [100, 100, 100]


def test_a_rollback_on_chunked_predictions_comes_after_the_gates_tally_and_the_next_batch_is_the_restored_models():
    from drift.policy import Decision
    from serving.registry.versions import Version

    class RollingBack(Recorder):
        def observe(self, learner, batch, pred):
            super().observe(learner, batch, pred)
            return Decision("rollback", "snapshot better", {}, Version(number=3, status="validated"))

    class OrderedGate(Gate):
        def due(self):
            return False

        def rolled_back(self, version):
            self.calls.append(f"rolled_back v{version.number}")

    gate, policy, asked = OrderedGate(), RollingBack(), []
    stages = batch_stages(
        LiveModel(learner(score_chunk=10)),
        RunStats(),
        prequential=True,
        oversight=Oversight(policy=policy, gate=gate),
        request_checkpoint=lambda: asked.append(1),
    )
    ctx = run_stages(stages, make_batch(30, n_features=4))
    # The batch joins the candidate's range, then the rollback restarts the range from v3's.
    assert gate.calls == ["tally", "rolled_back v3"]
    assert ctx.decision.kind == "rollback" and ctx.held and ctx.prediction is None and asked == [1]
