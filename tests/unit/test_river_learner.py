"""RiverLearner beyond the generic contract: it learns river's synthetic
streams prequentially, its pickle-free state round-trips for the common river
models (identical predictions, then identical continued learning), the state
decoder refuses anything off its allow-list without importing it, and bad
configuration fails early with ConfigError."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from river import compose, datasets, forest, linear_model, multiclass, naive_bayes, optim, preprocessing, tree

from learners.river_adapter import state as river_state
from learners.river_adapter.learner import RiverLearner, resolve_model_spec
from learners.river_adapter.state import from_plain, resolve_global, to_plain
from learners.state_io import dumps_state, loads_state
from stream.core.errors import CheckpointError, ConfigError, SchemaMismatchError


def sea(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rows = list(datasets.synth.SEA(variant=0, seed=seed).take(n))
    X = np.array([[x[i] for i in range(3)] for x, _ in rows], dtype=np.float32)
    return X, np.array([int(label) for _, label in rows], dtype=np.int64)


def linear(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    return X, (X @ np.array([2.0, -1.0, 0.5]) + 1.0 + 0.1 * rng.normal(size=n)).astype(np.float32)


def prequential_accuracy(learner: RiverLearner, X: np.ndarray, y: np.ndarray, batch: int = 100) -> float:
    correct = 0
    for i in range(0, len(X), batch):
        correct += int((learner.predict_batch(X[i : i + batch]) == y[i : i + batch]).sum())
        learner.learn_batch(X[i : i + batch], y[i : i + batch])
    return correct / len(X)


# ------------------------------------------------------------- it learns
# Measured on SEA(variant=0, seed=1), 5000 rows (river 0.26.1): HAT 0.93,
# scaled logistic regression 0.97, ARF(5) 0.96; majority class 0.68.
@pytest.mark.parametrize(
    ("factory", "floor"),
    [
        (lambda: tree.HoeffdingAdaptiveTreeClassifier(seed=0), 0.85),
        (lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(), 0.92),
        (lambda: forest.ARFClassifier(n_models=5, seed=0), 0.88),
    ],
    ids=["hat", "scaled-logreg", "arf"],
)
def test_prequential_accuracy_on_sea(factory, floor):
    X, y = sea(5000)
    learner = RiverLearner(factory, n_features=3)
    assert prequential_accuracy(learner, X, y) > floor
    assert learner.n_learned == 5000


def test_regression_error_falls_and_loss_is_prequential():
    X, y = linear(3000)
    learner = RiverLearner(
        lambda: preprocessing.StandardScaler() | linear_model.LinearRegression(),
        n_features=3,
        task="regression",
    )
    losses = [learner.learn_batch(X[i : i + 100], y[i : i + 100]).loss for i in range(0, 3000, 100)]
    assert all(isinstance(v, float) for v in losses)
    assert np.mean(losses[-5:]) < 0.05 * np.mean(losses[:2])
    pred = learner.predict_batch(X[:50])
    assert pred.dtype == np.float32 and float(np.mean((pred - y[:50]) ** 2)) < 0.1


def test_report_loss_false_reports_none_and_learns_the_same():
    X, y = sea(400)
    a = RiverLearner("river.tree.HoeffdingTreeClassifier", n_features=3)
    b = RiverLearner("river.tree.HoeffdingTreeClassifier", n_features=3, report_loss=False)
    assert a.learn_batch(X, y).loss > 0
    assert b.learn_batch(X, y).loss is None
    np.testing.assert_array_equal(a.predict_proba_batch(X), b.predict_proba_batch(X))


# ----------------------------------------------------------- round trips
ROUND_TRIP = {
    "logreg": lambda: linear_model.LogisticRegression(),
    "hoeffding-tree": lambda: tree.HoeffdingTreeClassifier(grace_period=50),
    "hat": lambda: tree.HoeffdingAdaptiveTreeClassifier(grace_period=50, seed=3),
    "arf": lambda: forest.ARFClassifier(n_models=4, seed=3),
    "gaussian-nb": lambda: naive_bayes.GaussianNB(),
    "scaled-logreg": lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
    "ovr-logreg": lambda: multiclass.OneVsRestClassifier(
        linear_model.LogisticRegression(initializer=optim.initializers.Normal(sigma=0.1, seed=3))
    ),
    "linreg": lambda: linear_model.LinearRegression(),
    "hoeffding-tree-regressor": lambda: tree.HoeffdingTreeRegressor(grace_period=50),
    "bayesian-linreg": lambda: linear_model.BayesianLinearRegression(),
}
REGRESSORS = {"linreg", "hoeffding-tree-regressor", "bayesian-linreg"}


def outputs(learner: RiverLearner, X: np.ndarray) -> list[np.ndarray]:
    out = [learner.predict_batch(X)]
    if learner.task == "classification":
        out.append(learner.predict_proba_batch(X))
    return out


@pytest.mark.parametrize("name", sorted(ROUND_TRIP))
def test_state_round_trip_predicts_and_keeps_learning_identically(name):
    task = "regression" if name in REGRESSORS else "classification"
    X, y = linear(2400) if task == "regression" else sea(2400)
    make = lambda: RiverLearner(ROUND_TRIP[name], n_features=3, task=task)  # noqa: E731
    original = make()
    for i in range(0, 1500, 150):
        original.learn_batch(X[i : i + 150], y[i : i + 150])

    restored = make()
    restored.load_state_dict(loads_state(dumps_state(original.state_dict())))
    assert restored.n_learned == original.n_learned == 1500
    probe = X[2000:]
    for a, b in zip(outputs(original, probe), outputs(restored, probe)):
        np.testing.assert_array_equal(a, b)

    for i in range(1500, 2000, 100):
        Xb, yb = X[i : i + 100], y[i : i + 100]
        assert original.learn_batch(Xb, yb).loss == restored.learn_batch(Xb, yb).loss
    for a, b in zip(outputs(original, probe), outputs(restored, probe)):
        np.testing.assert_array_equal(a, b)
    assert torch.equal(original.state_dict()["model"]["tree"], restored.state_dict()["model"]["tree"])


def test_state_preserves_shared_references_and_cycles():
    scaler = preprocessing.StandardScaler()
    graph = {"a": scaler, "b": [scaler], "self": None}
    graph["self"] = graph
    back = from_plain(to_plain(graph))
    assert back["a"] is back["b"][0] and back["self"] is back
    assert type(back["a"]) is preprocessing.StandardScaler


def test_state_dict_cannot_save_a_lambda_and_says_where():
    learner = RiverLearner(
        lambda: compose.FuncTransformer(lambda x: x) | linear_model.LogisticRegression(), n_features=3
    )
    with pytest.raises(CheckpointError, match="cannot save river state at Pipeline.steps.*lambda"):
        learner.state_dict()


# ------------------------------------------------------- allow-list refusal
def crafted(tree: str, names: list[str], layouts: list | None = None) -> dict:
    return {
        "format": river_state.STATE_FORMAT,
        "names": names,
        "layouts": layouts or [],
        "tensors": [],
        "tree": tree,
    }


@pytest.mark.parametrize(
    "name",
    [
        "os:system",
        "builtins:eval",
        "builtins:exec",
        "posix:system",
        "subprocess:Popen",
        "pickle:loads",
        "evil_module_that_does_not_exist:run",  # never even imported
        "river.datasets.base:download_dataset",  # river's I/O packages are excluded
        "river.checks.common:check_pickling",
        "river.utils.pandas:importlib",  # a module river imported: not a class/function defined there
        "river.tree.hoeffding_tree_regressor:deepcopy",  # a stdlib function river imported under its own name
        "river.tree.base:defaultdict.fromkeys",  # an attribute chain out of an imported class
        "river.x:<lambda>",
        "river..x:y",
        "river.linear_model:LogisticRegression:x",
    ],
)
def test_decoder_refuses_names_off_the_allow_list_without_importing_them(name, monkeypatch):
    imported = []
    real_import = importlib.import_module
    monkeypatch.setattr(
        importlib, "import_module", lambda mod, *a: imported.append(mod) or real_import(mod, *a)
    )
    with pytest.raises(CheckpointError):
        from_plain(crafted('["g",0]', [name]))
    assert all(m.startswith("river") for m in imported), imported
    assert "evil_module_that_does_not_exist" not in imported


def test_decoder_refuses_non_river_instances_and_fake_native_types():
    with pytest.raises(CheckpointError, match="not a river class"):
        from_plain(crafted('["o",0,0,[]]', ["builtins:dict"], [[0, [], []]]))
    with pytest.raises(CheckpointError, match="not a native river type"):
        from_plain(
            crafted('["x",0,0,false,["t",[]],null]', ["river.linear_model.log_reg:LogisticRegression"])
        )
    with pytest.raises(CheckpointError, match="not on the allow-list"):  # a defaultdict factory
        from_plain(crafted('["dd",0,["g",0],[],[]]', ["builtins:eval"]))
    with pytest.raises(CheckpointError, match="unknown node"):
        from_plain(crafted('["__reduce__",0]', []))
    with pytest.raises(CheckpointError, match="format"):
        from_plain({"format": 99, "tree": "null"})


def test_tampered_learner_state_is_refused_and_leaves_the_learner_unchanged():
    X, y = sea(300)
    learner = RiverLearner("river.tree.HoeffdingTreeClassifier", n_features=3)
    learner.learn_batch(X, y)
    before = learner.predict_proba_batch(X)
    state = learner.state_dict()
    state["model"]["names"] = [
        "os:system" if n.startswith("river.tree") else n for n in state["model"]["names"]
    ]
    with pytest.raises(CheckpointError, match="os:system"):
        learner.load_state_dict(loads_state(dumps_state(state)))
    np.testing.assert_array_equal(learner.predict_proba_batch(X), before)


def test_resolve_global_checks_identity_not_just_the_prefix():
    assert (
        resolve_global("river.tree.hoeffding_tree_classifier:HoeffdingTreeClassifier")
        is tree.HoeffdingTreeClassifier
    )
    with pytest.raises(CheckpointError, match="not a class or function defined there"):
        resolve_global("river.tree:HoeffdingTreeClassifier")  # re-exported: stored names are canonical


def test_state_that_does_not_fit_the_learner_is_a_schema_mismatch():
    three = RiverLearner("river.tree.HoeffdingTreeClassifier", n_features=3)
    with pytest.raises(SchemaMismatchError, match="n_features"):
        RiverLearner("river.tree.HoeffdingTreeClassifier", n_features=4).load_state_dict(three.state_dict())
    with pytest.raises(SchemaMismatchError, match="estimator"):
        RiverLearner("river.naive_bayes.GaussianNB", n_features=3).load_state_dict(three.state_dict())
    with pytest.raises(SchemaMismatchError):
        three.load_state_dict({"model": {}})


def test_from_state_rebuilds_a_spec_learner():
    X, y = sea(300)
    a = RiverLearner("river.forest.ARFClassifier", n_features=3, model_kwargs={"n_models": 2, "seed": 1})
    a.learn_batch(X, y)
    b = RiverLearner.from_state(loads_state(dumps_state(a.state_dict())))
    np.testing.assert_array_equal(a.predict_proba_batch(X), b.predict_proba_batch(X))
    with pytest.raises(ConfigError, match="factory"):
        RiverLearner.from_state(
            RiverLearner(lambda: tree.HoeffdingTreeClassifier(), n_features=3).state_dict()
        )


# --------------------------------------------------------- configuration
def test_spec_strings_resolve_only_river_estimators():
    assert resolve_model_spec("river.linear_model.LogisticRegression") is linear_model.LogisticRegression
    assert (
        resolve_model_spec("river.tree.HoeffdingAdaptiveTreeClassifier")
        is tree.HoeffdingAdaptiveTreeClassifier
    )
    for bad in [
        "os.system",
        "builtins.eval",
        "river",
        "river.nope.Thing",
        "river.utils.math.minkowski_distance",
        "numpy.random.RandomState",
        "river.linear_model.__class__",
    ]:
        with pytest.raises(ConfigError, match="is not a river estimator"):
            resolve_model_spec(bad)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("os.system",), {"n_features": 2}, "not a river estimator"),
        (
            ("river.tree.HoeffdingTreeClassifier",),
            {"n_features": 2, "task": "regression"},
            "not a river Regressor",
        ),
        (("river.linear_model.LinearRegression",), {"n_features": 2}, "not a river Classifier"),
        (
            ("river.linear_model.LogisticRegression",),
            {"n_features": 2, "n_classes": 3},
            "OneVsRestClassifier",
        ),
        (
            ("river.tree.HoeffdingTreeClassifier",),
            {"n_features": 2, "model_kwargs": {"bogus": 1}},
            "do not fit",
        ),
        (
            (lambda: tree.HoeffdingTreeClassifier(),),
            {"n_features": 2, "model_kwargs": {"grace_period": 5}},
            "only to a spec",
        ),
        ((tree.HoeffdingTreeClassifier(),), {"n_features": 2}, "not a model instance"),
        ((lambda: 42,), {"n_features": 2}, "not a river estimator"),
        ((42,), {"n_features": 2}, "model_factory must be"),
        (("river.tree.HoeffdingTreeClassifier",), {"n_features": 0}, "n_features"),
        (("river.tree.HoeffdingTreeClassifier",), {"n_features": 2, "n_classes": 1}, "n_classes"),
        (("river.tree.HoeffdingTreeClassifier",), {"n_features": 2, "task": "ranking"}, "task"),
        (
            ("river.tree.HoeffdingTreeClassifier",),
            {"n_features": 2, "feature_names": ["a", "a"]},
            "feature_names",
        ),
        (("river.tree.HoeffdingTreeClassifier",), {"n_features": 2, "feature_names": "ab"}, "feature_names"),
        (("river.tree.HoeffdingTreeClassifier",), {"n_features": 2, "mini_batch": True}, "learn_many"),
    ],
)
def test_bad_configuration_is_a_config_error(args, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RiverLearner(*args, **kwargs)


def test_clone_calls_the_factory_again_and_refuses_a_shared_model():
    learner = RiverLearner(lambda: tree.HoeffdingTreeClassifier(), n_features=3)
    assert learner.clone().model is not learner.model
    shared = tree.HoeffdingTreeClassifier()
    with pytest.raises(ConfigError, match="same estimator twice"):
        RiverLearner(lambda: shared, n_features=3).clone()


# ------------------------------------------------- inputs and predictions
def test_feature_names_are_the_keys_river_sees():
    learner = RiverLearner(
        "river.linear_model.LinearRegression", n_features=2, task="regression", feature_names=["price", "qty"]
    )
    learner.learn_batch(np.ones((4, 2), np.float32), np.ones(4, np.float32))
    assert set(learner.model.weights) == {"price", "qty"}


def test_inputs_are_not_mutated_even_when_read_only():
    X, y = sea(200)
    X_ro, y_ro = X.astype(np.float64), y.astype(np.int32)
    X_ro.flags.writeable = y_ro.flags.writeable = False
    X_copy, y_copy = X_ro.copy(), y_ro.copy()
    learner = RiverLearner(
        lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(), n_features=3
    )
    learner.learn_batch(X_ro, y_ro)
    learner.predict_proba_batch(X_ro)
    np.testing.assert_array_equal(X_ro, X_copy)
    np.testing.assert_array_equal(y_ro, y_copy)


def test_bad_inputs_raise_value_errors():
    learner = RiverLearner("river.tree.HoeffdingTreeClassifier", n_features=3, n_classes=3)
    with pytest.raises(ValueError, match="shape"):
        learner.learn_batch(np.zeros((2, 4), np.float32), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="outside 0..2"):
        learner.learn_batch(np.zeros((2, 3), np.float32), np.array([0, 3]))
    with pytest.raises(ValueError, match="integer class indices"):
        learner.learn_batch(np.zeros((2, 3), np.float32), np.array([0.0, 1.0]))
    with pytest.raises(ConfigError, match="regression"):
        RiverLearner(
            "river.linear_model.LinearRegression", n_features=3, task="regression"
        ).predict_proba_batch(np.zeros((1, 3), np.float32))


def test_predict_proba_is_normalised_with_sane_defaults():
    X, y = sea(300)
    learner = RiverLearner("river.tree.HoeffdingTreeClassifier", n_features=3, n_classes=4)
    # Untrained: no class seen -> uniform rows, class 0.
    np.testing.assert_array_equal(learner.predict_proba_batch(X[:5]), np.full((5, 4), 0.25, np.float32))
    np.testing.assert_array_equal(learner.predict_batch(X[:5]), np.zeros(5, np.int64))
    learner.learn_batch(X, y)  # only classes 0 and 1 seen
    proba = learner.predict_proba_batch(X)
    assert proba.dtype == np.float32 and proba.shape == (300, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert (proba[:, 2:] == 0).all()
    np.testing.assert_array_equal(learner.predict_batch(X), proba.argmax(axis=1))


def test_binary_models_keyed_by_bool_map_to_class_indices():
    X, y = sea(500)
    learner = RiverLearner(
        lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(), n_features=3
    )
    learner.learn_batch(X, y)
    proba = learner.predict_proba_batch(X[:20])
    x0 = dict(zip(("x0", "x1", "x2"), X[0].tolist()))
    assert proba[0, 1] == pytest.approx(learner.model.predict_proba_one(x0)[True], rel=1e-6)


def test_mini_batch_path_learns_with_learn_many_or_says_why_not():
    import importlib.util

    if importlib.util.find_spec("pandas") is None:
        # pandas is not a dependency: asking for learn_many without it is a clear error, not a silent loop.
        with pytest.raises(ConfigError, match="pandas is not installed"):
            RiverLearner(lambda: linear_model.LogisticRegression(), n_features=3, mini_batch=True)
        auto = RiverLearner(lambda: linear_model.LogisticRegression(), n_features=3, mini_batch=None)
        assert auto.config()["mini_batch"] is False
        return
    X, y = sea(2000)
    make = lambda: RiverLearner(  # noqa: E731
        lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        n_features=3,
        mini_batch=None,
    )
    learner = make()
    assert learner.config()["mini_batch"] is True
    assert prequential_accuracy(learner, X, y, batch=200) > 0.9
    restored = make()
    restored.load_state_dict(loads_state(dumps_state(learner.state_dict())))
    np.testing.assert_array_equal(learner.predict_proba_batch(X), restored.predict_proba_batch(X))
