"""TorchLearner behaviour beyond the generic contract: it learns, it refuses bad
input and foreign state with clear errors, it keeps the global RNGs alone, it
never syncs with the device on the learn path, and plugins hook in narrowly."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from learners.neural.hooks import BasePlugin, UpdatePlugin
from learners.neural.learner import TorchLearner
from learners.neural.models import MODELS, ModelFactory, build_model, model_factory
from learners.state_io import dumps_state, loads_state
from stream.core.errors import ConfigError, SchemaMismatchError


def separable(n: int, d: int = 10, seed: int = 0, n_classes: int = 2):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d, n_classes))
    X = rng.normal(size=(n, d)).astype(np.float32)
    return X, (X @ W).argmax(axis=1).astype(np.int64)


# --------------------------------------------------------------- it learns
@pytest.mark.parametrize("model", ["logistic", "mlp", "resmlp"])
def test_learns_a_linearly_separable_problem(model):
    X, y = separable(12_000, n_classes=2)
    W = np.random.default_rng(0).normal(size=(10, 2))
    margin = np.abs(X @ (W[:, 1] - W[:, 0])) > 0.5  # a clear gap between the classes
    X, y = X[margin][:6000], y[margin][:6000]
    learner = TorchLearner(model, n_features=10, lr=0.05, device="cpu")
    for _ in range(3):  # one pass is a stream; a few passes make the test robust
        for i in range(0, 5000, 250):
            learner.learn_batch(X[i : i + 250], y[i : i + 250])
    acc = (learner.predict_batch(X[5000:]) == y[5000:]).mean()
    assert acc > 0.95, acc
    assert learner.n_learned == 15_000


def test_regression_reduces_mse():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 5)).astype(np.float32)
    y = (X @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + 1.0 + 0.05 * rng.normal(size=2000)).astype(np.float32)
    learner = TorchLearner("mlp", n_features=5, task="regression", lr=0.01, device="cpu")

    def mse() -> float:
        return float(((learner.predict_batch(X) - y) ** 2).mean())

    start = mse()
    for _ in range(20):
        for i in range(0, 2000, 200):
            learner.learn_batch(X[i : i + 200], y[i : i + 200])
    assert mse() < 0.05 * start
    assert learner.predict_batch(X).dtype == np.float32


# ------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    ("y", "match"),
    [
        (np.array([0, 1, 2, 0]), r"label 2 is outside 0\.\.1"),
        (np.array([0, -1, 1, 0]), r"label -1 is outside"),
        (np.array([0.0, 1.0, 1.0, 0.0]), "integer class indices"),
        (np.array([0, 1, 1]), r"shape \(4,\)"),
        (np.array([[0], [1], [1], [0]]), r"shape \(4,\)"),
    ],
)
def test_bad_labels_raise_a_clear_value_error(y, match):
    learner = TorchLearner(n_features=3, device="cpu")
    before = learner.state_dict()
    with pytest.raises(ValueError, match=match):
        learner.learn_batch(np.zeros((4, 3), np.float32), y)
    assert learner.n_learned == 0
    assert torch.equal(before["model"]["linear.weight"], learner.state_dict()["model"]["linear.weight"])


@pytest.mark.parametrize("shape", [(4, 2), (4,), (4, 3, 1)])
def test_wrong_feature_shape_raises(shape):
    learner = TorchLearner(n_features=3, device="cpu")
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        learner.learn_batch(np.zeros(shape, np.float32), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        learner.predict_batch(np.zeros(shape, np.float32))


def test_regression_has_no_probabilities():
    learner = TorchLearner(n_features=2, task="regression", device="cpu")
    with pytest.raises(ConfigError, match="predict_batch"):
        learner.predict_proba_batch(np.zeros((1, 2), np.float32))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": "transformer"}, "logistic, mlp, resmlp"),
        ({"optimizer": "lbfgs"}, "adam"),
        ({"lr": 0}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"task": "ranking"}, "task"),
        ({"n_classes": 1}, "n_classes"),
        ({"n_features": 0}, "n_features"),
        ({"steps_per_batch": 0}, "steps_per_batch"),
        ({"minibatch_size": 0}, "minibatch_size"),
        ({"minibatch_size": 2.5}, "minibatch_size"),
        ({"device": "tpu:0"}, "device"),
        ({"device": "banana"}, "device"),
        ({"model": "mlp", "model_kwargs": {"depth": 3}}, "depth"),
        ({"model": "mlp", "model_kwargs": {"hidden": (0,)}}, "width"),
        ({"model": lambda d, k: nn.Linear(d, k), "model_kwargs": {"x": 1}}, "model_kwargs"),
        ({"model": 42}, "factory"),
        ({"plugins": [object()]}, "UpdatePlugin"),
    ],
)
def test_bad_configuration_raises_config_error(kwargs, match):
    args = {"n_features": 3, "device": "cpu", **kwargs}
    with pytest.raises(ConfigError, match=match):
        TorchLearner(**args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_requested_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        TorchLearner(n_features=3, device="cuda")
    assert TorchLearner(n_features=3, device="auto").torch_device.type == "cpu"
    assert (
        TorchLearner(n_features=3, device="auto", amp=True)
        .learn_batch(np.zeros((2, 3), np.float32), np.array([0, 1]))
        .n_samples
        == 2
    )  # amp is a no-op on CPU


# ---------------------------------------------------------------- state
def trained(**kw) -> TorchLearner:
    learner = TorchLearner(**{"n_features": 4, "device": "cpu", **kw})
    X, y = separable(64, d=4, n_classes=kw.get("n_classes", 2))
    learner.learn_batch(X, y)
    return learner


@pytest.mark.parametrize(
    ("other", "match"),
    [
        ({"n_features": 5}, "n_features: state has 4, learner has 5"),
        ({"n_classes": 3}, "n_classes: state has 2, learner has 3"),
        ({"model": "mlp"}, "model: state has 'logistic', learner has 'mlp'"),
        ({"task": "regression"}, "task"),
        ({"optimizer": "sgd"}, "optimizer"),
    ],
)
def test_loading_a_mismatched_state_raises_schema_mismatch(other, match):
    state = loads_state(dumps_state(trained().state_dict()))
    target = TorchLearner(**{"n_features": 4, "device": "cpu", **other})
    before = target.state_dict()
    with pytest.raises(SchemaMismatchError, match=match):
        target.load_state_dict(state)
    after = target.state_dict()  # a refused state changes nothing
    for k, v in before["model"].items():
        assert torch.equal(v, after["model"][k])


def test_model_kwargs_mismatch_and_malformed_states_are_refused():
    state = trained(model="mlp", model_kwargs={"hidden": [8]}).state_dict()
    TorchLearner("mlp", n_features=4, device="cpu", model_kwargs={"hidden": (8,)}).load_state_dict(state)
    with pytest.raises(SchemaMismatchError, match="model_kwargs"):
        TorchLearner("mlp", n_features=4, device="cpu", model_kwargs={"hidden": (16,)}).load_state_dict(state)
    learner = TorchLearner(n_features=4, device="cpu")
    with pytest.raises(SchemaMismatchError):
        learner.load_state_dict({"model": {}})
    bad = trained().state_dict()
    bad["model"]["linear.weight"] = torch.zeros(3, 3)
    with pytest.raises(SchemaMismatchError, match="does not fit"):
        learner.load_state_dict(bad)
    old = trained().state_dict()
    old["config"]["format"] = 99
    with pytest.raises(SchemaMismatchError, match="format"):
        learner.load_state_dict(old)


def test_restore_keeps_counters_and_the_configured_learning_rate():
    source = trained(lr=0.5)
    target = TorchLearner(n_features=4, device="cpu", lr=0.001)
    target.load_state_dict(loads_state(dumps_state(source.state_dict())))
    assert target.n_learned == 64
    assert target.state_dict()["optimizer"]["param_groups"][0]["lr"] == 0.001


def test_custom_factory_and_model_factory_are_accepted():
    factory = model_factory("resmlp", width=8, n_blocks=1)
    a = TorchLearner(factory, n_features=4, device="cpu")
    b = TorchLearner("resmlp", n_features=4, device="cpu", model_kwargs={"width": 8, "n_blocks": 1})
    assert a.config() == b.config()
    a.load_state_dict(b.state_dict())

    def tiny(d: int, k: int) -> nn.Module:
        return nn.Sequential(nn.Linear(d, k))

    c = TorchLearner(tiny, n_features=4, device="cpu")
    assert c.config()["model"].endswith("tiny")
    c.learn_batch(*separable(8, d=4))
    assert c.clone().n_learned == 0


# ----------------------------------------------------------------- RNGs
def test_construction_and_cloning_do_not_touch_global_rngs():
    torch.manual_seed(1234)
    np.random.seed(5)
    random.seed(6)
    seed, torch_state = torch.initial_seed(), torch.get_rng_state()
    np_state, py_state = np.random.get_state()[1].copy(), random.getstate()

    learner = TorchLearner("resmlp", n_features=4, device="cpu", seed=99)
    learner.clone()
    learner.load_state_dict(learner.state_dict())

    assert torch.initial_seed() == seed
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert random.getstate() == py_state


def test_seed_not_global_state_decides_the_initial_weights():
    torch.manual_seed(1)
    a = TorchLearner("mlp", n_features=4, device="cpu", seed=3).state_dict()["model"]
    torch.manual_seed(2)
    b = TorchLearner("mlp", n_features=4, device="cpu", seed=3).state_dict()["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------- no host sync
def test_learn_path_never_reads_device_values(monkeypatch):
    learner = TorchLearner("resmlp", n_features=4, device="cpu", model_kwargs={"width": 8})
    X, y = separable(32, d=4)
    learner.learn_batch(X, y)  # warm up outside the trap

    def trap(name):
        def fail(self, *a, **k):
            raise AssertionError(f"host sync on the learn path: Tensor.{name}")

        return fail

    for name in ("item", "cpu", "numpy", "tolist", "__float__", "__int__", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, trap(name))
    report = learner.learn_batch(X, y)
    monkeypatch.undo()
    assert isinstance(report.loss, torch.Tensor) and report.loss.dim() == 0
    assert not report.loss.requires_grad
    assert report.loss.device == learner.torch_device


# -------------------------------------------------------------- plugins
class Recorder(BasePlugin):
    """Records hook calls; duplicates the batch (a stand-in for replay); adds a penalty."""

    def __init__(self, weight: float = 0.0) -> None:
        self.weight = weight
        self.calls: list[str] = []
        self.seen = 0

    def before_update(self, X, y):
        self.calls.append("before")
        return torch.cat([X, X]), torch.cat([y, y])

    def penalty(self, model):
        self.calls.append("penalty")
        return self.weight * sum((p * p).sum() for p in model.parameters())

    def after_update(self, model, X, y):
        self.calls.append("after")
        self.seen += X.shape[0]

    def state_dict(self):
        return {"seen": self.seen, "anchor": torch.arange(3.0)}

    def load_state_dict(self, state):
        self.seen = state["seen"]

    def clone(self):
        return Recorder(self.weight)


def test_plugins_are_called_in_order_and_checkpointed():
    plugin = Recorder(weight=1e-3)
    assert isinstance(plugin, UpdatePlugin)
    learner = TorchLearner(n_features=4, device="cpu", steps_per_batch=2, plugins=[plugin])
    X, y = separable(16, d=4)
    report = learner.learn_batch(X, y)
    assert plugin.calls == ["before", "penalty", "penalty", "after"]
    assert plugin.seen == 16 and report.n_samples == 16  # the original batch, not the augmented one

    state = loads_state(dumps_state(learner.state_dict()))
    assert state["plugins"][0]["seen"] == 16
    clone = learner.clone()
    assert clone.plugins[0] is not plugin and clone.plugins[0].seen == 0
    clone.load_state_dict(state)
    assert clone.plugins[0].seen == 16
    with pytest.raises(SchemaMismatchError, match="plugin"):
        TorchLearner(n_features=4, device="cpu").load_state_dict(state)


def test_minibatches_take_one_step_per_chunk_per_pass():
    plugin = Recorder(weight=1e-3)
    learner = TorchLearner(n_features=4, device="cpu", steps_per_batch=2, minibatch_size=7, plugins=[plugin])
    X, y = separable(16, d=4)
    learner.learn_batch(X, y)
    # The Recorder doubles the batch like a replay buffer: chunks cover the replayed rows too.
    assert plugin.calls.count("penalty") == 2 * 5  # 2 passes x ceil(32 / 7) chunks
    plugin.calls.clear()
    learner.learn_batch(X[:3], y[:3])  # 6 rows, smaller than a chunk: one step per pass
    assert plugin.calls.count("penalty") == 2


def test_minibatches_learn_more_from_a_short_stream_than_one_step_per_batch():
    X, y = separable(2000, d=4)
    accs = {}
    for mb in (None, 25):
        learner = TorchLearner(n_features=4, device="cpu", lr=0.01, minibatch_size=mb)
        for i in range(0, 1000, 250):
            learner.learn_batch(X[i : i + 250], y[i : i + 250])
        accs[mb] = float((learner.predict_batch(X[1000:]) == y[1000:]).mean())
    assert accs[25] > accs[None] + 0.05, accs


def test_a_penalty_changes_the_update():
    X, y = separable(64, d=4)
    plain = TorchLearner(n_features=4, device="cpu")
    pen = TorchLearner(n_features=4, device="cpu", plugins=[Recorder(weight=10.0)])
    plain.learn_batch(X, y)
    pen.learn_batch(X, y)
    assert not torch.equal(plain.module.linear.weight, pen.module.linear.weight)


# ---------------------------------------------------------------- zoo
def test_model_zoo_builds_every_model_with_the_requested_shapes():
    for name in MODELS:
        out = build_model(name, 7, 3)(torch.zeros(5, 7))
        assert out.shape == (5, 3), name
    with pytest.raises(ConfigError, match="logistic, mlp, resmlp"):
        build_model("nope", 3, 2)
    with pytest.raises(ConfigError, match="does not accept"):
        build_model("logistic", 3, 2, hidden=(4,))
    with pytest.raises(ConfigError, match="n_outputs"):
        build_model("logistic", 3, 0)
    with pytest.raises(ConfigError, match="unknown model"):
        model_factory("nope")
    assert model_factory("mlp", hidden=(4,)) == ModelFactory("mlp", {"hidden": (4,)})


def test_resmlp_blocks_start_as_identity():
    model = build_model("resmlp", 4, 2, width=8, n_blocks=3)
    x = torch.randn(3, 8)
    for block in model.blocks:
        assert torch.equal(block(x), x)


# ----------------------------------------------------------------- CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_learner_round_trips_to_cpu():
    X, y = separable(512, d=4)
    gpu = TorchLearner("mlp", n_features=4, device="cuda", amp=True)
    for _ in range(5):
        report = gpu.learn_batch(X, y)
    assert report.loss.device.type == "cuda"
    cpu = TorchLearner("mlp", n_features=4, device="cpu")
    cpu.load_state_dict(loads_state(dumps_state(gpu.state_dict())))
    assert (cpu.predict_batch(X) == gpu.predict_batch(X)).mean() > 0.99
