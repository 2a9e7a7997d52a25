"""Named-field rows through the API (TestClient over a FileRegistry): versions published with a feature schema.

The model is a plain TorchLearner over the encoded width: codes fed as plain
numbers mean nothing to it, which is fine for what is tested here -- that the
API validates and encodes exactly as the schema's encoder does, and says what
is wrong when it cannot. A plain MLP does not impute missing numbers (NaN);
the ``imputing`` fixture makes it, as the embedding model does, so that rows
with missing fields get an answer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from learners.neural.inference import TorchInference
from learners.neural.learner import TorchLearner
from serving.api.app import create_app
from serving.api.metrics import OTHER_FIELDS, UNKNOWN_FIELD_SERIES
from serving.api.model import ServedModel
from serving.registry.file_backend import FileRegistry
from serving.registry.versions import Version
from serving.settings import ServingSettings
from stream.core.features import FeatureEncoder, FeatureSchema, FieldSpec
from stream.core.features import encode as encode_module

SCHEMA = FeatureSchema(
    (
        FieldSpec("amount"),
        FieldSpec("age"),
        FieldSpec("is_new", "boolean"),
        FieldSpec("user", "categorical", buckets=1 << 16),
        FieldSpec("country", "categorical", buckets=64),
        FieldSpec("device", "categorical", buckets=64, default="web"),
        FieldSpec("note", "text", buckets=128, max_tokens=3),
    )
)
ROWS = [
    {"user": "u_81723", "country": "FR", "amount": 12.5, "age": None, "is_new": True, "note": "two words"},
    {"user": "u_2", "amount": -3, "is_new": False, "device": "ios"},
    {"country": "DE", "age": 41, "referrer": "ads"},  # missing fields; one unknown
    {},
]


def publish(reg, schema=SCHEMA, *, classes=None, width=None) -> Version:
    learner = TorchLearner(n_features=width or schema.width, device="cpu", seed=0)
    doc = {"n_features": schema.width, "task": "classification", "n_classes": 2, "classes": classes}
    doc["features"] = schema.to_dict()
    v = reg.publish(learner.state_dict(), Version(number=0, schema=doc))
    return reg.validate(v.number)


@pytest.fixture
def reg(tmp_path):
    return FileRegistry(tmp_path / "registry")


@pytest.fixture
def imputing(monkeypatch):
    """Served torch models read a missing number (NaN) as 0, standing in for the embedding model's imputation."""
    predict = TorchInference.predict
    monkeypatch.setattr(TorchInference, "predict", lambda self, X: predict(self, np.nan_to_num(X, nan=0.0)))


def serve(reg, **settings):
    app = create_app(ServingSettings(poll_interval_s=0.05, **settings), registry=reg)
    return TestClient(app)


def expected(reg, number, rows, schema=SCHEMA):
    """What the model answers for ``rows`` encoded by a fresh encoder of ``schema``: the reference."""
    labels, proba = ServedModel.load(reg, number).predict(FeatureEncoder(schema).encode(rows).X)
    return labels.tolist(), proba.tolist()


def test_named_rows_predict_exactly_what_the_schema_encoder_and_the_model_give(reg, imputing):
    v = publish(reg, classes=["no", "yes"])
    with serve(reg) as client:
        for row in ROWS:
            got = client.post("/predict", json={"x": row, "id": "r"})
            assert got.status_code == 200, got.text
            labels, proba = expected(reg, v.number, [row])
            assert got.json() == {
                "id": "r",
                "version": v.number,
                "prediction": ["no", "yes"][labels[0]],
                "probabilities": proba[0],
            }
        batch = client.post("/predict/batch", json={"rows": ROWS}).json()
        labels, proba = expected(reg, v.number, ROWS)
        assert batch["predictions"] == [["no", "yes"][i] for i in labels]
        assert batch["probabilities"] == proba
        # Not one answer for every row: the fields reach the model (the plain MLP saturates on raw codes).
        assert len({tuple(p) for p in proba}) > 1


def test_the_encoder_is_built_once_per_version_not_per_request(reg, imputing, monkeypatch):
    publish(reg)
    built = []
    init = encode_module.FeatureEncoder.__init__
    monkeypatch.setattr(
        encode_module.FeatureEncoder,
        "__init__",
        lambda self, schema: (built.append(1), init(self, schema))[1],
    )
    with serve(reg) as client:
        before = len(built)
        for _ in range(5):
            assert client.post("/predict", json={"x": ROWS[0]}).status_code == 200
        assert client.post("/predict/batch", json={"rows": ROWS}).status_code == 200
        assert before == 1 and len(built) == 1


def test_missing_and_null_fields_are_fine(reg, imputing):
    publish(reg)
    with serve(reg) as client:
        all_null = {name: None for name in SCHEMA.names}
        for x in ({}, all_null, {"amount": 1.0}):
            assert client.post("/predict", json={"x": x}).status_code == 200, x
        # Absent and null are the same missing value.
        assert (
            client.post("/predict", json={"x": {}, "id": 1}).json()
            == client.post("/predict", json={"x": all_null, "id": 1}).json()
        )


@pytest.mark.parametrize(
    ("field", "value", "msg"),
    [
        ("amount", "12", "expected a number, got str '12'"),
        ("amount", 1e39, "expected a finite number within float32 range, got float 1e+39"),
        ("is_new", 2, "expected a boolean (true/false, 0/1), got int 2"),
        ("user", [1, 2], "expected a string, number or boolean, got list [1, 2]"),
        ("note", 5, "expected a string, got int 5"),
    ],
)
def test_a_field_of_the_wrong_kind_is_422_naming_it_and_what_was_expected_and_received(
    reg, imputing, field, value, msg
):
    publish(reg)
    with serve(reg) as client:
        single = client.post("/predict", json={"x": {**ROWS[0], field: value}})
        assert single.status_code == 422
        assert single.json()["detail"] == [{"loc": ["body", "x", field], "msg": msg, "type": "value_error"}]
        batch = client.post("/predict/batch", json={"rows": [ROWS[1], {**ROWS[0], field: value}]})
        assert batch.status_code == 422
        assert batch.json()["detail"][0]["loc"] == ["body", "rows", 1, field]
        assert batch.json()["detail"][0]["msg"] == msg


def test_unknown_fields_are_ignored_and_counted_with_bounded_names(reg, imputing):
    v = publish(reg)
    with serve(reg) as client:
        got = client.post("/predict", json={"x": {**ROWS[0], "referrer": "ads", "session": [1]}})
        assert got.status_code == 200
        assert got.json()["probabilities"] == expected(reg, v.number, [ROWS[0]])[1][0]
        assert client.post("/predict/batch", json={"rows": ROWS + [{"referrer": 1}]}).status_code == 200
        text = client.get("/metrics").text
        assert 'streamlearn_api_unknown_fields_total{field="referrer"} 3.0' in text
        assert 'streamlearn_api_unknown_fields_total{field="session"} 1.0' in text
        for i in range(UNKNOWN_FIELD_SERIES + 10):  # a client inventing names
            assert client.post("/predict", json={"x": {f"junk{i}": 1}}).status_code == 200
        lines = [
            line
            for line in client.get("/metrics").text.splitlines()
            if line.startswith("streamlearn_api_unknown_fields_total")
        ]
        assert len(lines) == UNKNOWN_FIELD_SERIES + 1
        assert f'streamlearn_api_unknown_fields_total{{field="{OTHER_FIELDS}"}} 12.0' in lines


def test_unknown_fields_are_422_when_the_schema_rejects_them(reg, imputing):
    publish(reg, FeatureSchema(SCHEMA.fields, unknown="reject"))
    with serve(reg) as client:
        assert client.post("/predict", json={"x": ROWS[0]}).status_code == 200
        single = client.post("/predict", json={"x": {**ROWS[0], "referrer": "ads"}})
        assert single.status_code == 422
        (err,) = single.json()["detail"]
        assert err["loc"] == ["body", "x", "referrer"] and err["msg"].startswith("unknown field 'referrer'")
        batch = client.post("/predict/batch", json={"rows": [ROWS[0], ROWS[2]]})
        assert batch.status_code == 422 and batch.json()["detail"][0]["loc"] == [
            "body",
            "rows",
            1,
            "referrer",
        ]
        # A bad known field is named before an unknown one, as the encoder orders them.
        both = client.post("/predict", json={"x": {"amount": "x", "referrer": "ads"}}).json()["detail"][0]
        assert both["loc"] == ["body", "x", "amount"]


def test_a_list_row_to_a_named_field_model_is_422_naming_the_fields(reg):
    v = publish(reg)
    with serve(reg) as client:
        single = client.post("/predict", json={"x": [0.0] * SCHEMA.width})
        assert single.status_code == 422
        (err,) = single.json()["detail"]
        assert err["loc"] == ["body", "x"]
        assert err["msg"].startswith(
            f"this model (version {v.number}) takes named fields: {list(SCHEMA.names)}"
        )
        batch = client.post("/predict/batch", json={"rows": [ROWS[0], [0.0] * SCHEMA.width]})
        assert batch.status_code == 422 and batch.json()["detail"][0]["loc"] == ["body", "rows", 1]


def test_numeric_named_versions_keep_strict_numbers(reg):
    # A version without a feature schema whose stream named its (numeric) features: as before.
    learner = TorchLearner(n_features=2, device="cpu", seed=0)
    doc = {"n_features": 2, "feature_names": ["a", "b"]}
    reg.validate(reg.publish(learner.state_dict(), Version(number=0, schema=doc)).number)
    with serve(reg) as client:
        assert client.post("/predict", json={"x": {"a": 1, "b": 2.5}}).status_code == 200
        for value, msg in (("1", "Input should be a valid number"), (True, "Input should be a valid number")):
            resp = client.post("/predict", json={"x": {"a": value, "b": 0}})
            assert resp.status_code == 422
            assert resp.json()["detail"][0]["loc"] == ["body", "x", "a"]
            assert resp.json()["detail"][0]["msg"].startswith(msg)
        nan = client.post(
            "/predict/batch",
            content=b'{"rows": [{"a": 0, "b": 0}, {"a": 0, "b": NaN}]}',
            headers={"content-type": "application/json"},
        )
        assert nan.status_code == 422 and nan.json()["detail"][0]["loc"] == ["body", "rows", 1, "b"]
        assert "finite number" in nan.json()["detail"][0]["msg"]


def test_models_current_shows_the_feature_schema_and_the_docs_a_named_request(reg):
    v = publish(reg, classes=["no", "yes"])
    with serve(reg) as client:
        served = client.get("/models/current").json()["served"]
        assert served["number"] == v.number
        assert FeatureSchema.from_dict(served["schema"]["features"]) == SCHEMA
        assert served["schema"]["classes"] == ["no", "yes"]
        listed = client.get("/models").json()["versions"][0]["schema"]["features"]
        assert listed == SCHEMA.to_dict()
        doc = client.get("/openapi.json").json()
        body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
        assert isinstance(body["examples"]["named fields"]["value"]["x"], dict)
        assert (
            "named fields"
            in doc["paths"]["/predict/batch"]["post"]["requestBody"]["content"]["application/json"][
                "examples"
            ]
        )


def test_a_model_that_does_not_impute_missing_fields_is_422_naming_them(reg):
    v = publish(reg)  # no ``imputing``: NaN in, NaN out
    with serve(reg) as client:
        full = {"amount": 1.0, "age": 2, "is_new": False}
        assert client.post("/predict", json={"x": full}).status_code == 200
        resp = client.post("/predict", json={"x": {"amount": None, "is_new": True}})
        assert resp.status_code == 422
        assert resp.json()["detail"][0]["msg"] == (
            f"model version {v.number} gives no finite output for this row: "
            "it does not impute the missing fields ['amount', 'age']; send them"
        )
        batch = client.post("/predict/batch", json={"rows": [full, {"amount": 1, "is_new": 1}]})
        assert batch.status_code == 422 and batch.json()["detail"][0]["loc"] == ["body", "rows", 1]
        assert "missing fields ['age']" in batch.json()["detail"][0]["msg"]


def test_a_version_whose_schema_does_not_fit_its_model_is_not_served(reg):
    publish(reg, width=SCHEMA.width + 1)
    with serve(reg) as client:
        health = client.get("/health").json()
        assert health["model_version"] is None
        assert "encodes 9 columns, its model takes 10" in json.dumps(health["last_error"])
