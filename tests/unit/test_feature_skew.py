"""No training-serving skew: a record gets the same probabilities from the daemon's path and from /predict.

The daemon learns a named-field stream (missing values, categories, text, a
field the schema does not know, string labels, a class that appears late)
and publishes versions through its gate. For the served version, the same
records go (a) through the daemon's path -- the codec in the state the checkpoint
holds, then the learner restored from the published state -- and (b) through
the API as JSON bodies. The probabilities must agree within 1e-6 and the labels
must be the stream's own.
"""

from __future__ import annotations

import random

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from learners.choice import LearnerChoice
from serving.api.app import create_app
from serving.registry.file_backend import FileRegistry
from serving.settings import ServingSettings
from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.records import RawRecord, TopicPartition
from stream.engine.checkpoint import CheckpointStore
from stream.engine.config import EngineConfig
from stream.engine.gate import GateConfig, ValidationGate
from stream.engine.loop import Engine
from stream.engine.oversight import Oversight
from stream.testing.doubles import ListSource
from stream.window.count import CountWindow

DEVICES = ("ios", "android", "web")
WORDS = ("cheap", "flights", "paris", "hotel", "deal", "shoes", "red", "sale")


def click_doc(i: int, rng: random.Random) -> dict:
    user, device = f"u_{rng.randrange(300)}", rng.choice(DEVICES)
    amount = None if rng.random() < 0.15 else round(rng.lognormvariate(3, 1), 2)
    age = None if rng.random() < 0.25 else rng.randrange(18, 80)
    query = " ".join(rng.sample(WORDS, rng.randrange(3, 6))) if rng.random() < 0.9 else ""  # "": missing
    score = (
        (device == "ios") + (int(user[2:]) % 3 == 0) + (amount or 0) / 40 - (age is None) + ("sale" in query)
    )
    label = "click" if score + rng.gauss(0, 0.7) > 1.2 else "skip"
    if i > 1500 and rng.random() < 0.08:
        label = "buy"  # a class that appears late: the model grows its output
    x = {
        "user": user,
        "device": device,
        "amount": amount,
        "age": age,
        "is_new": rng.random() < 0.3,
        "query": query,
    }
    if rng.random() < 0.1:
        x["referrer"] = "newsletter"  # not in the inferred schema: counted, ignored, in both paths
    return {"id": f"e{i}", "ts": 1_700_000_000_000 + i, "x": x, "y": label}


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("skew")
    rng = random.Random(7)
    docs = [click_doc(i, rng) for i in range(3000)]
    # The first poll infers the schema: keep "referrer" out of it so it stays an unknown field.
    for doc in docs[:300]:
        doc["x"].pop("referrer", None)
    records = [RawRecord("clicks", 0, i, d["ts"], None, orjson.dumps(d)) for i, d in enumerate(docs)]
    reg = FileRegistry(tmp / "registry")
    gate = ValidationGate(
        reg, GateConfig(every_batches=4, every_seconds=None, holdout_min_events=100, tolerance=1.0)
    )
    engine = Engine(
        source=ListSource(records, batch_size=300),
        codec=JsonCodec(CodecConfig(n_classes=None)),
        window=CountWindow(100),
        learner_builder=LearnerChoice(n_classes=None, device="cpu", seed=3).factory(),
        store=CheckpointStore(tmp / "ckpt"),
        config=EngineConfig(until_idle_seconds=0),
        oversight=Oversight(gate=gate),
    )
    engine.codec.on_inferred = lambda *_: None
    engine.run()
    return engine, reg, docs, records


def test_the_daemon_learned_the_named_stream_and_grew_a_class(learned):
    engine, reg, _, _ = learned
    schema = engine.codec.schema
    assert {f.name: f.type for f in schema.fields} == {
        "age": "numeric", "amount": "numeric", "device": "categorical", "is_new": "boolean",
        "query": "text", "user": "categorical",
    }  # fmt: skip
    assert engine.codec.labels.classes[2] == "buy" and engine.learner.n_classes == 3  # in order of appearance
    assert engine.codec.unknown_fields["referrer"] > 100
    current = reg.current()
    assert current is not None and current.schema["features"] == schema.to_dict()
    assert engine.stats.accuracy > 0.6  # it learned something: the skew check is not on a constant model


def test_the_api_answers_exactly_what_the_daemon_path_computes(learned):
    engine, reg, docs, records = learned
    version = reg.current()
    # The daemon's path at that version: the codec restored from the version's schema, the learner from its state.
    codec = JsonCodec(CodecConfig(n_classes=None), state=version.schema)
    learner = LearnerChoice(n_classes=None, device="cpu").factory()(
        version.schema["n_features"],
        layout=codec.schema.layout(),
        n_classes=int(reg.load_state(version.number)["config"]["n_classes"]),
    )
    learner.load_state_dict(reg.load_state(version.number))
    sample = records[-400:]
    decoded = codec.decode({TopicPartition("clicks", 0): sample})
    assert len(decoded.events) == len(sample)  # every record decodes: the comparison covers them all
    daemon_proba = learner.predict_proba_batch(decoded.events.X)

    client = TestClient(create_app(ServingSettings(), registry=reg))
    with client:
        api_proba, api_labels = [], []
        for doc in docs[-400:]:
            response = client.post("/predict", json={"x": doc["x"]})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["version"] == version.number
            api_proba.append(body["probabilities"])
            api_labels.append(body["prediction"])
        batch = client.post("/predict/batch", json={"rows": [d["x"] for d in docs[-400:]]}).json()
    api = np.array(api_proba)
    assert api.shape == daemon_proba.shape == (400, 3)
    np.testing.assert_allclose(api, daemon_proba, atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.array(batch["probabilities"]), daemon_proba, atol=1e-6, rtol=0)
    classes = version.schema["classes"]
    assert api_labels == [classes[i] for i in daemon_proba.argmax(axis=1)]
    assert set(api_labels) <= {"skip", "click", "buy"}
