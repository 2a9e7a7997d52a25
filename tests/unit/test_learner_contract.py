"""The Learner contract, checked for every learner configuration (STYLE 13).

Each entry of ``LEARNERS`` is a factory ``(seed) -> Learner``; every check
below runs against every entry. Adding a learner (river adapter, EWC
variant, ...) means adding one line here, and it gets the whole contract:
pickle-free state round trip, clone independence, no input mutation, seeded
determinism and the LearnReport shape.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch
from river import linear_model, multiclass, optim, preprocessing, tree

from learners.avalanche_adapter.learner import AvalancheLearner
from learners.base import Adaptable, Consolidating, Learner, LearnReport
from learners.choice import LearnerChoice
from learners.hedge.learner import HedgeLearner
from learners.neural.ewc import EWC
from learners.neural.hooks import (
    BasePlugin,
    Consolidates,
    Refreshable,
    Relaxable,
    ResetsAnchors,
    UpdatePlugin,
)
from learners.neural.learner import TorchLearner
from learners.neural.rehearsal import ClassBalancedReplay, ReservoirReplay
from learners.neural.schedule import Schedule
from learners.river_adapter.learner import RiverLearner
from learners.state_io import dumps_state, loads_state

N_FEATURES = 6

LEARNERS: dict[str, Callable[[int], Learner]] = {
    "logistic": lambda seed: TorchLearner(
        "logistic", n_features=N_FEATURES, n_classes=3, device="cpu", seed=seed
    ),
    "mlp": lambda seed: TorchLearner(
        "mlp", n_features=N_FEATURES, n_classes=3, device="cpu", seed=seed, model_kwargs={"hidden": (16, 8)}
    ),
    "resmlp": lambda seed: TorchLearner(
        "resmlp",
        n_features=N_FEATURES,
        n_classes=3,
        device="cpu",
        seed=seed,
        optimizer="adamw",
        model_kwargs={"width": 16, "n_blocks": 2},
    ),
    "mlp-sgd-2steps": lambda seed: TorchLearner(
        "mlp",
        n_features=N_FEATURES,
        n_classes=3,
        device="cpu",
        seed=seed,
        optimizer="sgd",
        lr=0.05,
        steps_per_batch=2,
    ),
    "mlp-minibatch-replay": lambda seed: TorchLearner(
        "mlp",
        n_features=N_FEATURES,
        n_classes=3,
        device="cpu",
        seed=seed,
        minibatch_size=10,
        steps_per_batch=2,
        plugins=[ReservoirReplay(capacity=40, seed=seed)],
    ),
    "resmlp-raw-inputs": lambda seed: TorchLearner(
        "resmlp",
        n_features=N_FEATURES,
        n_classes=3,
        device="cpu",
        seed=seed,
        model_kwargs={"width": 8, "standardize": False},
    ),
    "logistic-regression": lambda seed: TorchLearner(
        "logistic", n_features=N_FEATURES, task="regression", device="cpu", seed=seed
    ),
    "mlp-ewc": lambda seed: TorchLearner(
        "mlp",
        n_features=N_FEATURES,
        n_classes=3,
        device="cpu",
        seed=seed,
        plugins=[EWC(strength=50.0, consolidate_every=2)],
    ),
    "logistic-reservoir": lambda seed: TorchLearner(
        "logistic",
        n_features=N_FEATURES,
        n_classes=3,
        device="cpu",
        seed=seed,
        plugins=[ReservoirReplay(capacity=40, seed=seed)],
    ),
    "mlp-ewc-balanced": lambda seed: TorchLearner(
        "mlp",
        n_features=N_FEATURES,
        n_classes=3,
        device="cpu",
        seed=seed,
        plugins=[EWC(strength=10.0, consolidate_every=3), ClassBalancedReplay(3, capacity=30, seed=seed)],
    ),
    "regression-ewc-reservoir": lambda seed: TorchLearner(
        "logistic",
        n_features=N_FEATURES,
        task="regression",
        device="cpu",
        seed=seed,
        plugins=[EWC(consolidate_every=2), ReservoirReplay(capacity=20, mix=0.5, seed=seed)],
    ),
    # Avalanche: one experience per micro-batch; what the plugins learned is part of the state.
    "avalanche-naive": lambda seed: AvalancheLearner(
        "Naive",
        "mlp",
        n_features=N_FEATURES,
        n_classes=3,
        device="cpu",
        seed=seed,
        model_kwargs={"hidden": (16,)},
    ),
    "avalanche-ewc": lambda seed: AvalancheLearner(
        "EWC",
        "logistic",
        n_features=N_FEATURES,
        n_classes=3,
        device="cpu",
        seed=seed,
        strategy_kwargs={"ewc_lambda": 5.0, "mode": "online", "decay_factor": 0.9},
    ),
    "avalanche-replay-minibatch": lambda seed: AvalancheLearner(
        "Replay",
        "mlp",
        n_features=N_FEATURES,
        n_classes=3,
        device="cpu",
        seed=seed,
        minibatch_size=8,
        strategy_kwargs={"mem_size": 40},
        model_kwargs={"hidden": (8,)},
    ),
    "avalanche-lwf": lambda seed: AvalancheLearner(
        "LwF",
        "mlp",
        n_features=N_FEATURES,
        n_classes=3,
        device="cpu",
        seed=seed,
        strategy_kwargs={"alpha": 1.0, "temperature": 2.0},
    ),
    "avalanche-si": lambda seed: AvalancheLearner(
        "SynapticIntelligence",
        "logistic",
        n_features=N_FEATURES,
        n_classes=3,
        device="cpu",
        seed=seed,
        strategy_kwargs={"si_lambda": 1.0},
    ),
    "avalanche-agem": lambda seed: AvalancheLearner(
        "AGEM",
        "logistic",
        n_features=N_FEATURES,
        n_classes=3,
        device="cpu",
        seed=seed,
        strategy_kwargs={"patterns_per_exp": 10, "sample_size": 8},
    ),
    "avalanche-gem": lambda seed: AvalancheLearner(
        "GEM",
        "logistic",
        n_features=N_FEATURES,
        n_classes=3,
        device="cpu",
        seed=seed,
        strategy_kwargs={"patterns_per_exp": 10},
    ),
    "avalanche-naive+lwf+ewc-plugins": lambda seed: AvalancheLearner(
        "Naive",
        "mlp",
        n_features=N_FEATURES,
        n_classes=3,
        device="cpu",
        seed=seed,
        plugins=[("LwFPlugin", {"alpha": 0.5}), ("EWCPlugin", {"ewc_lambda": 1.0})],
    ),
    # The CLI's defaults (chunked MLP, young steps, rehearsal) and a schedule that is young for 20 events.
    "cli-default": lambda seed: LearnerChoice(n_classes=3, device="cpu", seed=seed).factory()(N_FEATURES),
    "torch-young-schedule": lambda seed: TorchLearner(
        "mlp",
        n_features=N_FEATURES,
        n_classes=3,
        device="cpu",
        seed=seed,
        schedule=Schedule(young_events=20, young_steps=3, rehearse_steps=2),
    ),
    # Hedge: members of several models and learning rates, weighted online; one member takes minibatches.
    "hedge-default": lambda seed: HedgeLearner(n_features=N_FEATURES, n_classes=3, device="cpu", seed=seed),
    "hedge-minibatch": lambda seed: HedgeLearner(
        [
            {"model": "logistic", "lr": 0.05},
            {"model": "mlp", "lr": 0.01, "steps": 2, "minibatch_size": 8, "model_kwargs": {"hidden": [8]}},
        ],
        n_features=N_FEATURES,
        n_classes=3,
        device="cpu",
        seed=seed,
    ),
    "hedge-regression": lambda seed: HedgeLearner(
        n_features=N_FEATURES, task="regression", device="cpu", seed=seed, eta=0.05
    ),
    # river: linear models get a seeded Normal initializer so that the seed reaches the state.
    "river-logreg": lambda seed: RiverLearner(
        lambda: multiclass.OneVsRestClassifier(
            linear_model.LogisticRegression(initializer=optim.initializers.Normal(sigma=0.01, seed=seed))
        ),
        n_features=N_FEATURES,
        n_classes=3,
    ),
    "river-scaled-logreg": lambda seed: RiverLearner(
        lambda: (
            preprocessing.StandardScaler()
            | multiclass.OneVsRestClassifier(
                linear_model.LogisticRegression(initializer=optim.initializers.Normal(sigma=0.01, seed=seed))
            )
        ),
        n_features=N_FEATURES,
        n_classes=3,
    ),
    "river-hat": lambda seed: RiverLearner(
        lambda: tree.HoeffdingAdaptiveTreeClassifier(grace_period=20, seed=seed),
        n_features=N_FEATURES,
        n_classes=3,
    ),
    "river-arf": lambda seed: RiverLearner(
        "river.forest.ARFClassifier",
        n_features=N_FEATURES,
        n_classes=3,
        model_kwargs={"n_models": 3, "seed": seed},
    ),
    "river-linreg": lambda seed: RiverLearner(
        lambda: linear_model.LinearRegression(initializer=optim.initializers.Normal(sigma=0.01, seed=seed)),
        n_features=N_FEATURES,
        task="regression",
    ),
}


@pytest.fixture(params=sorted(LEARNERS))
def make(request) -> Callable[[int], Learner]:
    return LEARNERS[request.param]


def is_classifier(learner: Learner) -> bool:
    return getattr(learner, "task", "classification") == "classification"


def batches(learner: Learner, n_batches: int = 4, size: int = 32, seed: int = 1):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        X = rng.normal(size=(size, N_FEATURES)).astype(np.float32)
        if is_classifier(learner):
            y = rng.integers(0, 3, size=size).astype(np.int64)
        else:
            y = (X @ np.arange(N_FEATURES) + rng.normal(size=size)).astype(np.float32)
        out.append((X, y))
    return out


def flat(state, prefix=""):
    """Flatten a state tree to {path: leaf} for exact comparisons."""
    if isinstance(state, dict):
        items = {}
        for k, v in state.items():
            items.update(flat(v, f"{prefix}/{k}"))
        return items
    if isinstance(state, (list, tuple)):
        items = {}
        for i, v in enumerate(state):
            items.update(flat(v, f"{prefix}/{i}"))
        return items
    return {prefix: state}


def assert_states_equal(a: dict, b: dict) -> None:
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        x, y = fa[k], fb[k]
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and x.dtype == y.dtype, k
            assert torch.equal(x.cpu(), y.cpu()), k
        else:
            assert x == y, k


def assert_states_differ(a: dict, b: dict) -> None:
    with pytest.raises(AssertionError):
        assert_states_equal(a, b)


def learned_state(learner: Learner) -> dict:
    """The state without its config (which records the constructor's own seed)."""
    return {k: v for k, v in learner.state_dict().items() if k != "config"}


def predictions(learner: Learner, X: np.ndarray) -> list[np.ndarray]:
    out = [learner.predict_batch(X)]
    if is_classifier(learner):
        out.append(learner.predict_proba_batch(X))
    return out


# ------------------------------------------------------------------ contract
def test_implements_the_learner_protocol(make):
    assert isinstance(make(0), Learner)


def test_learn_batch_returns_a_report_with_n_samples(make):
    learner = make(0)
    for X, y in batches(learner, n_batches=2, size=17):
        report = learner.learn_batch(X, y)
        assert isinstance(report, LearnReport)
        assert report.n_samples == 17
        loss = report.loss_value()
        assert loss is not None and np.isfinite(loss)
    empty = learner.learn_batch(np.zeros((0, N_FEATURES), np.float32), batches(learner)[0][1][:0])
    assert empty.n_samples == 0


def test_predictions_have_the_documented_shapes(make):
    learner = make(0)
    X, y = batches(learner)[0]
    learner.learn_batch(X, y)
    pred = learner.predict_batch(X)
    assert pred.shape == (len(X),)
    if is_classifier(learner):
        assert np.issubdtype(pred.dtype, np.integer)
        proba = learner.predict_proba_batch(X)
        assert proba.shape == (len(X), 3)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(proba.argmax(axis=1), pred)
    else:
        assert np.issubdtype(pred.dtype, np.floating)
    assert learner.predict_batch(X[:0]).shape == (0,)


def test_state_round_trip_without_pickle_gives_identical_predictions_and_learning(make):
    original = make(0)
    data = batches(original, n_batches=6)
    for X, y in data[:3]:
        original.learn_batch(X, y)

    blob = dumps_state(original.state_dict())
    restored = make(123)  # a different init: everything must come from the state
    restored.load_state_dict(loads_state(blob))
    assert_states_equal(learned_state(original), learned_state(restored))

    probe = data[-1][0]
    for a, b in zip(predictions(original, probe), predictions(restored, probe)):
        np.testing.assert_array_equal(a, b)

    # Continued learning is bit-identical too (optimizer moments and step counts restored).
    for X, y in data[3:5]:
        ra, rb = original.learn_batch(X, y), restored.learn_batch(X, y)
        assert ra.loss_value() == rb.loss_value()
    assert_states_equal(learned_state(original), learned_state(restored))
    for a, b in zip(predictions(original, probe), predictions(restored, probe)):
        np.testing.assert_array_equal(a, b)


def test_state_dict_is_a_snapshot(make):
    learner = make(0)
    data = batches(learner)
    learner.learn_batch(*data[0])
    snap = learner.state_dict()
    frozen = loads_state(dumps_state(snap))
    for X, y in data[1:]:
        learner.learn_batch(X, y)
    assert_states_equal(snap, frozen)


def test_clone_is_fresh_and_independent(make):
    original = make(0)
    data = batches(original)
    original.learn_batch(*data[0])
    before = original.state_dict()

    clone = original.clone()
    assert clone is not original
    # Fresh: same configuration and seed -> the same state as a new learner.
    assert_states_equal(clone.state_dict(), make(0).state_dict())
    for X, y in data[1:]:
        clone.learn_batch(X, y)
    assert_states_equal(before, original.state_dict())
    assert_states_differ(before, clone.state_dict())


def test_inputs_are_not_mutated(make):
    learner = make(0)
    for X, y in batches(learner):
        X_before, y_before = X.copy(), y.copy()
        learner.learn_batch(X, y)
        learner.predict_batch(X)
        if is_classifier(learner):
            learner.predict_proba_batch(X)
        np.testing.assert_array_equal(X, X_before)
        np.testing.assert_array_equal(y, y_before)
        assert X.dtype == X_before.dtype and y.dtype == y_before.dtype


def test_read_only_and_other_dtype_inputs_are_accepted(make):
    learner = make(0)
    X, y = batches(learner)[0]
    X64 = X.astype(np.float64)
    X64.flags.writeable = False
    y_ro = y.astype(np.int32 if is_classifier(learner) else np.float64)
    y_ro.flags.writeable = False
    assert learner.learn_batch(X64, y_ro).n_samples == len(X)
    assert learner.predict_batch(X64).shape == (len(X),)


def test_seeded_determinism(make):
    a, b = make(7), make(7)
    assert_states_equal(a.state_dict(), b.state_dict())
    for X, y in batches(a):
        a.learn_batch(X, y)
        b.learn_batch(X, y)
    assert_states_equal(a.state_dict(), b.state_dict())
    assert_states_differ(make(7).state_dict()["model"], make(8).state_dict()["model"])


# ------------------------------------------------------------------ n_learned
def test_n_learned_counts_events_and_survives_state_and_clone(make):
    learner = make(0)
    assert learner.n_learned == 0
    sizes = [len(y) for _, y in batches(learner)]
    for X, y in batches(learner):
        learner.learn_batch(X, y)
    assert learner.n_learned == sum(sizes)
    restored = make(0)
    restored.load_state_dict(loads_state(dumps_state(learner.state_dict())))
    assert restored.n_learned == learner.n_learned
    assert learner.clone().n_learned == 0


# --------------------------------------------------------------- plugin hooks
PLUGINS: dict[str, Callable[[], object]] = {
    "ewc": lambda: EWC(strength=10.0, consolidate_every=None),
    "reservoir": lambda: ReservoirReplay(capacity=20, seed=0),
    "balanced": lambda: ClassBalancedReplay(3, capacity=30, seed=0),
    "base": lambda: _Counting(),
}
# The optional hooks each shipped plugin declares; a plugin that loses or gains one fails here.
PLUGIN_HOOKS = {
    "ewc": {Consolidates, ResetsAnchors, Relaxable},
    "reservoir": {Refreshable},
    "balanced": {Refreshable},
    "base": set(),
}


class _Counting(BasePlugin):
    def __init__(self) -> None:
        self.updates = 0

    def after_update(self, model, X, y) -> None:
        self.updates += 1

    def clone(self):
        return _Counting()


@pytest.fixture(params=sorted(PLUGINS))
def plugin_name(request) -> str:
    return request.param


def test_every_plugin_is_an_update_plugin_with_its_declared_hooks(plugin_name):
    plugin = PLUGINS[plugin_name]()
    assert isinstance(plugin, UpdatePlugin)
    hooks = {cap for cap in (Consolidates, ResetsAnchors, Relaxable, Refreshable) if isinstance(plugin, cap)}
    assert hooks == PLUGIN_HOOKS[plugin_name]
    clone = plugin.clone()
    assert type(clone) is type(plugin) and clone is not plugin


def test_the_learner_drives_each_hook_its_plugins_declare(plugin_name):
    plugin = PLUGINS[plugin_name]()
    learner = TorchLearner("logistic", n_features=N_FEATURES, n_classes=3, device="cpu", plugins=[plugin])
    assert isinstance(learner, Consolidating) and isinstance(learner, Adaptable)
    declared = PLUGIN_HOOKS[plugin_name]
    for X, y in batches(learner):
        learner.learn_batch(X, y)
    assert learner.consolidate() == (1 if Consolidates in declared else 0)
    assert learner.reset_consolidation() == (1 if ResetsAnchors in declared else 0)
    changes = learner.adapt(ewc_factor=0.5, replay_refresh=0.5)
    assert ("ewc_strength" in changes) == (Relaxable in declared)
    assert ("replay_evicted" in changes) == (Refreshable in declared)
    if Relaxable in declared:
        assert changes["ewc_strength"] == [10.0, 5.0]
        assert learner.restore_plasticity() == {"ewc_strength": [5.0, 10.0]}
    else:
        assert learner.restore_plasticity() == {}


def test_adapt_reports_plugins_in_the_learners_order():
    learner = TorchLearner(
        "logistic",
        n_features=N_FEATURES,
        n_classes=3,
        device="cpu",
        plugins=[
            ReservoirReplay(capacity=20, seed=0),
            EWC(strength=4.0),
            ReservoirReplay(capacity=20, seed=1),
        ],
    )
    for X, y in batches(learner):
        learner.learn_batch(X, y)
    changes = learner.adapt(ewc_factor=0.25, replay_refresh=0.5)
    assert list(changes) == ["replay_evicted", "ewc_strength"]
    assert changes["ewc_strength"] == [4.0, 1.0] and changes["replay_evicted"] > 0


def test_optional_capabilities_are_declared_by_the_torch_family_only(make):
    # The engine and the reconciler resolve these once per learner; river and avalanche have neither.
    learner = make(0)
    torch_family = isinstance(learner, TorchLearner)
    assert isinstance(learner, Consolidating) == torch_family
    assert isinstance(learner, Adaptable) == torch_family
