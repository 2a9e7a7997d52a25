"""Named features in torch models: FeatureInput, the split optimizer, EWC on sparse tables, the memory budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learners.choice import LearnerChoice
from learners.neural.ewc import EWC
from learners.neural.feature_input import FeatureInput
from learners.neural.inference import inference_module
from learners.neural.learner import TorchLearner
from learners.neural.models import build_model
from learners.neural.split_optimizer import SplitOptimizer
from learners.neural.standardize import MaskedStandardizer
from learners.state_io import dumps_state, loads_state
from stream.core.errors import ConfigError
from stream.core.features.encode import FeatureEncoder
from stream.core.features.schema import FeatureSchema, FieldSpec

SCHEMA = FeatureSchema(
    (
        FieldSpec("amount"),
        FieldSpec("is_new", "boolean"),
        FieldSpec("user", "categorical", buckets=512, dim=4),
        FieldSpec("note", "text", buckets=256, dim=3, max_tokens=4),
    )
)
LAYOUT = SCHEMA.layout()
WIDTH = SCHEMA.width  # 2 numeric + 1 + 4 codes


def _records(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    users = rng.integers(0, 40, n)
    xs = [
        {
            "amount": None if rng.random() < 0.3 else float(rng.normal(100, 30)),
            "is_new": None if rng.random() < 0.2 else bool(rng.random() < 0.5),
            "user": None if rng.random() < 0.1 else f"u{u}",
            "note": rng.choice(["", "late payment again", "ok", None]),
        }
        for u in users
    ]
    X = FeatureEncoder(SCHEMA).encode(xs).X
    return X, (users % 2).astype(np.int64)  # the label lives in the user: only an embedding can learn it


def _learner(**kw) -> TorchLearner:
    kwargs = {"layout": LAYOUT, "hidden": [16]}
    return TorchLearner("mlp", n_features=WIDTH, device="cpu", lr=0.05, model_kwargs=kwargs, **kw)


def test_masked_standardizer_matches_statistics_of_present_values_across_batches():
    rng = np.random.default_rng(1)
    x = rng.normal(5, 3, size=(300, 3))
    x[rng.random(x.shape) < 0.4] = np.nan
    s = MaskedStandardizer(3)
    for part in np.array_split(x, 7):
        s.update(torch.from_numpy(part).float())
    present = ~np.isnan(x)
    np.testing.assert_array_equal(s.count.numpy(), present.sum(axis=0))
    np.testing.assert_allclose(s.mean.numpy(), np.nanmean(x.astype(np.float32), axis=0), rtol=1e-6)
    np.testing.assert_allclose(
        s.m2.numpy() / s.count.numpy(), np.nanvar(x.astype(np.float32), axis=0), rtol=1e-5
    )
    out = s(torch.from_numpy(x).float())
    assert not torch.isnan(out).any()
    assert torch.all(out[torch.from_numpy(~present)] == 0)  # missing -> the mean


def test_feature_input_shapes_indicators_and_padding():
    inp = FeatureInput(LAYOUT)
    assert (inp.in_features, inp.out_features) == (WIDTH, 2 * 2 + 4 + 3)
    X = torch.from_numpy(_records(np.random.default_rng(0), 64)[0])
    out = inp(X)
    assert out.shape == (64, inp.out_features)
    assert torch.equal(out[:, 2:4], torch.isnan(X[:, :2]).float())
    # An unused text slot (code 0) changes nothing; a used one does.
    row = X[:1].clone()
    row[0, 3:] = torch.tensor([1.0, 0, 0, 0])
    same = row.clone()
    same[0, 5] = 0.0
    assert torch.equal(inp(row), inp(same))
    other = row.clone()
    other[0, 4] = 7.0
    assert not torch.equal(inp(row), inp(other))


def test_model_with_layout_checks_width():
    with pytest.raises(ConfigError, match="encodes 7 columns"):
        build_model("mlp", 6, 2, layout=LAYOUT)
    for name in ("logistic", "mlp", "resmlp"):
        assert build_model(name, WIDTH, 3, layout=LAYOUT)(torch.zeros(2, WIDTH)).shape == (2, 3)


def test_learns_a_categorical_signal_with_missing_values():
    rng = np.random.default_rng(0)
    learner = _learner()
    assert isinstance(learner.torch_optimizer, SplitOptimizer)
    for _ in range(60):
        X, y = _records(rng, 64)
        learner.learn_batch(X, y)
    X, y = _records(rng, 500)
    rows = ~np.isnan(X[:, 2]) & (X[:, 2] != 1.0)  # rows whose user is known
    assert (learner.predict_batch(X)[rows] == y[rows]).mean() > 0.95


def test_sparse_step_touches_only_used_rows_and_state_round_trips():
    rng = np.random.default_rng(0)
    learner = _learner()
    table = learner.module.scaler.tables[0].weight
    before = table.detach().clone()
    X, y = _records(rng, 32)
    learner.learn_batch(X, y)
    moved = (table.detach() != before).any(dim=1)
    used = torch.zeros(table.shape[0], dtype=torch.bool)
    used[torch.from_numpy(X[:, 2]).long()] = True
    assert moved.any() and not (moved & ~used).any()

    state = loads_state(dumps_state(learner.state_dict()))
    clone = learner.clone()
    clone.load_state_dict(state)
    X2, y2 = _records(rng, 32)
    learner.learn_batch(X2, y2)
    clone.learn_batch(X2, y2)  # the same optimizer state: the same step
    np.testing.assert_allclose(learner.predict_proba_batch(X2), clone.predict_proba_batch(X2), atol=1e-6)


def test_inference_module_rebuilds_the_layout_from_published_state():
    rng = np.random.default_rng(0)
    learner = _learner()
    for _ in range(5):
        learner.learn_batch(*_records(rng, 64))
    X, _ = _records(rng, 100)
    assert np.isnan(X).any() and (X[:, 2] == 1.0).any()
    module, config = inference_module(loads_state(dumps_state(learner.state_dict())))
    assert config["model_kwargs"]["layout"] == LAYOUT
    with torch.inference_mode():
        proba = torch.softmax(module(torch.from_numpy(X)), dim=-1).numpy()
    np.testing.assert_allclose(proba, learner.predict_proba_batch(X), atol=1e-6)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_lr_through_param_groups_reaches_the_tables(optimizer):
    learner = _learner(optimizer=optimizer)
    groups = learner.torch_optimizer.param_groups
    for group in groups:
        group["lr"] = 0.123
    params = {id(p) for g in groups for p in g["params"]}
    assert params == {id(p) for p in learner.module.parameters()}
    assert all(g["lr"] == 0.123 for g in learner.torch_optimizer.param_groups)


def test_ewc_skips_sparse_tables_and_keeps_the_step_sparse():
    rng = np.random.default_rng(0)
    ewc = EWC(strength=100.0, consolidate_every=1)
    learner = _learner(plugins=[ewc])
    for _ in range(3):
        learner.learn_batch(*_records(rng, 32))
    state = ewc.state_dict()
    assert state["fisher"] and not any("tables" in k for k in state["fisher"])
    assert not any("tables" in k for k in state["anchors"])
    assert ewc.penalty(learner.module) is not None


def test_budget_refuses_a_model_too_big_before_allocating():
    big = {"numeric": 1, "tables": [[1 << 24, 64, 1]]}  # 4 GiB of floats: never allocated here
    with pytest.raises(ConfigError, match=r"--max-model-mb is 1024; use fewer buckets or a smaller dim"):
        LearnerChoice().factory()(2, layout=big)
    assert LearnerChoice(max_model_mb=2e5).factory  # a bigger budget is a valid choice
    with pytest.raises(ConfigError, match="--max-model-mb must be a positive number"):
        LearnerChoice(max_model_mb=0)


def test_factory_takes_layout_and_class_count():
    make = LearnerChoice(replay="balanced").factory()
    learner = make(WIDTH, layout=LAYOUT, n_classes=5)
    assert learner.n_classes == 5 and learner.config()["model_kwargs"]["layout"] == LAYOUT
    assert learner.plugins[0].n_classes == 5
    assert make(3).n_classes == 2  # the old one-argument call
    hedge = LearnerChoice(model="hedge").factory()(WIDTH, layout=LAYOUT)
    assert all(m.config()["model_kwargs"]["layout"] == LAYOUT for m in hedge.member_learners)
    with pytest.raises(ConfigError, match="river.* models take numeric rows"):
        LearnerChoice(model="river.linear_model.LogisticRegression").factory()(WIDTH, layout=LAYOUT)
