"""The online input standardiser: exact running moments, fed once per event, served with the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from learners.neural.inference import inference_module
from learners.neural.learner import TorchLearner
from learners.neural.plugins import PluginSpec
from learners.neural.standardize import InputStandardizer


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=6),
    loc=st.floats(-1e5, 1e5),
    spread=st.floats(1e-2, 1e4),
    seed=st.integers(0, 2**16),
)
def test_merged_batches_give_the_moments_of_all_rows(sizes, loc, spread, seed):
    rng = np.random.default_rng(seed)
    batches = [(loc + spread * rng.normal(size=(n, 3))).astype(np.float32) for n in sizes]
    s = InputStandardizer(3)
    for b in batches:
        s.update(torch.from_numpy(b))
    allx = np.concatenate(batches).astype(np.float64)
    assert int(s.count) == len(allx)
    np.testing.assert_allclose(s.mean.numpy(), allx.mean(axis=0), rtol=1e-9, atol=1e-6 * spread)
    np.testing.assert_allclose(s.m2.numpy() / len(allx), allx.var(axis=0), rtol=1e-6, atol=1e-9 * spread**2)


def test_constant_features_are_centred_not_blown_up():
    s = InputStandardizer(2)
    s.update(torch.tensor([[5.0, 1.0], [5.0, 3.0]]))
    out = s(torch.tensor([[5.0, 2.0], [6.0, 2.0]]))
    assert out[:, 0].tolist() == [0.0, 1.0]  # constant feature: shifted, scale 1
    assert torch.isfinite(out).all()


def test_learner_feeds_each_arriving_event_once_whatever_the_steps_and_replay():
    plugins = PluginSpec(replay="reservoir", replay_capacity=64, replay_mix=1.0).build(
        task="classification", n_classes=2
    )
    learner = TorchLearner(n_features=3, device="cpu", steps_per_batch=4, plugins=plugins)
    rng = np.random.default_rng(0)
    for _ in range(5):
        learner.learn_batch(rng.normal(size=(20, 3)).astype(np.float32), rng.integers(0, 2, 20))
    assert int(learner.module.scaler.count) == 100  # not 400 (steps), not more (replayed rows)


def test_prediction_before_learning_does_not_touch_the_statistics():
    learner = TorchLearner(n_features=2, device="cpu")
    learner.predict_batch(np.ones((10, 2), np.float32))
    assert int(learner.module.scaler.count) == 0


def test_statistics_round_trip_and_reach_the_served_module():
    rng = np.random.default_rng(1)
    X = (1e5 * rng.normal(size=(300, 4)) + 4e4).astype(np.float32)
    y = (X[:, 0] > 4e4).astype(np.int64)
    learner = TorchLearner("mlp", n_features=4, device="cpu", model_kwargs={"hidden": (8,)})
    for _ in range(5):
        learner.learn_batch(X, y)
    state = learner.state_dict()
    restored = learner.clone()
    restored.load_state_dict(state)
    assert torch.equal(restored.module.scaler.mean, learner.module.scaler.mean)
    module, _ = inference_module(state)
    with torch.inference_mode():
        served = module(torch.from_numpy(X)).argmax(-1).numpy()
    np.testing.assert_array_equal(served, learner.predict_batch(X))


def test_standardisation_is_what_lets_a_linear_learner_use_large_raw_features():
    # Agrawal-like scale: one informative feature near 1e5, one near 40.
    rng = np.random.default_rng(2)
    X = np.column_stack([rng.uniform(2e4, 1.5e5, 4000), rng.uniform(20, 80, 4000)]).astype(np.float32)
    y = (X[:, 0] > 8.5e4).astype(np.int64)
    accs = {}
    for standardize in (True, False):
        learner = TorchLearner(n_features=2, device="cpu", lr=0.05, model_kwargs={"standardize": standardize})
        for i in range(0, 3000, 100):
            learner.learn_batch(X[i : i + 100], y[i : i + 100])
        accs[standardize] = float((learner.predict_batch(X[3000:]) == y[3000:]).mean())
    assert accs[True] > 0.95
    assert accs[True] > accs[False] + 0.1, accs


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_standardize_flag_must_be_a_bool(bad):
    from stream.core.errors import ConfigError

    with pytest.raises(ConfigError, match="standardize must be true or false"):
        TorchLearner(n_features=2, device="cpu", model_kwargs={"standardize": bad})
