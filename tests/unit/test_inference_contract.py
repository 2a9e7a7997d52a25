"""The inference-model contract (learners.families) over every learner family, and serving's use of it.

Each family's learner learns a little, publishes its state, and the loader
named by the state's family must give an :class:`InferenceModel` predicting
what the learner predicts. States from before families were named (no
``family`` entry) load through the layout fallback, to the same model.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable

import numpy as np
import pytest

from learners.avalanche_adapter.learner import AvalancheLearner
from learners.families import (
    FAMILIES,
    FAMILY_KEY,
    InferenceModel,
    family_of,
    load_inference_model,
    loader_for,
)
from learners.hedge.learner import HedgeLearner
from learners.neural.learner import TorchLearner
from learners.river_adapter.learner import RiverLearner
from learners.state_io import dumps_state, loads_state
from serving.api.model import ServedModel
from serving.registry.versions import Version
from stream.core.errors import RegistryError

N_FEATURES = 4

LEARNERS: dict[str, tuple[str, Callable[[], object]]] = {
    "torch-classification": (
        "torch",
        lambda: TorchLearner("mlp", n_features=N_FEATURES, n_classes=3, device="cpu"),
    ),
    "torch-regression": (
        "torch",
        lambda: TorchLearner(n_features=N_FEATURES, task="regression", device="cpu"),
    ),
    "river-classification": (
        "river",
        lambda: RiverLearner("river.naive_bayes.GaussianNB", n_features=N_FEATURES),
    ),
    "river-regression": (
        "river",
        lambda: RiverLearner("river.linear_model.LinearRegression", n_features=N_FEATURES, task="regression"),
    ),
    "hedge-classification": (
        "hedge",
        lambda: HedgeLearner(n_features=N_FEATURES, n_classes=3, device="cpu"),
    ),
    "hedge-regression": (
        "hedge",
        lambda: HedgeLearner(n_features=N_FEATURES, task="regression", device="cpu"),
    ),
    "avalanche": (
        "avalanche",
        lambda: AvalancheLearner("Naive", "logistic", n_features=N_FEATURES, n_classes=3, device="cpu"),
    ),
}


# Families added after families were named: none of their states lacks the name.
NAMED_FROM_THE_START = {"hedge"}


def data(learner, n: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    if learner.task == "regression":
        return X, (X @ np.arange(1, N_FEATURES + 1)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64)


def published(make):
    learner = make()
    X, y = data(learner)
    learner.learn_batch(X, y)
    return learner, loads_state(dumps_state(learner.state_dict())), X


@pytest.fixture(params=sorted(LEARNERS))
def case(request):
    family, make = LEARNERS[request.param]
    return (family, *published(make))


def assert_predicts_like(model, learner, X):
    labels, proba = model.predict(X)
    if model.classification:
        np.testing.assert_array_equal(labels, learner.predict_batch(X))
        np.testing.assert_allclose(proba, learner.predict_proba_batch(X), rtol=1e-5, atol=1e-6)
    else:
        assert proba is None
        np.testing.assert_allclose(labels, learner.predict_batch(X), rtol=1e-5, atol=1e-5)


def test_the_state_names_its_family_and_its_loader_predicts_like_the_learner(case):
    family, learner, state, X = case
    assert state["config"][FAMILY_KEY] == family == family_of(state)
    model = load_inference_model(state)
    assert isinstance(model, InferenceModel)
    assert model.n_features == N_FEATURES
    assert model.classification == (learner.task == "classification")
    assert_predicts_like(model, learner, X)


@pytest.mark.parametrize(
    "name", sorted(set(LEARNERS) - {n for n, (f, _) in LEARNERS.items() if f in NAMED_FROM_THE_START})
)
def test_an_unnamed_state_from_before_families_loads_by_its_layout(name):
    family, make = LEARNERS[name]
    learner, state, X = published(make)
    legacy = {**state, "config": {k: v for k, v in state["config"].items() if k != FAMILY_KEY}}
    assert family_of(legacy) == family
    assert_predicts_like(load_inference_model(legacy), learner, X)


def test_serving_serves_every_family(case):
    _, learner, state, X = case
    served = ServedModel.from_state(Version(number=3, schema={"n_features": N_FEATURES}), state)
    assert served.n_features == N_FEATURES
    assert_predicts_like(served, learner, X)


def test_every_registered_family_has_a_loader():
    for family in FAMILIES:
        assert callable(loader_for(family))


def test_an_unknown_family_or_no_config_is_a_registry_error():
    _, state, _ = published(LEARNERS["torch-classification"][1])
    with pytest.raises(RegistryError, match="family 'sklearn'"):
        family_of({**state, "config": {**state["config"], FAMILY_KEY: "sklearn"}})
    with pytest.raises(RegistryError, match="no config"):
        load_inference_model({"model": {}})
    with pytest.raises(RegistryError, match="cannot be served"):
        ServedModel.from_state(Version(number=1, schema={}), {"config": {FAMILY_KEY: "nope"}})


def test_serving_imports_without_avalanche():
    saved = dict(sys.modules)
    try:
        for name in [m for m in sys.modules if m.startswith(("serving", "learners", "avalanche"))]:
            del sys.modules[name]
        sys.modules["avalanche"] = None  # any import of it now fails
        importlib.import_module("serving.api.model")
        importlib.import_module("serving.api.app")
        assert not any(m.startswith("learners.avalanche_adapter") for m in sys.modules)
    finally:
        sys.modules.clear()
        sys.modules.update(saved)
