"""The codec's named-field path: schema inference or declaration, dead letters per field, labels grown online."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.errors import SchemaMismatchError
from stream.core.features import FeatureEncoder, FeatureSchema, FieldSpec
from stream.core.records import RawRecord, TopicPartition

TP = TopicPartition("clicks", 0)
SCHEMA = FeatureSchema(
    (FieldSpec("amount"), FieldSpec("device", "categorical", buckets=64), FieldSpec("is_new", "boolean"))
)


def poll(docs, start=0):
    values = [d if isinstance(d, bytes) else orjson.dumps(d) for d in docs]
    return {TP: [RawRecord("clicks", 0, start + i, 1000 + i, None, v) for i, v in enumerate(values)]}


def click(i, **x):
    base = {"amount": float(i), "device": ["ios", "web"][i % 2], "is_new": i % 3 == 0}
    return {"id": f"e{i}", "x": {**base, **x}, "y": ["skip", "click"][i % 2]}


def test_the_first_poll_infers_a_schema_and_locks_it_with_the_dimension():
    codec = JsonCodec(CodecConfig(n_classes=None))
    seen = []
    codec.on_inferred = lambda schema, summary: seen.append((schema, summary))
    out = codec.decode(poll([click(i) for i in range(20)]))
    assert len(out.events) == 20 and not out.dead_letters
    schema = codec.schema
    assert [(f.name, f.type) for f in schema.fields] == [
        ("amount", "numeric"), ("device", "categorical"), ("is_new", "boolean")
    ]  # fmt: skip
    assert codec.n_features == schema.width == 3 and len(seen) == 1 and "device" in seen[0][1]
    np.testing.assert_array_equal(
        out.events.X, FeatureEncoder(schema).encode([click(i)["x"] for i in range(20)]).X
    )
    assert out.events.y.tolist() == [i % 2 for i in range(20)] and codec.labels.classes == ["skip", "click"]


def test_bad_fields_bad_labels_and_bad_envelopes_are_dead_letters_in_poll_order():
    codec = JsonCodec(CodecConfig(n_classes=None, schema=SCHEMA))
    docs = [
        click(0),
        click(1, amount="lots"),
        b"{not json",
        {"x": [1, 2], "y": "skip"},
        {"x": {"amount": 1.0}},
        {"x": {"amount": 1.0}, "y": 2},  # an integer where the stream's classes are named
        click(2, colour="red"),
        {"x": {"is_new": "maybe"}, "y": "click", "ts": "yesterday"},
    ]
    out = codec.decode(poll(docs))
    assert out.rows.tolist() == [0, 6] and out.events.ids.tolist() == ["e0", "e2"]
    reasons = [letter.reason for letter in out.dead_letters]
    assert [letter.record.offset for letter in out.dead_letters] == [1, 2, 3, 4, 5, 7]
    assert reasons[0] == "bad features: feature 'amount': expected a number, got str 'lots'"
    assert reasons[1].startswith("bad json")
    assert reasons[2].startswith("bad features: x must be an object of named fields")
    assert reasons[3] == "missing label: no 'y' field"
    assert "is a number, but this stream's classes are named" in reasons[4]
    assert reasons[5].startswith("bad timestamp")
    assert dict(codec.unknown_fields) == {"colour": 1}


def test_a_record_dead_lettered_for_its_features_never_adds_a_class():
    codec = JsonCodec(CodecConfig(n_classes=None, schema=SCHEMA))
    codec.decode(poll([click(0), {"x": {"amount": "x"}, "y": "refund"}]))
    assert codec.labels.classes == ["skip"]


def test_integer_labels_grow_the_class_count_on_both_the_named_and_the_numeric_path():
    named = JsonCodec(CodecConfig(n_classes=None, schema=SCHEMA))
    named.decode(poll([{"x": {"amount": 1.0}, "y": y} for y in (0, 1, 4)]))
    numeric = JsonCodec(CodecConfig(n_classes=None, n_features=2))
    out = numeric.decode(poll([{"x": [1, 2], "y": y} for y in (0, 1, 6)]))
    assert named.n_classes == 5 and numeric.n_classes == 7 and out.events.y.tolist() == [0, 1, 6]
    fixed = JsonCodec(CodecConfig(n_classes=2, n_features=2))
    refused = fixed.decode(poll([{"x": [1, 2], "y": 6}]))
    assert refused.dead_letters[0].reason == "bad label: 6 is outside [0, 2)"


def test_the_state_restores_schema_labels_and_unknown_counts_and_decodes_identically():
    codec = JsonCodec(CodecConfig(n_classes=None))
    codec.on_inferred = lambda *_: None
    codec.decode(poll([click(i) for i in range(10)]))
    codec.decode(poll([click(i, extra=1) for i in range(10, 20)], start=10))  # a field that came later
    state = orjson.loads(orjson.dumps(codec.schema_info()))  # what a checkpoint stores
    again = JsonCodec(CodecConfig(n_classes=None), state=state)
    later = poll([click(i) for i in range(20, 40)], start=20)
    a, b = codec.decode(later), again.decode(later)
    np.testing.assert_array_equal(a.events.X, b.events.X)
    assert a.events.y.tolist() == b.events.y.tolist()
    assert again.schema == codec.schema and again.unknown_fields["extra"] == 10
    assert state["classes"] == ["skip", "click"] and state["n_features"] == 3


def test_a_declared_schema_that_differs_from_the_checkpoint_is_refused():
    codec = JsonCodec(CodecConfig(n_classes=None, schema=SCHEMA))
    other = SCHEMA.with_fields(FieldSpec("device", "categorical", buckets=128))
    with pytest.raises(SchemaMismatchError, match="different feature schema"):
        JsonCodec(CodecConfig(n_classes=None, schema=other), state=codec.schema_info())


def test_numeric_list_rows_keep_the_numeric_path():
    codec = JsonCodec(CodecConfig(n_classes=None))
    out = codec.decode(poll([{"x": [1.0, 2.0], "y": 1}, {"x": [3.0, 4.0], "y": 0}]))
    assert codec.schema is None and codec.n_features == 2 and out.events.X.tolist() == [[1, 2], [3, 4]]


def test_one_object_x_among_number_lists_does_not_turn_the_stream_into_named_fields():
    codec = JsonCodec(CodecConfig(n_classes=None))
    docs = (
        [{"x": [1.0, 2.0, 3.0], "y": 0}] * 5
        + [{"x": {"a": 1}, "y": 0}]
        + [{"x": [4.0, 5.0, 6.0], "y": 1}] * 5
    )
    out = codec.decode(poll(docs))
    assert codec.schema is None and codec.n_features == 3 and len(out.events) == 10
    assert [letter.reason for letter in out.dead_letters] == [
        "bad features: x is an object but no feature_names are configured"
    ]
