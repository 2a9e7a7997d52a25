"""Young steps and rehearsal (learners.neural.schedule) in the learner and in the engine loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learners.neural.learner import TorchLearner
from learners.neural.rehearsal import ReservoirReplay
from learners.neural.schedule import Schedule
from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.errors import ConfigError
from stream.engine.checkpoint import CheckpointStore
from stream.engine.loop import Engine, EngineConfig
from stream.testing.columns import ColumnarListSource
from stream.testing.doubles import make_records
from stream.window.count import CountWindow

pytestmark = pytest.mark.unit


def batch(n=32, seed=0, d=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64)


def adam_steps(learner) -> int:
    states = list(learner.torch_optimizer.state.values())
    return int(states[0]["step"]) if states else 0


def params(learner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in learner.module.parameters()]


def test_young_steps_until_young_events_then_steps_per_batch():
    learner = TorchLearner(n_features=3, device="cpu", schedule=Schedule(young_events=64, young_steps=3))
    for i in range(2):  # events 0..63: young
        learner.learn_batch(*batch(seed=i))
    assert adam_steps(learner) == 6
    learner.learn_batch(*batch(seed=2))  # 64 learned: grown up
    assert adam_steps(learner) == 7


def test_an_adapt_decision_makes_the_model_young_again_and_the_state_keeps_it():
    learner = TorchLearner(n_features=3, device="cpu", schedule=Schedule(young_events=32, young_steps=2))
    for i in range(3):
        learner.learn_batch(*batch(seed=i))
    assert adam_steps(learner) == 2 + 1 + 1
    changes = learner.adapt()
    assert changes["young_until"] == 96 + 32
    state = learner.state_dict()
    assert state["young_until"] == 128 and state["config"]["schedule"]["young_steps"] == 2
    restored = learner.clone()
    restored.load_state_dict(state)
    restored.learn_batch(*batch(seed=9))
    assert adam_steps(restored) == adam_steps(learner) + 2  # still young after the restore
    old = dict(state)
    del old["young_until"]  # a state saved before the schedule existed
    restored.load_state_dict(old)
    restored.learn_batch(*batch(seed=9))
    assert adam_steps(restored) == adam_steps(learner) + 1  # 96 learned >= young_events


def test_rehearsal_moves_the_weights_but_learns_no_event():
    replay = ReservoirReplay(capacity=64, mix=1.0, seed=0)
    learner = TorchLearner(n_features=3, device="cpu", schedule=Schedule(rehearse_steps=5), plugins=[replay])
    assert learner.rehearse() == 0  # nothing learned yet
    learner.learn_batch(*batch(64))
    scaler = learner.module.scaler if hasattr(learner.module, "scaler") else None
    before, seen, count = (
        params(learner),
        replay.state_dict()["seen"],
        None if scaler is None else float(scaler.count),
    )
    assert learner.rehearse() == 5
    assert learner.n_learned == 64 and replay.state_dict()["seen"] == seen
    if scaler is not None:
        assert float(scaler.count) == count
    assert any(not torch.equal(a, b) for a, b in zip(before, params(learner)))
    assert adam_steps(learner) == 1 + 5


def test_rehearsal_is_deterministic_and_forgets_the_batch_on_restore():
    def run():
        learner = TorchLearner(
            "mlp", n_features=3, device="cpu", schedule=Schedule(rehearse_steps=4, rehearse_rows=8)
        )
        for i in range(3):
            learner.learn_batch(*batch(seed=i))
            learner.rehearse()
        return learner

    a, b = run(), run()
    assert all(torch.equal(x, y) for x, y in zip(params(a), params(b)))
    a.load_state_dict(b.state_dict())
    assert a.rehearse() == 0  # the latest batch is not part of a state


def test_bad_schedules_name_the_setting():
    with pytest.raises(ConfigError, match="young_steps"):
        Schedule(young_steps=0)
    with pytest.raises(ConfigError, match="schedule"):
        TorchLearner(n_features=2, device="cpu", schedule={"rehearse_steps": 2})


def test_a_model_with_dropout_still_predicts_in_eval_mode():
    learner = TorchLearner("mlp", n_features=3, device="cpu", model_kwargs={"dropout": 0.5}, score_chunk=8)
    X, y = batch(64)
    learner.learn_prequential(X, y)
    assert np.array_equal(learner.predict_proba_batch(X), learner.predict_proba_batch(X))
    plain = TorchLearner("mlp", n_features=3, device="cpu")
    plain.learn_batch(X, y)
    assert plain.module.training  # mode-free: never toggled to eval


# ------------------------------------------------------------------ engine
def engine(tmp_path, rehearse, *, max_poll_records=5000, n=200):
    learners = []

    def build(d):
        learners.append(TorchLearner(n_features=d, device="cpu", schedule=Schedule(rehearse_steps=3)))
        return learners[-1]

    eng = Engine(
        source=ColumnarListSource(make_records(n, n_features=3, partitions=1), batch_size=50),
        codec=JsonCodec(CodecConfig(n_features=3)),
        window=CountWindow(50),
        learner_builder=build,
        store=CheckpointStore(tmp_path),
        config=EngineConfig(
            until_idle_seconds=0, poll_timeout_ms=0, rehearse=rehearse, max_poll_records=max_poll_records
        ),
    )
    return eng, learners


@pytest.mark.parametrize(
    ("rehearse", "max_poll_records", "steps"),
    [
        ("always", 50, 4 * 3),  # every batch, even from full polls (replay)
        ("caught_up", 5000, 4 * 3),  # polls of 50 < 5000 records: caught up
        ("caught_up", 50, 0),  # every poll full: lagging, the minimum
        ("never", 5000, 0),
    ],
)
def test_the_engine_rehearses_only_when_it_has_time_to_spare(tmp_path, rehearse, max_poll_records, steps):
    eng, learners = engine(tmp_path, rehearse, max_poll_records=max_poll_records)
    summary = eng.run()
    assert summary.events_learned == 200
    assert eng.stats.rehearsal_steps == steps
    assert adam_steps(learners[0]) == 4 + steps


def test_bad_rehearse_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="rehearse"):
        EngineConfig(rehearse="sometimes")


def test_a_restored_learner_does_not_advance_the_snapshot_it_was_restored_from():
    # torch's Optimizer.load_state_dict keeps the given tensors: a rollback target held by
    # the drift policy used to advance (step count, Adam moments) with the live learner.
    learner = TorchLearner(n_features=3, device="cpu", plugins=[ReservoirReplay(capacity=16, seed=0)])
    learner.learn_batch(*batch(8))
    snap = learner.state_dict()
    opt_state = snap["optimizer"]["state"][0]
    step, moment, buffer = (
        float(opt_state["step"]),
        opt_state["exp_avg"].clone(),
        snap["plugins"][0]["X"].clone(),
    )
    restored = learner.clone()
    restored.load_state_dict(snap)
    for i in range(3):
        restored.learn_batch(*batch(8, seed=i + 1))
    assert float(opt_state["step"]) == step
    assert torch.equal(opt_state["exp_avg"], moment)
    assert torch.equal(snap["plugins"][0]["X"], buffer)


def test_no_rehearsal_while_a_drift_alarm_is_open():
    from stream.engine.batch_context import BatchContext, LiveModel
    from stream.engine.progress import RunStats
    from stream.engine.stages import RehearseStage

    class Alarm:
        holds_validation = True

    learner = TorchLearner(n_features=3, device="cpu", schedule=Schedule(rehearse_steps=2))
    learner.learn_batch(*batch())
    stats, live = RunStats(), LiveModel(learner)
    ctx = BatchContext(None, started=0.0)
    RehearseStage(live, stats, lambda: True, Alarm()).run(ctx)
    assert stats.rehearsal_steps == 0
    Alarm.holds_validation = False
    RehearseStage(live, stats, lambda: True, Alarm()).run(ctx)
    assert stats.rehearsal_steps == 2
