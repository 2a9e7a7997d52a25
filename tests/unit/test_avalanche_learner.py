"""The Avalanche adapter beyond the shared contract: catalogue, errors, served model, safe state, RNG hygiene."""

from __future__ import annotations

import importlib
import random

import numpy as np
import pytest
import torch

from learners.avalanche_adapter.learner import AvalancheLearner, torch_learner_state
from learners.state_io import dumps_state, loads_state
from serving.api.model import ServedModel
from serving.registry.versions import Version
from stream.core.errors import ConfigError, SchemaMismatchError


def stream(n_batches: int, size: int = 128, seed: int = 0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(5, 3))
    for _ in range(n_batches):
        X = (rng.normal(size=(size, 5)) * [1, 10, 100, 1e3, 1e4]).astype(np.float32)  # unscaled on purpose
        yield X, (X / [1, 10, 100, 1e3, 1e4] @ W).argmax(axis=1).astype(np.int64)


@pytest.mark.parametrize(
    "strategy,kwargs",
    [
        ("Naive", {}),
        ("EWC", {"ewc_lambda": 1.0, "mode": "online", "decay_factor": 0.9}),
        ("Replay", {"mem_size": 200}),
        ("LwF", {"alpha": 0.5, "temperature": 2.0}),
    ],
)
def test_strategies_learn_a_stream_one_experience_per_micro_batch(strategy, kwargs):
    learner = AvalancheLearner(
        strategy,
        "mlp",
        n_features=5,
        n_classes=3,
        device="cpu",
        lr=0.01,
        strategy_kwargs=kwargs,
        train_epochs=3,
    )
    data = list(stream(31))
    for X, y in data[:30]:
        report = learner.learn_batch(X, y)
    assert report.n_samples == 128 and report.loss_value() > 0
    X, y = data[30]
    assert (learner.predict_batch(X) == y).mean() > 0.85
    assert learner.n_learned == 30 * 128


def test_unknown_strategy_plugin_or_argument_is_a_config_error_that_helps():
    with pytest.raises(ConfigError, match=r"unknown Avalanche strategy 'Magic'; choose one of: .*EWC.*Naive"):
        AvalancheLearner("Magic", n_features=3)
    with pytest.raises(ConfigError, match="unknown Avalanche plugin 'NopePlugin'"):
        AvalancheLearner("Naive", n_features=3, plugins=[("NopePlugin", {})])
    with pytest.raises(ConfigError, match="EWC does not accept"):
        AvalancheLearner("EWC", n_features=3, strategy_kwargs={"lambda_typo": 1.0})
    with pytest.raises(ConfigError, match="train_epochs"):
        AvalancheLearner("Naive", n_features=3, train_epochs=0)


def test_learning_leaves_the_callers_global_rngs_alone():
    learner = AvalancheLearner(
        "Replay", "mlp", n_features=5, n_classes=3, device="cpu", strategy_kwargs={"mem_size": 50}
    )
    torch_state, py_state = torch.get_rng_state(), random.getstate()
    for X, y in stream(3):
        learner.learn_batch(X, y)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state


def test_the_api_serves_the_model_inside_an_avalanche_state():
    learner = AvalancheLearner(
        "EWC", "mlp", n_features=5, n_classes=3, device="cpu", strategy_kwargs={"ewc_lambda": 1.0}
    )
    data = list(stream(4))
    for X, y in data[:3]:
        learner.learn_batch(X, y)
    state = loads_state(dumps_state(learner.state_dict()))
    served = ServedModel.from_state(Version(number=1, schema={"n_features": 5}), state)
    labels, proba = served.predict(data[3][0])
    np.testing.assert_array_equal(labels, learner.predict_batch(data[3][0]))
    np.testing.assert_allclose(proba, learner.predict_proba_batch(data[3][0]), rtol=1e-6)
    assert torch_learner_state(state)["config"]["model"] == "mlp"


def _replay_state():
    learner = AvalancheLearner(
        "Replay", "logistic", n_features=5, n_classes=3, device="cpu", strategy_kwargs={"mem_size": 20}
    )
    for X, y in stream(2):
        learner.learn_batch(X, y)
    state = learner.state_dict()
    assert state["plugins"][0]["state"]["storage_policy"]["__kind__"] == "object"
    return learner, state


@pytest.mark.parametrize(
    "name",
    [
        "avalanche.training.storage_policy:random.Random",  # an attribute path out of an allowed module
        "avalanche.training.storage_policy:torch.load",
        "avalanche.training.storage_policy:ReservoirSamplingBuffer.__init__",
        "avalanche.training.plugins:ReplayPlugin",  # an Avalanche class, but not one a state rebuilds
        "avalanche.training.storage_policy.ReservoirSamplingBuffer",  # no ':'
        "subprocess:Popen",
        "builtins:eval",
        42,
    ],
)
def test_a_state_naming_a_class_off_the_allow_list_is_refused(name, monkeypatch):
    learner, state = _replay_state()
    state["plugins"][0]["state"]["storage_policy"]["class"] = name
    imported = []
    real_import = importlib.import_module
    monkeypatch.setattr(
        importlib, "import_module", lambda mod, *a: imported.append(mod) or real_import(mod, *a)
    )
    with pytest.raises(SchemaMismatchError, match="not on the allow-list of Avalanche classes"):
        learner.clone().load_state_dict(state)
    assert imported == [], "a refused name must not import anything"


def test_a_state_cannot_rewrite_an_objects_class_or_dict():
    learner, state = _replay_state()
    state["plugins"][0]["state"]["storage_policy"]["vars"]["__class__"] = "x"
    with pytest.raises(SchemaMismatchError, match="sets attribute '__class__'"):
        learner.clone().load_state_dict(state)


def test_the_allow_listed_buffer_survives_a_round_trip_through_bytes():
    learner, state = _replay_state()
    policy = state["plugins"][0]["state"]["storage_policy"]
    assert policy["class"] == "avalanche.training.storage_policy:ExperienceBalancedBuffer"
    restored = learner.clone()
    restored.load_state_dict(loads_state(dumps_state(state)))
    X, y = next(stream(1, seed=3))
    np.testing.assert_array_equal(restored.predict_batch(X), learner.predict_batch(X))
    again = restored.state_dict()["plugins"][0]["state"]["storage_policy"]
    assert again["class"] == policy["class"]
    before, after = list(_tensors(policy)), list(_tensors(again))
    assert before and len(before) == len(after) and all(torch.equal(a, b) for a, b in zip(before, after))


def _tensors(node):
    """Every tensor in a state tree, in order (the replay buffer's memory, for one)."""
    if isinstance(node, torch.Tensor):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _tensors(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _tensors(value)


def test_a_state_of_another_strategy_does_not_load():
    ewc = AvalancheLearner(
        "EWC", "logistic", n_features=5, n_classes=3, device="cpu", strategy_kwargs={"ewc_lambda": 1.0}
    )
    naive = AvalancheLearner("Naive", "logistic", n_features=5, n_classes=3, device="cpu")
    with pytest.raises(SchemaMismatchError, match="strategy='EWC'"):
        naive.load_state_dict(ewc.state_dict())
