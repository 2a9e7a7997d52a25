"""The feature schema, its encoding, inference and the label map (stream/core/features)."""

from __future__ import annotations

import json

import mmh3
import numpy as np
import pytest

from stream.core.errors import ConfigError
from stream.core.features import (
    FeatureEncoder,
    FeatureSchema,
    FieldSpec,
    LabelError,
    LabelMap,
    infer_schema,
    load_schema,
)
from stream.core.features.encode import hash_code

SCHEMA = FeatureSchema(
    (
        FieldSpec("amount"),
        FieldSpec("user", "categorical", buckets=4096, dim=4),
        FieldSpec("is_new", "boolean"),
        FieldSpec("note", "text", buckets=512, max_tokens=3),
        FieldSpec("age", default=30),
    )
)


# ------------------------------------------------------------------ schema
def test_schema_round_trips_through_dict_yaml_and_json_files(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(SCHEMA.to_dict()))
    (tmp_path / "s.yaml").write_text(SCHEMA.to_yaml())
    assert FeatureSchema.from_dict(SCHEMA.to_dict()) == SCHEMA
    assert load_schema(tmp_path / "s.json") == SCHEMA
    assert load_schema(tmp_path / "s.yaml") == SCHEMA


def test_layout_puts_numeric_fields_first_then_each_table():
    assert SCHEMA.numeric_names == ("amount", "is_new", "age")
    assert SCHEMA.layout() == {"numeric": 3, "tables": [[4096, 4, 1], [512, 8, 3]]}
    assert SCHEMA.width == 3 + 1 + 3
    assert SCHEMA.embedding_params() == 4096 * 4 + 512 * 8


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"fields": []}, "at least one field"),
        ({"fields": [{"name": "a"}, {"name": "a"}]}, "duplicate"),
        ({"fields": [{"name": "a", "type": "date"}]}, "type must be one of"),
        ({"fields": [{"name": "a", "type": "categorical", "buckets": 2}]}, "buckets must be"),
        ({"fields": [{"name": "a", "type": "categorical", "buckets": 1 << 25}]}, "buckets must be"),
        ({"fields": [{"name": "a", "buckets": 64}]}, "apply to categorical and text"),
        ({"fields": [{"name": "a", "colour": "red"}]}, "unknown keys ['colour']"),
        ({"fields": [{"name": "a"}], "unknown": "admit"}, "unknown must be"),
        ({"columns": []}, "'fields' list"),
    ],
)
def test_schema_mistakes_are_one_config_error_naming_the_fix(doc, message):
    with pytest.raises(ConfigError, match=None) as err:
        FeatureSchema.from_dict(doc)
    assert message in str(err.value)


def test_load_schema_names_the_file_on_every_mistake(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the feature schema"):
        load_schema(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("fields: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_schema(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("fields:\n  - {name: a, type: colour}\n")
    with pytest.raises(ConfigError, match=str(wrong)):
        load_schema(wrong)


# ------------------------------------------------------------------ encoding
def test_encoding_of_each_type_missing_values_and_defaults():
    enc = FeatureEncoder(SCHEMA)
    out = enc.encode(
        [
            {"amount": 2.5, "user": "u_1", "is_new": True, "note": "Big RED car, big", "age": 40},
            {"amount": None, "user": None, "note": None},  # everything missing
            {"amount": 1, "user": 17, "is_new": "false", "note": ""},
        ]
    )
    assert out.errors == {} and out.rows.tolist() == [0, 1, 2]
    X = out.X
    seed_user, seed_note = mmh3.hash("user", 0, signed=False), mmh3.hash("note", 0, signed=False)
    assert X[0, :3].tolist() == [2.5, 1.0, 40.0]
    assert X[0, 3] == hash_code("u_1", seed_user, 4096)
    assert X[0, 4:].tolist() == [hash_code(t, seed_note, 512) for t in ("big", "red", "car")]
    assert np.isnan(X[1, 0]) and np.isnan(X[1, 1]) and X[1, 2] == 30.0  # age's default fills in
    assert X[1, 3] == 1.0 and X[1, 4:].tolist() == [1.0, 0.0, 0.0]  # missing code, then padding
    assert X[2, 1] == 0.0 and X[2, 3] == hash_code("17", seed_user, 4096)
    assert X[2, 4:].tolist() == [1.0, 0.0, 0.0]  # an empty text is missing


def test_codes_never_use_the_reserved_slots_and_spread_over_the_table():
    codes = [hash_code(f"u_{i}", 7, 1024) for i in range(20_000)]
    assert min(codes) >= 2 and max(codes) < 1024
    counts = np.bincount(codes, minlength=1024)[2:]
    assert counts.min() > 0 and counts.max() < 3 * counts.mean()


@pytest.mark.parametrize(
    "x, reason",
    [
        ({"amount": "12"}, "feature 'amount': expected a number, got str '12'"),
        (
            {"amount": 1e39},
            "feature 'amount': expected a finite number within float32 range, got float 1e+39",
        ),
        ({"is_new": 2}, "feature 'is_new': expected a boolean (true/false, 0/1), got int 2"),
        ({"is_new": "yes"}, "feature 'is_new': expected a boolean (true/false, 0/1), got str 'yes'"),
        ({"user": {"id": 1}}, "feature 'user': expected a string, number or boolean, got dict {'id': 1}"),
        ({"note": 5}, "feature 'note': expected a string, got int 5"),
        ([1, 2], "x: expected an object of named fields, got list [1, 2]"),
    ],
)
def test_a_bad_value_leaves_its_row_out_with_the_field_the_expectation_and_the_value(x, reason):
    enc = FeatureEncoder(SCHEMA)
    out = enc.encode([{"amount": 1.0}, x])
    assert out.rows.tolist() == [0] and out.errors == {1: reason}
    assert str(enc.field_error(x)) == reason  # the API's 422 names the same field


def test_unknown_fields_are_counted_and_ignored_or_rejected():
    rows = [{"amount": 1.0, "colour": "red"}, {"amount": 2.0, "colour": "blue", "size": 3}]
    ignored = FeatureEncoder(SCHEMA).encode(rows)
    assert ignored.rows.tolist() == [0, 1] and dict(ignored.unknown) == {"colour": 2, "size": 1}
    strict = FeatureEncoder(FeatureSchema(SCHEMA.fields, unknown="reject")).encode(rows)
    assert strict.rows.tolist() == [] and "unknown feature 'colour'" in strict.errors[0]


def test_the_column_fast_path_agrees_with_the_per_value_reference():
    rng = np.random.default_rng(0)
    values = [None, True, False, 0, 1, 2, -3.5, 1e39, "1", "true", [1], float("nan")]
    rows = [{"amount": values[i % len(values)], "is_new": values[(i * 7) % len(values)]} for i in range(200)]
    rng.shuffle(rows)
    enc = FeatureEncoder(SCHEMA)
    out = enc.encode(rows)
    for i, x in enumerate(rows):
        single = enc.encode([x])
        assert bool(single.errors) == (i in out.errors)
        if not single.errors:
            np.testing.assert_array_equal(single.X[0], out.X[list(out.rows).index(i)])


# ------------------------------------------------------------------ inference
def test_inference_types_fields_by_their_majority_and_sizes_tables_by_distinct_values():
    xs = [
        {"amount": i * 0.5, "user": f"u{i % 300}", "flag": i % 2 == 0, "title": "a b c d", "age": None}
        for i in range(1000)
    ]
    xs[3]["amount"] = "oops"  # one odd value does not decide the type
    schema, summary = infer_schema(xs)
    types = {f.name: f.type for f in schema.fields}
    assert types == {
        "age": "numeric",
        "amount": "numeric",
        "flag": "boolean",
        "title": "text",
        "user": "categorical",
    }
    assert dict((f.name, f.buckets) for f in schema.embedded)["user"] == 8192  # 300 * 16 -> next power of two
    assert "user" in summary and "categorical/8192" in summary
    assert FeatureSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema


def test_inference_refuses_what_it_cannot_type():
    with pytest.raises(ConfigError, match="holds lists or objects"):
        infer_schema([{"tags": ["a"]}])
    with pytest.raises(ConfigError, match="no record had x as an object"):
        infer_schema([[1, 2]])


# ------------------------------------------------------------------ labels
def test_label_map_grows_with_string_labels_and_refuses_the_other_kind():
    labels = LabelMap()
    assert [labels.index(v) for v in ("fraud", "ok", "fraud", "chargeback")] == [0, 1, 0, 2]
    with pytest.raises(LabelError, match="is a number"):
        labels.index(1)
    restored = LabelMap.from_dict(json.loads(json.dumps(labels.to_dict())))
    assert restored.classes == ["fraud", "ok", "chargeback"] and restored.index("ok") == 1


def test_integer_and_boolean_labels_are_their_own_index_and_grow_the_count():
    labels = LabelMap()
    assert [labels.index(v) for v in (0, 1, True, False, 6, 2.0)] == [0, 1, 1, 0, 6, 2]
    assert labels.n_classes == 7 and labels.classes is None
    for bad in (-1, 0.5, "x", None, [1]):
        with pytest.raises(LabelError):
            labels.index(bad)


def test_a_fixed_map_refuses_new_classes_and_a_growing_one_stops_at_its_limit():
    fixed = LabelMap(n_classes=2, fixed=True)
    with pytest.raises(LabelError, match=r"4 is outside \[0, 2\)"):
        fixed.index(4)
    named = LabelMap(["ham", "spam"], fixed=True)
    with pytest.raises(LabelError, match="not one of the 2 configured classes"):
        named.index("eggs")
    capped = LabelMap(max_classes=3)
    capped.index(2)
    with pytest.raises(LabelError, match="more than the limit of 3"):
        capped.index(3)
