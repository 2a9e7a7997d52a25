"""Protobuf values: .proto files and descriptor sets, the registry's .proto text, the dict mapping, bad records."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from registry_server import FakeRegistry
from test_wire_format import CONFLUENT_PROTOBUF, CONFLUENT_PROTOBUF_FIRST

from stream.codec.parsers import ParseError
from stream.codec.proto_schema import compile_proto, load_proto_schema, message_class
from stream.codec.protobuf_parser import ProtobufParser, ProtobufSerializer
from stream.codec.schema_registry import SchemaRegistryClient
from stream.core.errors import ConfigError

# The schema confluent-kafka-python registered for CONFLUENT_PROTOBUF (schema id 3).
PROTO = """syntax = "proto3";
package streamlearn;
message Other { int32 unused = 1; }
message Event {
  optional string id = 1;
  optional int64 ts = 2;
  repeated double x = 3;
  int32 y = 4;
}
"""
DOC = {"id": "ev-42", "ts": 1764500000000, "x": [0.1, 0.5, -0.3], "y": 1}


@pytest.fixture
def registry():
    with FakeRegistry() as reg:
        yield reg


@pytest.fixture
def proto_file(tmp_path):
    path = tmp_path / "event.proto"
    path.write_text(PROTO)
    return path


def test_round_trip_from_a_proto_file(proto_file):
    schema = load_proto_schema(proto_file)
    value = ProtobufSerializer(schema, message="Event").serialize(DOC)
    assert ProtobufParser(schema, message="streamlearn.Event").parse(value) == DOC


def test_round_trip_from_a_descriptor_set_needs_no_compiler(tmp_path):
    # Written by hand, as protoc --descriptor_set_out would: the protobuf runtime alone reads it.
    fds = descriptor_pb2.FileDescriptorSet()
    file = fds.file.add(name="event.proto", package="p", syntax="proto3")
    msg = file.message_type.add(name="Event")
    msg.field.add(name="x", number=1, type=1, label=3)  # repeated double
    msg.field.add(name="y", number=2, type=5, label=1)  # int32
    path = tmp_path / "event.desc"
    path.write_bytes(fds.SerializeToString())
    schema = load_proto_schema(path)
    assert schema.text is None
    value = ProtobufSerializer(schema).serialize({"x": [1.5], "y": 0})
    assert ProtobufParser(schema).parse(value) == {"x": [1.5], "y": 0}


def test_unset_fields_with_presence_are_missing_and_zero_labels_are_kept():
    schema = compile_proto(PROTO)
    value = ProtobufSerializer(schema, message="Event").serialize({"x": [1.0], "y": 0, "id": None})
    assert ProtobufParser(schema, message="Event").parse(value) == {"x": [1.0], "y": 0}


def test_mapping_of_types_to_plain_values():
    schema = compile_proto(
        """syntax = "proto3";
        import "google/protobuf/timestamp.proto";
        import "google/protobuf/wrappers.proto";
        enum Kind { KIND_UNSET = 0; CLICK = 1; }
        message R {
          google.protobuf.Timestamp ts = 1;
          google.protobuf.DoubleValue y = 2;
          map<string, double> x = 3;
          Kind kind = 4;
          int64 big = 5;
          message Inner { repeated int32 v = 1; }
          Inner inner = 6;
        }"""
    )
    cls = message_class(schema)
    msg = cls(kind=1, big=2**62, x={"a": 1.5})
    msg.ts.FromMilliseconds(1764500000123)
    msg.y.value = 0.25
    msg.inner.v.extend([1, 2])
    assert ProtobufParser(schema).parse(msg.SerializeToString()) == {
        "ts": 1764500000123,
        "y": 0.25,
        "x": {"a": 1.5},
        "kind": "CLICK",
        "big": 2**62,  # an int, where MessageToDict would give the string "4611686018427387904"
        "inner": {"v": [1, 2]},
    }


def test_reads_the_values_confluents_client_wrote(registry):
    registry.add("placeholder 1")
    registry.add("placeholder 2")
    assert registry.add(PROTO, "PROTOBUF") == 3
    parser = ProtobufParser(registry=SchemaRegistryClient(registry.url))
    assert parser.parse(CONFLUENT_PROTOBUF) == DOC  # message indexes [1]: Event
    assert parser.parse(CONFLUENT_PROTOBUF_FIRST) == {"unused": 7}  # [0]: Other
    assert registry.requests == [("GET", "/schemas/ids/3")]


def test_a_local_schema_reads_framed_values_without_asking(registry, proto_file):
    client = SchemaRegistryClient(registry.url)
    parser = ProtobufParser(load_proto_schema(proto_file), message="Event", registry=client)
    assert parser.parse(CONFLUENT_PROTOBUF) == DOC
    assert registry.requests == []


def test_registry_round_trip(registry, proto_file):
    client = SchemaRegistryClient(registry.url)
    schema = load_proto_schema(proto_file)
    value = ProtobufSerializer(schema, message="Event", registry=client, subject="events-value").serialize(
        DOC
    )
    assert value[:7] == b"\x00\x00\x00\x00\x01\x02\x02"
    assert registry.schemas[1] == {"schema": PROTO, "schemaType": "PROTOBUF"}
    assert ProtobufParser(registry=SchemaRegistryClient(registry.url)).parse(value) == DOC
    latest = ProtobufSerializer(message="Event", registry=client, subject="events-value")
    assert latest.serialize(DOC) == value


def test_bad_records(registry):
    good = registry.add(PROTO, "PROTOBUF")
    avro = registry.add('{"type": "record", "name": "R", "fields": []}')
    broken = registry.add('syntax = "proto3"; message M { nope x = 1; }', "PROTOBUF")
    parser = ProtobufParser(registry=SchemaRegistryClient(registry.url))
    head = b"\x00\x00\x00\x00"
    cases = {
        b"\x01garbage": "bad wire format: magic byte 0x01, expected 0x00",
        head + b"\x09\x00": "unknown schema id 9: registry said 404 (Schema not found)",
        head + bytes([avro, 0]): f"wrong schema type: schema id {avro} is AVRO, not PROTOBUF",
        head + bytes([good]) + b"\x02\x0a": (
            f"bad wire format: schema id {good}: message indexes [5] do not exist in the schema"
        ),
        head + bytes([good]) + b"\x02\x02\x1a\x18\x9a": (
            "bad protobuf: Error parsing message with type 'streamlearn.Event': Wire format was corrupt"
        ),
        head + bytes([broken, 0]): (
            f'bad protobuf schema: schema id {broken}: protoc failed: schema_{broken}.proto:1:32: "nope" is not defined.'
        ),
    }
    for value, reason in cases.items():
        with pytest.raises(ParseError) as caught:
            parser.parse(value)
        assert caught.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_garbage_only_ever_raises_parse_error(value):
    try:
        ProtobufParser(compile_proto(PROTO), message="Event").parse(value)
    except ParseError as exc:
        assert exc.reason.startswith(("bad protobuf: ", "empty value: "))


def test_schema_mistakes_are_config_errors(tmp_path, proto_file):
    (tmp_path / "bad.proto").write_text('syntax = "proto3"; message {')
    (tmp_path / "bad.desc").write_bytes(b"\xff\xff")
    (tmp_path / "event.txt").write_text(PROTO)
    for name, message in [
        ("missing.proto", "cannot read the Protobuf schema"),
        ("bad.proto", r"bad.proto: protoc failed: bad.proto:1:28: Expected message name"),
        ("bad.desc", "is not a Protobuf descriptor set"),
        ("event.txt", "a Protobuf schema is a .proto file or a descriptor set"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_proto_schema(tmp_path / name)
    with pytest.raises(ConfigError, match=r"no message 'Nope' in the Protobuf schema event.proto \(it has"):
        ProtobufParser(load_proto_schema(proto_file), message="Nope")


def test_a_descriptor_set_cannot_be_registered(registry, tmp_path):
    fds = descriptor_pb2.FileDescriptorSet()
    fds.file.add(name="e.proto", syntax="proto3").message_type.add(name="E")
    (tmp_path / "e.desc").write_bytes(fds.SerializeToString())
    client = SchemaRegistryClient(registry.url)
    with pytest.raises(ConfigError, match="registering a Protobuf schema needs its .proto file"):
        ProtobufSerializer(load_proto_schema(tmp_path / "e.desc"), registry=client, subject="s-value")
