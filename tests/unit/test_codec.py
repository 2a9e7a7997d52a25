"""JsonCodec: good records decode to arrays, bad ones become dead letters with reasons."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.errors import ConfigError
from stream.core.records import RawRecord, TopicPartition


def poll_of(values: list[bytes | None], topic: str = "t", partition: int = 0) -> dict:
    recs = [RawRecord(topic, partition, i, 5_000 + i, None, v) for i, v in enumerate(values)]
    return {TopicPartition(topic, partition): recs}


def test_decodes_list_features_labels_ids_and_event_time():
    codec = JsonCodec(CodecConfig(n_features=3))
    out = codec.decode(
        poll_of(
            [
                b'{"id": 7, "ts": 123, "x": [1, 2.5, -3], "y": 1}',
                b'{"x": [0, 0, 0], "y": 0}',
            ]
        )
    )
    assert out.dead_letters == []
    ev = out.events
    assert ev.X.dtype == np.float32 and ev.X.tolist() == [[1, 2.5, -3], [0, 0, 0]]
    assert ev.y.dtype == np.int64 and ev.y.tolist() == [1, 0]
    assert ev.ids.tolist() == ["7", "t:0:1"]  # missing id falls back to topic:partition:offset
    assert ev.ts.tolist() == [123, 5_001]  # missing ts falls back to the record timestamp
    assert ev.offset.tolist() == [0, 1] and ev.partition.tolist() == [0, 0]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "bad json"),
        (b"[1, 2]", "bad json"),
        (b'{"x": [1, 2], "y": 1}', "wrong dimension"),
        (b'{"x": [1, 2, 3]}', "missing label"),
        (b'{"y": 1}', "missing features"),
        (b'{"x": [1, "a", 3], "y": 1}', "bad features"),
        (b'{"x": [1, NaN, 3], "y": 1}', "bad json"),  # NaN is not JSON at all
        (b'{"x": [1, 1e999, 3], "y": 1}', "bad json"),  # orjson refuses inf literals
        (b'{"x": [1, 1e39, 3], "y": 1}', "non-finite feature"),  # finite float64, inf as float32
        (b'{"x": [1, 2, 3], "y": 2}', "bad label"),
        (b'{"x": [1, 2, 3], "y": 0.5}', "bad label"),
        (b'{"x": [1, 2, 3], "y": 1, "ts": "yesterday"}', "bad timestamp"),
        (None, "empty value"),
        (b"", "empty value"),
    ],
)
def test_bad_records_go_to_dead_letters_with_a_reason(value, reason):
    codec = JsonCodec(CodecConfig(n_features=3))
    good = b'{"x": [1, 2, 3], "y": 1}'
    out = codec.decode(poll_of([good, value, good]))
    assert len(out.events) == 2, "good records around a bad one must still decode"
    assert [d.reason_kind for d in out.dead_letters] == [reason]
    assert out.dead_letters[0].record.offset == 1


def test_oversize_records_are_dead_lettered():
    codec = JsonCodec(CodecConfig(n_features=1, max_record_bytes=64))
    out = codec.decode(poll_of([b'{"x": [1], "y": 1, "pad": "' + b"a" * 100 + b'"}']))
    assert len(out.events) == 0 and out.dead_letters[0].reason_kind == "oversize"


def test_first_valid_record_locks_the_dimension():
    codec = JsonCodec(CodecConfig())
    assert codec.n_features is None
    out = codec.decode(poll_of([b"{bad", b'{"x": [1, 2], "y": 0}', b'{"x": [1, 2, 3], "y": 0}']))
    assert codec.n_features == 2
    assert len(out.events) == 1
    assert [d.reason_kind for d in out.dead_letters] == ["bad json", "wrong dimension"]


def test_named_features_string_classes_and_regression():
    codec = JsonCodec(CodecConfig(feature_names=("b", "a"), classes=("ham", "spam")))
    out = codec.decode(poll_of([b'{"x": {"a": 1, "b": 2}, "y": "spam"}', b'{"x": {"a": 1}, "y": "ham"}']))
    assert out.events.X.tolist() == [[2, 1]] and out.events.y.tolist() == [1]
    assert out.dead_letters[0].reason == "missing feature: 'b'"

    reg = JsonCodec(CodecConfig(n_features=1, task="regression"))
    out = reg.decode(poll_of([b'{"x": [1], "y": 2.5}', b'{"x": [1], "y": "high"}']))
    assert out.events.y.dtype == np.float32 and out.events.y.tolist() == [2.5]
    assert out.dead_letters[0].reason_kind == "bad label"


def test_iso_timestamps_are_parsed_as_utc_ms():
    codec = JsonCodec(CodecConfig(n_features=1))
    out = codec.decode(poll_of([b'{"x": [1], "y": 1, "ts": "2024-01-01T00:00:01"}']))
    assert out.events.ts.tolist() == [1_704_067_201_000]


@pytest.mark.parametrize(
    "kwargs",
    [{"task": "ranking"}, {"n_features": 0}, {"n_classes": 1}, {"feature_names": ("a",), "n_features": 2}],
)
def test_bad_config_is_a_config_error(kwargs):
    with pytest.raises(ConfigError):
        CodecConfig(**kwargs)


# A record is any of: a valid row, or one of several defects. The fast path
# (whole-batch arrays) and the slow path (record by record) must agree exactly.
_valid = st.builds(
    lambda x, y, ts, rid: {"x": x, "y": y, "ts": ts, "id": rid},
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=3, max_size=3),
    st.integers(0, 2),
    st.integers(0, 2**40),
    st.one_of(st.none(), st.integers(0, 10**6), st.text(max_size=5)),
)
_record = st.one_of(
    _valid.map(orjson.dumps),
    _valid.map(orjson.dumps),
    st.sampled_from(
        [
            b"{",
            b'{"x": [1, 2], "y": 0}',
            b'{"x": [1, 2, 3], "y": 3}',
            b'{"x": [1, 2, 3]}',
            b'{"x": [1, 1e39, 2], "y": 1}',
            b'{"x": [1, "2", 3], "y": 1}',
            b'{"x": [1, 2, 3], "y": 1.5}',
        ]
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_record, min_size=1, max_size=30))
def test_fast_path_agrees_with_slow_path(values):
    codec = JsonCodec(CodecConfig(n_features=3, n_classes=3))
    records = poll_of(values)
    fast = codec.decode(records)
    slow = codec._decode_slow([r for rs in records.values() for r in rs])
    assert fast.events.ids.tolist() == slow.events.ids.tolist()
    np.testing.assert_array_equal(fast.events.X, slow.events.X)
    np.testing.assert_array_equal(fast.events.y, slow.events.y)
    np.testing.assert_array_equal(fast.events.ts, slow.events.ts)
    assert [d.record.offset for d in fast.dead_letters] == [d.record.offset for d in slow.dead_letters]
    # Every record is accounted for exactly once.
    assert len(fast.events) + len(fast.dead_letters) == len(values)
    assert all(math.isfinite(v) for v in fast.events.X.ravel())


# The columnar path (confluent's PollColumns): records arrive interleaved across
# partitions and are never RawRecords unless a dead letter needs one.
@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_record, st.integers(0, 2)), min_size=1, max_size=30))
def test_fast_path_on_interleaved_columns_agrees_with_slow_path(rows):
    from stream.core.poll import PollColumns
    from stream.testing.columns import messages_from

    next_offset = [0, 0, 0]
    records = []
    for value, p in rows:
        records.append(RawRecord("t", p, next_offset[p], 7_000 + len(records), None, value))
        next_offset[p] += 1
    codec = JsonCodec(CodecConfig(n_features=3, n_classes=3))
    fast = codec.decode(PollColumns.from_messages(messages_from(records)))
    slow = codec._decode_slow(records)
    assert fast.events.ids.tolist() == slow.events.ids.tolist()
    np.testing.assert_array_equal(fast.events.X, slow.events.X)
    np.testing.assert_array_equal(fast.events.y, slow.events.y)
    np.testing.assert_array_equal(fast.events.ts, slow.events.ts)
    np.testing.assert_array_equal(fast.events.partition, slow.events.partition)
    np.testing.assert_array_equal(fast.events.offset, slow.events.offset)
    assert fast.events.topic.tolist() == slow.events.topic.tolist()
    assert [(d.record, d.reason) for d in fast.dead_letters] == [
        (d.record, d.reason) for d in slow.dead_letters
    ]
    assert len(fast.events) + len(fast.dead_letters) == len(records)


@pytest.mark.parametrize("ts", [b"1e30", b"-1e30", b"9223372036854775808", b"-1e19"])
def test_timestamps_beyond_int64_are_dead_lettered_not_raised(ts):
    codec = JsonCodec(CodecConfig(n_features=3))
    good = b'{"x": [1, 2, 3], "y": 1, "ts": 5}'
    out = codec.decode(poll_of([good, b'{"x": [1, 2, 3], "y": 1, "ts": ' + ts + b"}", good]))
    assert len(out.events) == 2 and [d.reason_kind for d in out.dead_letters] == ["bad timestamp"]


@pytest.mark.parametrize("enabled", [True, False])
def test_decoding_leaves_the_garbage_collector_as_it_found_it(enabled):
    import gc

    codec = JsonCodec(CodecConfig(n_features=3))
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        codec.decode(poll_of([b'{"x": [1, 2, 3], "y": 1}', b"{bad"]))  # fast path falls back to slow
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()
