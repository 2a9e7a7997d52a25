"""HedgeLearner (learners/hedge): the weighting rule, its options, and the engine path.

The Learner contract (state round trip, clone, determinism) runs over it in
test_learner_contract.py, serving's loader in test_inference_contract.py.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import torch

from learners.choice import LearnerChoice
from learners.hedge.learner import HedgeLearner
from learners.hedge.members import DEFAULT_MEMBERS
from learners.state_io import dumps_state, loads_state
from stream.core.errors import ConfigError, SchemaMismatchError

FAST_AND_FROZEN = [{"model": "logistic", "lr": 0.1}, {"model": "logistic", "lr": 1e-7}]


def linear_batches(n_batches: int, size: int = 200, seed: int = 0, d: int = 4):
    rng = np.random.default_rng(seed)
    for _ in range(n_batches):
        X = rng.normal(size=(size, d)).astype(np.float32)
        yield X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)


def brier(proba: np.ndarray, y: np.ndarray) -> float:
    onehot = np.eye(proba.shape[1])[y]
    return float(((proba - onehot) ** 2).sum(axis=1).mean())


def test_the_member_that_learns_takes_the_weight():
    learner = HedgeLearner(FAST_AND_FROZEN, n_features=4, device="cpu")
    for X, y in linear_batches(10):
        learner.learn_batch(X, y)
    w = learner.weights
    assert w[0] > 0.95 and abs(float(w.sum()) - 1.0) < 1e-9
    X, y = next(linear_batches(1, seed=9))
    assert (learner.predict_batch(X) == y).mean() > 0.9


def test_the_first_batch_leaves_the_weights_uniform():
    # Before anything is learned the losses compare random initialisations only.
    learner = HedgeLearner(FAST_AND_FROZEN, n_features=4, device="cpu")
    learner.learn_batch(*next(linear_batches(1)))
    assert torch.equal(learner.weights, torch.full((2,), 0.5, dtype=torch.float64))


def test_weights_are_set_on_the_loss_measured_before_the_members_learn_the_batch():
    learner = HedgeLearner(FAST_AND_FROZEN, n_features=4, device="cpu", eta=0.01, share=0.0)
    data = list(linear_batches(3))
    learner.learn_batch(*data[0])
    X, y = data[1]
    before = [brier(m.predict_proba_batch(X), y) for m in learner.member_learners]
    learner.learn_batch(X, y)
    logits = np.log([0.5, 0.5]) - 0.01 * len(y) * np.asarray(before)
    expected = np.exp(logits - logits.max())
    expected /= expected.sum()
    np.testing.assert_allclose(learner.weights.numpy(), expected, rtol=1e-5)


def _drive(learner: HedgeLearner, losses_per_batch, n: int = 500) -> list[np.ndarray]:
    """Feed the reweighting rule member outputs whose Brier losses are as given; the weights after each batch."""
    learner._n_learned = 1  # past the first batch
    y = torch.zeros(n, dtype=torch.int64)
    trace = []
    for losses in losses_per_batch:
        # p(class 0) = 1 - sqrt(loss / 2) gives Brier loss exactly `loss` on a two-class batch of zeros.
        p0 = 1.0 - np.sqrt(np.asarray(losses) / 2.0)
        outs = torch.tensor(np.stack([p0, 1.0 - p0], axis=1), dtype=torch.float32)[:, None, :].expand(
            -1, n, -1
        )
        learner._reweight(outs, y, n)
        trace.append(learner.weights.numpy())
    return trace


def test_fixed_share_keeps_a_floor_so_a_member_comes_back_after_a_drift():
    before, after = [[0.1, 0.5]] * 30, [[0.5, 0.1]] * 10
    shared = HedgeLearner(FAST_AND_FROZEN, n_features=4, device="cpu", share=1e-4)
    trace = _drive(shared, before + after)
    floor = (1 - (1 - 1e-4) ** 500) / 2
    assert min(w.min() for w in trace) >= floor * 0.999
    comeback = next(i for i, w in enumerate(trace[30:]) if w[1] > 0.5)
    assert comeback <= 2, trace[30:]

    plain = HedgeLearner(FAST_AND_FROZEN, n_features=4, device="cpu", share=0.0)
    trace = _drive(plain, before + after)
    assert trace[29][1] < 1e-30
    assert all(w[1] < 0.5 for w in trace[30:])  # without the floor it is still out after 10 batches


def test_regression_weights_do_not_depend_on_the_targets_scale():
    learners = [
        HedgeLearner(FAST_AND_FROZEN, n_features=4, task="regression", device="cpu") for _ in range(2)
    ]
    n = 100
    y = torch.linspace(-1, 1, n)
    outs = torch.stack([y + 0.1, y + 0.3])
    for learner, scale in zip(learners, (1.0, 1000.0)):
        learner._n_learned = 1
        learner._reweight(outs * scale, y * scale, n)
    torch.testing.assert_close(learners[0].weights, learners[1].weights)
    assert learners[0].weights[0] > learners[0].weights[1]


def test_regression_predicts_the_weighted_members():
    learner = HedgeLearner(FAST_AND_FROZEN, n_features=4, task="regression", device="cpu")
    rng = np.random.default_rng(0)
    for _ in range(5):
        X = rng.normal(size=(100, 4)).astype(np.float32)
        learner.learn_batch(X, X @ np.arange(4, dtype=np.float32))
    w = learner.weights.numpy()
    members = np.stack([m.predict_batch(X) for m in learner.member_learners])
    np.testing.assert_allclose(learner.predict_batch(X), w @ members, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="regression"):
        learner.predict_proba_batch(X)


def test_the_default_ensemble_learns_what_a_linear_model_cannot():
    rng = np.random.default_rng(3)
    learner, logistic = HedgeLearner(n_features=2, device="cpu"), LearnerChoice(model="logistic").factory()(2)
    correct = {"hedge": 0, "logistic": 0}
    for _ in range(12):
        X = rng.uniform(-1, 1, size=(250, 2)).astype(np.float32)
        y = ((X[:, 0] * X[:, 1]) > 0).astype(np.int64)  # XOR of the signs
        correct["hedge"] += int((learner.predict_batch(X) == y).sum())
        correct["logistic"] += int((logistic.predict_batch(X) == y).sum())
        learner.learn_batch(X, y)
        logistic.learn_batch(X, y)
    assert correct["hedge"] / 3000 > 0.75 > correct["logistic"] / 3000
    assert learner.weights[0] < 0.05  # the logistic member (DEFAULT_MEMBERS[0]) lost its weight
    assert DEFAULT_MEMBERS[0]["model"] == "logistic"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"members": []}, "non-empty list"),
        ({"members": [{"model": "mlp"}]}, "needs model and lr"),
        ({"members": [{"model": "mlp", "lr": 0.1, "hiddden": [8]}]}, r"unknown key\(s\) \['hiddden'\]"),
        ({"members": [{"model": "mlp", "lr": -1}]}, "hedge member 0 .*lr must be a positive number"),
        ({"members": [{"model": "tree", "lr": 0.1}]}, "hedge member 0"),
        ({"eta": 0}, "eta must be a positive number"),
        ({"share": 1.0}, r"share must be a number in \[0, 1\)"),
        ({"task": "ranking"}, "task must be one of"),
    ],
)
def test_bad_options_are_config_errors_that_say_which(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        HedgeLearner(n_features=3, device="cpu", **kwargs)


def test_the_cli_choice_builds_it_and_rejects_what_does_not_apply():
    choice = LearnerChoice(
        model="hedge", model_options=('members=[{"model": "logistic", "lr": 0.05}]', "eta=0.1"), seed=3
    )
    learner = choice.factory()(5)
    assert isinstance(learner, HedgeLearner) and choice.kind == "hedge"
    assert (len(learner.members), learner.eta, learner.seed, learner.n_features) == (1, 0.1, 3, 5)
    with pytest.raises(ConfigError, match="unknown: \\['hidden'\\]"):
        LearnerChoice(model="hedge", model_options=("hidden=[8]",))
    with pytest.raises(ConfigError, match="not to --model hedge"):
        LearnerChoice(model="hedge", ewc_strength=5.0)
    with pytest.raises(ConfigError, match="--lr, --steps-per-batch do\\(es\\) not apply to --model hedge"):
        LearnerChoice(model="hedge", lr=0.01, steps_per_batch=4)


def test_a_state_of_other_members_is_a_schema_mismatch():
    state = loads_state(dumps_state(HedgeLearner(FAST_AND_FROZEN, n_features=4, device="cpu").state_dict()))
    with pytest.raises(SchemaMismatchError, match="members"):
        HedgeLearner(n_features=4, device="cpu").load_state_dict(state)
    with pytest.raises(SchemaMismatchError, match="n_features"):
        HedgeLearner(FAST_AND_FROZEN, n_features=5, device="cpu").load_state_dict(state)
    # Learning rates may change between runs (as for TorchLearner): the architecture is what must fit.
    other_lr = [{"model": "logistic", "lr": 0.5}, {"model": "logistic", "lr": 0.5}]
    HedgeLearner(other_lr, n_features=4, device="cpu").load_state_dict(state)


def test_it_runs_the_engine_path_with_gate_and_drift_policy(tmp_path):
    """A backtest (the engine, the validation gate, the drift policy) learns and publishes a servable model."""
    from learners.families import load_inference_model
    from stream.engine.gate import GateConfig
    from stream.replay.config import ReplayConfig
    from stream.replay.driver import Backtest
    from stream.sources.files import FileSource
    from stream.sources.produce import synthetic_rows

    path = tmp_path / "sea.jsonl"
    rows = synthetic_rows("sea", 4000, seed=1, drift_at=2000)
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    members = '[{"model": "logistic", "lr": 0.05}, {"model": "mlp", "lr": 0.02, "steps": 4, "model_kwargs": {"hidden": [16]}}]'
    choice = LearnerChoice(model="hedge", model_options=(f"members={members}",))
    result = Backtest(
        FileSource([path]),
        [
            ReplayConfig.base(
                window="count:250", learner=choice, gate=GateConfig(every_batches=4, every_seconds=None)
            )
        ],
        str(tmp_path / "o"),
        progress=False,
    ).run()
    cfg = result["configs"][0]
    assert cfg["summary"]["events"] == 4000 and cfg["summary"]["accuracy"] > 0.75
    assert "validated" in {m["kind"] for m in cfg["markers"]}
    learner = choice.factory()(3)
    learner.learn_batch(np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1]))
    model = load_inference_model(loads_state(dumps_state(learner.state_dict())))
    assert model.classification and model.predict(np.zeros((2, 3), np.float32))[1].shape == (2, 2)
