"""The numpy forward serving uses for small models equals the torch forward it replaces.

Every model family :func:`numpy_forward` claims -- logistic, mlp, resmlp, with
and without standardisation, on plain numbers and on named fields (missing
values, booleans, categorical and text tables) -- is trained for a few batches
(so the statistics and weights are not their initial values), published as a
state, loaded as the API loads it, and compared with torch on the same rows:
within 1e-6, with the same labels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learners.families import load_inference_model
from learners.neural.inference import TorchInference, inference_module
from learners.neural.learner import TorchLearner
from learners.neural.numpy_forward import numpy_forward
from stream.core.features.encode import FeatureEncoder
from stream.core.features.schema import FeatureSchema, FieldSpec

SCHEMA = FeatureSchema(
    (
        FieldSpec("amount"),
        FieldSpec("age"),
        FieldSpec("is_new", "boolean"),
        FieldSpec("user", "categorical", buckets=512, dim=4),
        FieldSpec("note", "text", buckets=256, dim=3, max_tokens=4),
    )
)
MODELS = {
    "logistic": {},
    "mlp": {"hidden": [16, 8]},
    "resmlp": {"width": 8, "n_blocks": 2},
}


def _named_rows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    docs = [
        {
            "amount": None if rng.random() < 0.3 else float(rng.normal(100, 30)),
            "age": None if rng.random() < 0.2 else int(rng.integers(18, 90)),
            "is_new": None if rng.random() < 0.2 else bool(rng.random() < 0.5),
            "user": None if rng.random() < 0.1 else f"u{int(rng.integers(0, 40))}",
            "note": rng.choice(["", "late payment again", "ok", "a b c d e f", None]),
        }
        for _ in range(n)
    ]
    X = FeatureEncoder(SCHEMA).encode(docs).X
    assert np.isnan(X).any()  # missing values reach the model
    return X, rng.integers(0, 3, n)


def _number_rows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal([5.0, -200.0, 0.0, 1e4], [1.0, 50.0, 3.0, 1e3], size=(n, 4)).astype(np.float32)
    return X, (X[:, 0] > 5).astype(np.int64) + (X[:, 2] > 0)


def _trained_state(model: str, kwargs: dict, named: bool, task: str, standardize: bool) -> tuple:
    rng = np.random.default_rng(7)
    X, y = _named_rows(rng, 600) if named else _number_rows(rng, 600)
    model_kwargs = {**kwargs, "standardize": standardize}
    if named:
        model_kwargs["layout"] = SCHEMA.layout()
    learner = TorchLearner(
        model,
        n_features=X.shape[1],
        device="cpu",
        lr=0.05,
        task=task,
        n_classes=3 if task == "classification" else None,
        model_kwargs=model_kwargs,
        seed=1,
    )
    for part_X, part_y in zip(np.array_split(X, 6), np.array_split(y, 6)):
        learner.learn_batch(part_X, part_y.astype(np.float32) if task == "regression" else part_y)
    return learner.state_dict(), X


@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("named", [False, True], ids=["numbers", "named"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_numpy_forward_equals_torch_forward(model: str, named: bool, standardize: bool) -> None:
    state, X = _trained_state(model, MODELS[model], named, "classification", standardize)
    module, _ = inference_module(state)
    forward = numpy_forward(module)
    assert forward is not None
    with torch.inference_mode():
        expected = module(torch.from_numpy(X)).numpy()
    got = forward(X)
    assert got.dtype == np.float32 and got.shape == expected.shape
    # Logits: float32 rounding relative to their scale (unstandardised ones reach the thousands).
    atol = 1e-6 * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol)
    # One row at a time, as /predict sends them.
    np.testing.assert_allclose(forward(X[:1]), expected[:1], rtol=0, atol=atol)


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("named", [False, True], ids=["numbers", "named"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_served_predictions_equal_the_torch_path(model: str, named: bool, task: str) -> None:
    state, X = _trained_state(model, MODELS[model], named, task, standardize=True)
    served = load_inference_model(state)
    assert isinstance(served, TorchInference) and served.forward is not None
    torch_only = TorchInference(served.module, served.n_features, served.classification)
    X = X[: served.forward.max_rows]  # more rows go to torch
    labels, proba = served.predict(X)
    expected_labels, expected_proba = torch_only.predict(X)
    if task == "classification":
        np.testing.assert_allclose(proba, expected_proba, rtol=0, atol=1e-6)
        # Labels agree wherever the top two probabilities are not within rounding of each other.
        top2 = np.sort(expected_proba, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 1e-5
        np.testing.assert_array_equal(labels[clear], expected_labels[clear])
    else:
        assert proba is None and expected_proba is None
        np.testing.assert_allclose(labels, expected_labels, rtol=1e-6, atol=1e-6)


def test_overflowing_rows_give_non_finite_outputs_without_warnings() -> None:
    # The API answers a non-finite output with 422; numpy must produce one too, silently.
    state, _ = _trained_state("mlp", MODELS["mlp"], False, "classification", standardize=False)
    served = load_inference_model(state)
    X = np.full((1, 4), 3e38, np.float32)
    with np.errstate(all="raise"):
        _, proba = served.predict(X)
    _, expected = TorchInference(served.module, served.n_features, served.classification).predict(X)
    assert not np.isfinite(proba).all() and not np.isfinite(expected).all()


def test_unknown_layers_keep_the_torch_forward() -> None:
    assert numpy_forward(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh())) is None
    assert numpy_forward(torch.nn.GELU(approximate="tanh")) is None
