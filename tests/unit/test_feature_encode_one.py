"""FeatureEncoder.encode_one (the API's single-row path) equals the batch encode, value for value."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.features import FeatureEncoder, FeatureSchema, FieldError, FieldSpec

FIELDS = (
    FieldSpec("amount"),
    FieldSpec("age", default=30),
    FieldSpec("is_new", "boolean"),
    FieldSpec("vip", "boolean", default=False),
    FieldSpec("user", "categorical", buckets=1 << 16),
    FieldSpec("country", "categorical", buckets=64, default="FR"),
    FieldSpec("note", "text", buckets=128, max_tokens=3),
)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(min_value=10**38, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from(["", "true", "False", "FR", "u_81723", "two words here", "a b c d e"]),
    st.lists(st.integers(), max_size=2),
)
ROWS = st.dictionaries(st.sampled_from([f.name for f in FIELDS] + ["extra"]), VALUES, max_size=8)


def outcome(call):
    try:
        return call()
    except FieldError as exc:
        return str(exc)


@pytest.mark.parametrize("unknown", ["ignore", "reject"])
@settings(max_examples=300, deadline=None)
@given(x=ROWS)
def test_encode_one_equals_the_batch_encode(unknown, x):
    enc = FeatureEncoder(FeatureSchema(FIELDS, unknown=unknown))
    batch = enc.encode([x])
    one = outcome(lambda: enc.encode_one(x))
    if batch.errors:
        assert one == str(enc.field_error(x))
    else:
        assert isinstance(one, np.ndarray) and one.dtype == np.float32
        np.testing.assert_array_equal(one, batch.X[0])  # NaN == NaN here, and exact otherwise


def test_encode_one_takes_the_row_path_for_plain_values():
    enc = FeatureEncoder(FeatureSchema(FIELDS))
    x = {"amount": 12.5, "is_new": True, "user": "u_81723", "note": "Two Words", "extra": {"a": 1}}
    row = enc._row(x)
    assert row is not None
    np.testing.assert_array_equal(row, enc.encode([x]).X[0])
    assert enc._row({"is_new": "true"}) is None  # strings for booleans: the batch path decides
    assert FeatureEncoder(FeatureSchema(FIELDS, unknown="reject"))._row({"extra": 1}) is None
