"""Growing a torch learner's classes: old predictions kept, the new class learnable, state and serving at the new size."""

from __future__ import annotations

import numpy as np
import pytest

from learners.base import GrowsClasses
from learners.neural.ewc import EWC
from learners.neural.inference import load
from learners.neural.learner import TorchLearner
from learners.neural.rehearsal import ClassBalancedReplay
from learners.state_io import dumps_state, loads_state
from stream.core.errors import ConfigError


def _data(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, k, n)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    X[:, 0] += 3 * y  # class c sits at x0 ~ 3c
    return X, y.astype(np.int64)


def _trained(model: str = "mlp", **kw) -> TorchLearner:
    rng = np.random.default_rng(0)
    learner = TorchLearner(model, n_features=3, n_classes=2, device="cpu", lr=0.05, seed=1, **kw)
    for _ in range(30):
        learner.learn_batch(*_data(rng, 64, 2))
    return learner


@pytest.mark.parametrize("model", ["logistic", "mlp", "resmlp"])
def test_old_classes_keep_their_odds_and_predictions(model):
    learner = _trained(model)
    X, _ = _data(np.random.default_rng(5), 200, 2)
    before = learner.predict_proba_batch(X)
    learner.grow_classes(4)
    after = learner.predict_proba_batch(X)
    assert after.shape == (200, 4)
    renorm = after[:, :2] / after[:, :2].sum(axis=1, keepdims=True)
    np.testing.assert_allclose(renorm, before, atol=1e-5)
    np.testing.assert_array_equal(learner.predict_batch(X), before.argmax(axis=1))
    # A new class starts at most 1/k of the top old class's probability.
    assert np.all(after[:, 2:] <= after[:, :2].max(axis=1, keepdims=True) / 2 + 1e-6)


def test_new_class_is_learned_and_optimizer_state_carried():
    learner = _trained(plugins=[EWC(strength=10.0, consolidate_every=5), ClassBalancedReplay(2, 100)])
    assert isinstance(learner, GrowsClasses)
    hidden = learner.module.net[0].weight
    step_before = learner.torch_optimizer.state[hidden]["step"].clone()
    learner.grow_classes(3)
    assert learner.torch_optimizer.state[hidden]["step"] == step_before  # untouched: state kept
    rng = np.random.default_rng(1)
    for _ in range(40):
        learner.learn_batch(*_data(rng, 64, 3))
    X, y = _data(rng, 300, 3)
    # Bayes accuracy on class 2 is ~0.93 (classes 3 apart, unit noise); never predicted before.
    assert (learner.predict_batch(X)[y == 2] == 2).mean() > 0.75
    assert learner.plugins[1].class_counts().shape == (3,)


def test_state_round_trip_and_inference_at_the_new_size():
    learner = _trained(plugins=[ClassBalancedReplay(2, 100)])
    learner.grow_classes(3)
    learner.learn_batch(*_data(np.random.default_rng(2), 64, 3))
    state = loads_state(dumps_state(learner.state_dict()))
    assert state["config"]["n_classes"] == 3
    fresh = TorchLearner("mlp", n_features=3, n_classes=3, device="cpu", lr=0.05, seed=1,
                         plugins=[ClassBalancedReplay(3, 100)])  # fmt: skip
    fresh.load_state_dict(state)
    X, _ = _data(np.random.default_rng(3), 50, 3)
    np.testing.assert_allclose(fresh.predict_proba_batch(X), learner.predict_proba_batch(X), atol=1e-6)
    served = load(state)
    np.testing.assert_allclose(served.predict(X)[1], learner.predict_proba_batch(X), atol=1e-6)


def test_grow_refuses_shrinking_and_regression():
    learner = TorchLearner(n_features=2, n_classes=3, device="cpu")
    learner.grow_classes(3)  # no-op
    with pytest.raises(ConfigError, match="integer >= 3"):
        learner.grow_classes(2)
    with pytest.raises(ConfigError, match="classification"):
        TorchLearner(n_features=2, task="regression", device="cpu").grow_classes(3)
