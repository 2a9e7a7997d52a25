"""The Confluent wire format, byte for byte against values Confluent's own client wrote.

The two recorded values below were written by confluent-kafka-python 2.16.1
(``confluent_kafka.schema_registry.avro.AvroSerializer`` and ``.protobuf.ProtobufSerializer``,
``use.deprecated.format=False``) for the record ``{"id": "ev-42", "ts": 1764500000000,
"x": [0.1, 0.5, -0.3], "y": 1}`` under schema id 3, against tests/unit/registry_server.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.codec.parsers import ParseError
from stream.codec.wire import Framed, decode_message_indexes, encode_message_indexes, frame, unframe

CONFLUENT_AVRO = bytes.fromhex(
    "0000000003020a65762d34320280b4aac6da66069a9999999999b93f000000000000e03f333333333333d3bf0002"
)
AVRO_PAYLOAD = CONFLUENT_AVRO[5:]
# message Event is the second top-level message of its file: indexes [1] -> 02 02.
CONFLUENT_PROTOBUF = bytes.fromhex(
    "000000000302020a0565762d343210809a95a3ad331a189a9999999999b93f000000000000e03f333333333333d3bf2001"
)
PROTOBUF_PAYLOAD = CONFLUENT_PROTOBUF[7:]
# message Other, the first of the file: the one-byte [0] shortcut.
CONFLUENT_PROTOBUF_FIRST = bytes.fromhex("0000000003000807")


def test_frames_avro_exactly_as_confluent():
    assert frame(3, AVRO_PAYLOAD) == CONFLUENT_AVRO
    assert unframe(CONFLUENT_AVRO) == Framed(3, AVRO_PAYLOAD, None)


def test_frames_protobuf_exactly_as_confluent():
    assert frame(3, PROTOBUF_PAYLOAD, message_indexes=[1]) == CONFLUENT_PROTOBUF
    assert unframe(CONFLUENT_PROTOBUF, protobuf=True) == Framed(3, PROTOBUF_PAYLOAD, (1,))
    assert frame(3, b"\x08\x07", message_indexes=[0]) == CONFLUENT_PROTOBUF_FIRST
    assert unframe(CONFLUENT_PROTOBUF_FIRST, protobuf=True) == Framed(3, b"\x08\x07", (0,))


def test_schema_id_is_big_endian():
    assert frame(0x01020304, b"") == b"\x00\x01\x02\x03\x04"


def test_message_indexes_are_zigzag_varints():
    assert encode_message_indexes([0]) == b"\x00"  # the shortcut
    assert encode_message_indexes([0, 0]) == b"\x04\x00\x00"
    assert encode_message_indexes([64]) == b"\x02\x80\x01"  # 64 zigzags to 128: two bytes
    # The long form of [0] (count 1, index 0) reads the same as the shortcut.
    assert decode_message_indexes(b"\x02\x00") == ((0,), 2)


@given(
    st.integers(0, 2**31 - 1), st.binary(max_size=20), st.lists(st.integers(0, 10**6), min_size=1, max_size=8)
)
def test_frame_unframe_round_trip(schema_id, payload, indexes):
    assert unframe(frame(schema_id, payload)) == (schema_id, payload, None)
    framed = frame(schema_id, payload, message_indexes=indexes)
    assert unframe(framed, protobuf=True) == (schema_id, payload, tuple(indexes))


@pytest.mark.parametrize(
    "value, protobuf, reason",
    [
        (b"\x05\x00\x00\x00\x01abc", False, "bad wire format: magic byte 0x05, expected 0x00"),
        (b'{"x": [1]}', False, "bad wire format: magic byte 0x7b, expected 0x00"),
        (b"\x00\x00\x01", False, "bad wire format: 3 bytes, shorter than the 5-byte header"),
        (b"", False, "empty value: record has no payload"),
        (b"\x00\x00\x00\x00\x01", True, "bad wire format: message indexes cut short"),
        (b"\x00\x00\x00\x00\x01\x04\x02", True, "bad wire format: message indexes cut short"),
        (b"\x00\x00\x00\x00\x01\x03", True, "bad wire format: -2 message indexes"),
        (b"\x00\x00\x00\x00\x01\x02\x01", True, "bad wire format: negative message index -1"),
        (
            b"\x00\x00\x00\x00\x01" + b"\xff" * 11,
            True,
            "bad wire format: a message-index varint longer than 10 bytes",
        ),
    ],
)
def test_bad_frames_name_their_defect(value, protobuf, reason):
    with pytest.raises(ParseError) as caught:
        unframe(value, protobuf=protobuf)
    assert caught.value.reason == reason


@given(st.binary(max_size=40), st.booleans())
def test_garbage_only_ever_raises_parse_error(value, protobuf):
    try:
        unframe(value, protobuf=protobuf)
    except ParseError as exc:
        assert exc.reason.startswith(("bad wire format: ", "empty value: "))
