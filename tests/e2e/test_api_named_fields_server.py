"""Named-field rows through a real server: ``streamlearn serve`` (uvicorn) on a directory registry.

The unit tests (tests/unit/test_api_features.py) cover the cases through
TestClient; this one checks that the same bytes on a real socket are parsed,
encoded and answered the same way, and that the metrics count unknown fields.
"""

from __future__ import annotations

import httpx
import pytest
from cli_processes import serving

from learners.neural.learner import TorchLearner
from serving.api.model import ServedModel
from serving.registry.file_backend import FileRegistry
from serving.registry.versions import Version
from stream.core.features import FeatureEncoder, FeatureSchema, FieldSpec

SCHEMA = FeatureSchema(
    (
        FieldSpec("amount"),
        FieldSpec("age"),
        FieldSpec("is_new", "boolean"),
        FieldSpec("user", "categorical"),
        FieldSpec("country", "categorical", buckets=64),
    )
)
# Every numeric field present: the plain MLP standing in for the embedding model does not impute.
ROWS = [
    {"user": "u_81723", "country": "FR", "amount": 12.5, "age": 30, "is_new": True},
    {"user": None, "amount": -1, "age": 0, "is_new": False, "referrer": "ads"},
]


@pytest.fixture
def served(tmp_path):
    reg = FileRegistry(tmp_path / "registry")
    doc = {"n_features": SCHEMA.width, "task": "classification", "classes": ["no", "yes"]}
    doc["features"] = SCHEMA.to_dict()
    learner = TorchLearner(n_features=SCHEMA.width, device="cpu", seed=0)
    version = reg.validate(reg.publish(learner.state_dict(), Version(number=0, schema=doc)).number)
    with serving(tmp_path / "registry") as url:
        yield url, reg, version


def test_a_real_server_encodes_named_rows_as_the_schema_does_and_says_what_is_wrong(served):
    url, reg, version = served
    labels, proba = ServedModel.load(reg, version.number).predict(FeatureEncoder(SCHEMA).encode(ROWS).X)
    with httpx.Client(base_url=url, timeout=60) as client:
        for i, row in enumerate(ROWS):
            got = client.post("/predict", json={"x": row}).json()
            assert got["version"] == version.number
            assert got["prediction"] == ["no", "yes"][labels[i]]
            assert got["probabilities"] == pytest.approx(proba[i].tolist(), rel=1e-6)
        batch = client.post("/predict/batch", json={"rows": ROWS}).json()
        assert batch["predictions"] == [["no", "yes"][i] for i in labels]
        bad = client.post("/predict", json={"x": {**ROWS[0], "is_new": "maybe"}})
        assert bad.status_code == 422
        assert bad.json()["detail"] == [
            {
                "loc": ["body", "x", "is_new"],
                "msg": "expected a boolean (true/false, 0/1), got str 'maybe'",
                "type": "value_error",
            }
        ]
        listed = client.post("/predict", json={"x": [0.0] * SCHEMA.width})
        assert listed.status_code == 422 and "takes named fields" in listed.json()["detail"][0]["msg"]
        assert client.get("/models/current").json()["served"]["schema"]["features"] == SCHEMA.to_dict()
        assert 'streamlearn_api_unknown_fields_total{field="referrer"} 2.0' in client.get("/metrics").text
