"""The codec's fast tiers against its per-record reference: the same events, dead letters and state.

Random polls mix good records with every kind of bad one (the poison table, and
values built to probe where msgspec and orjson differ); the codec's ``decode``
must give exactly what the record-by-record reference (``_decode_slow``) gives.
"""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.poll import PollColumns
from stream.core.records import RawRecord
from stream.testing.poison import POISON_KINDS

D = 3
F32_MAX = float(np.finfo(np.float32).max)

numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.floats(min_value=-1, max_value=1),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(
        [0, -0.0, 1e-45, F32_MAX, -F32_MAX, F32_MAX * (1 + 2**-26), 3.5e38, 1e39, 2**60 + 2**36 + 1]
    ),
)
texts = st.text(max_size=12)  # any code point but lone surrogates (orjson cannot write them)
ids = st.one_of(
    texts,
    st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.just("i" * 300),
    st.just(12345),
    st.just(-1234),
    st.lists(st.integers(), max_size=2),
)
timestamps = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["2024-01-02T03:04:05", "2024-01-02T03:04:05+02:00", "yesterday", True]),
)
labels = st.one_of(
    st.sampled_from([0, 1, 1, 0, 2, 5, -1, 1.0, 0.5, True, "1", None]), st.floats(allow_nan=False)
)
xs = st.one_of(
    st.lists(numbers, min_size=D, max_size=D),
    st.lists(numbers, min_size=D, max_size=D),  # twice: most records have the right shape
    st.lists(numbers, max_size=D + 1),
    st.lists(st.one_of(numbers, st.booleans(), st.none(), texts), min_size=D, max_size=D),
    st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.one_of(numbers, texts), max_size=4),
    st.just(5),
)
MISSING = object()


@st.composite
def documents(draw) -> bytes:
    # Each field is usually fine, so that one bad field at a time is what most records show.
    doc = {
        "id": draw(st.one_of(texts, st.integers(-(2**40), 2**40), ids, st.just(MISSING))),
        "ts": draw(st.one_of(st.integers(0, 2**45), timestamps, st.just(MISSING))),
        "x": draw(st.one_of(st.lists(numbers, min_size=D, max_size=D), xs, st.just(MISSING))),
        "y": draw(st.one_of(st.sampled_from([0, 1]), labels, st.just(MISSING))),
    }
    if draw(st.integers(0, 5)) == 0:
        doc["extra"] = draw(st.one_of(texts, numbers, st.lists(st.integers(), max_size=3)))
    doc = {k: v for k, v in doc.items() if v is not MISSING}
    # The standard library writes integers beyond 64 bits (orjson refuses them).
    return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()


def good(i: int) -> bytes:
    return orjson.dumps({"id": f"g{i}", "ts": 1_000 + i, "x": [0.5, -1, i], "y": i % 2})


_DOC = b'{"id": "z", "x": [1, 2, 3], "y": 1'
# Values where msgspec and orjson could disagree: what orjson refuses must stay refused.
EDGE_VALUES = [
    _DOC + b', "pad": "\xff"}',  # invalid UTF-8 in a field the record type does not name
    _DOC + b', "pad": 1e400}',  # beyond float64 in an unnamed field
    _DOC + b', "pad": "\\ud800"}',  # a lone surrogate
    _DOC + b', "pad": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    _DOC + b"}" + b"," + _DOC + b"}",  # two records in one value
    b"  " + _DOC + b"}\n",
    b'{"id": "z", "x": [1,\n 2, 3], "y": 1}',
    _DOC + b', "x": [1, 2]}',  # a repeated key: the last one counts
    b'{"id": "\xc3\xa9\xf0\x9f\x98\x80", "x": [1e-320, 2, 3], "y": 0}',
    b'{"id": "\xed\xa0\x80", "x": [1, 2, 3], "y": 0}',  # an encoded surrogate
    b'{"x": [1e400, 2, 3], "y": 0}',
    b'{"x": [1, 2, 3], "y": 1e400}',
    b'{"x": [1, 2, 3], "y": 0, "ts": 9223372036854775808}',
    b'{"x": [1, 2, 3], "y": 0, "id": 9223372036854775808}',
    b'{"x": [1, 2, 3], "y": 0, "id": 123456789012345678901234}',
    b"\xef\xbb\xbf" + _DOC + b"}",
    b'{"X": [1, 2, 3], "y": 0}',
    None,
    b"",
]
POISON_VALUES = [k.value for k in POISON_KINDS if k.value is None or len(k.value) < 100_000]
values = st.one_of(
    documents(),
    st.integers(0, 10**6).map(good),
    st.integers(0, 10**6).map(good),
    st.sampled_from(EDGE_VALUES + POISON_VALUES),
)

CONFIGS = {
    "classes fixed": CodecConfig(n_features=D),
    "classes grow": CodecConfig(n_features=D, n_classes=None),
    "regression": CodecConfig(n_features=D, task="regression"),
    "named x": CodecConfig(feature_names=("a", "b", "c")),
    "short ids, own field names": CodecConfig(
        n_features=D, max_id_chars=4, id_field="key", x_field="features", y_field="label", ts_field="at"
    ),
    "small records": CodecConfig(n_features=D, max_record_bytes=60),
}


def columns(vals: list[bytes | None], partitions: int) -> PollColumns:
    recs = [RawRecord("topic", i % partitions, 100 + i, 7_000 + i, None, v) for i, v in enumerate(vals)]
    recs.sort(key=lambda r: (r.partition, r.offset))
    return PollColumns.from_records(recs)


def rename(value: bytes | None, cfg: CodecConfig) -> bytes | None:
    if value is None or cfg.x_field == "x":
        return value
    for old, new in (("id", cfg.id_field), ("x", cfg.x_field), ("y", cfg.y_field), ("ts", cfg.ts_field)):
        value = value.replace(f'"{old}"'.encode(), f'"{new}"'.encode())
    return value


def named(value: bytes | None) -> bytes | None:
    """Half the good-looking lists become objects of named features (the ``named x`` layout)."""
    if value is None or b'"x": [' not in value and b'"x":[' not in value:
        return value
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
    if isinstance(doc, dict) and isinstance(doc.get("x"), list) and len(doc["x"]) == D and hash(value) % 2:
        doc["x"] = dict(zip("abc", doc["x"]))
        return orjson.dumps(doc)
    return value


def assert_same(fast, ref) -> None:
    a, b = fast.events, ref.events
    assert a.X.dtype == b.X.dtype == np.float32 and a.y.dtype == b.y.dtype
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.ts.tolist() == b.ts.tolist()
    assert a.ids.tolist() == b.ids.tolist()
    assert a.topic.tolist() == b.topic.tolist()
    assert a.partition.tolist() == b.partition.tolist() and a.offset.tolist() == b.offset.tolist()
    assert fast.event_rows().tolist() == ref.event_rows().tolist()
    own = lambda r: r.own_ids.tolist() if r.own_ids is not None else [True] * len(r.events)  # noqa: E731
    assert own(fast) == own(ref)
    letters = lambda r: [(d.record.partition, d.record.offset, d.reason) for d in r.dead_letters]  # noqa: E731
    assert letters(fast) == letters(ref)


@pytest.mark.parametrize("layout", sorted(CONFIGS))
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
@given(
    polls=st.lists(st.lists(values, min_size=1, max_size=40), min_size=1, max_size=3),
    partitions=st.integers(1, 3),
)
def test_fast_tiers_decode_exactly_as_the_reference(layout, polls, partitions):
    cfg = CONFIGS[layout]
    fast, ref = JsonCodec(cfg), JsonCodec(cfg)
    for vals in polls:
        vals = [rename(v, cfg) for v in vals]
        if cfg.feature_names is not None:
            vals = [named(v) for v in vals]
        cols = columns(vals, partitions)
        assert_same(fast.decode(cols), ref._decode_slow(cols.records()))
        assert fast.schema_info() == ref.schema_info()


@pytest.mark.parametrize("layout", sorted(CONFIGS))
def test_a_clean_poll_is_decoded_by_the_typed_tier_alone(layout, monkeypatch):
    cfg = CONFIGS[layout]
    codec = JsonCodec(cfg)
    vals = [rename(good(i), cfg) for i in range(50)]
    if cfg.feature_names is not None:
        vals = [orjson.dumps({**orjson.loads(v), "x": dict(zip("abc", orjson.loads(v)["x"]))}) for v in vals]
    if layout == "classes grow":
        codec.decode(columns(vals[:2], 1))  # the first labels are read by the reference, which grows the map
    monkeypatch.setattr(codec, "_decode_fast", lambda cols: pytest.fail("the orjson tier ran"))
    monkeypatch.setattr(codec, "_decode_slow", lambda *a: pytest.fail("the reference ran"))
    out = codec.decode(columns(vals, 3))
    assert len(out.events) == 50 and out.dead_letters == []


def test_one_bad_record_leaves_the_rest_of_the_poll_on_the_typed_tier(monkeypatch):
    codec = JsonCodec(CodecConfig(n_features=D))
    vals = [good(i) for i in range(20)]
    vals[7] = b'{"x": [1, 2], "y": 0}'
    judged: list[int] = []
    slow = codec._decode_slow
    monkeypatch.setattr(
        codec, "_decode_slow", lambda recs, *a: judged.extend(r.offset for r in recs) or slow(recs, *a)
    )
    out = codec.decode(columns(vals, 1))
    assert judged == [107]
    assert [d.reason for d in out.dead_letters] == ["wrong dimension: 2 features, expected 3"]
    assert out.events.offset.tolist() == [100 + i for i in range(20) if i != 7]
