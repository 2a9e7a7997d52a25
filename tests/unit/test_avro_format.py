"""Avro values: round trips with a schema file and with a registry, schema evolution, and bad records."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from registry_server import FakeRegistry
from test_wire_format import CONFLUENT_AVRO

from stream.codec.avro_parser import AvroParser, AvroSerializer, load_avro_schema
from stream.codec.parsers import JsonParser, ParseError
from stream.codec.schema_registry import RegistryUnreachable, SchemaRegistryClient
from stream.core.errors import ConfigError
from stream.sources.embedded_broker import free_port

# The schema confluent-kafka-python registered for CONFLUENT_AVRO (schema id 3).
EVENT = {
    "type": "record",
    "name": "Event",
    "namespace": "streamlearn",
    "fields": [
        {"name": "id", "type": ["null", "string"], "default": None},
        {"name": "ts", "type": ["null", "long"], "default": None},
        {"name": "x", "type": {"type": "array", "items": "double"}},
        {"name": "y", "type": "int"},
    ],
}
DOC = {"id": "ev-42", "ts": 1764500000000, "x": [0.1, 0.5, -0.3], "y": 1}


@pytest.fixture
def registry():
    with FakeRegistry() as reg:
        yield reg


def test_round_trip_gives_the_json_document():
    value = AvroSerializer(EVENT).serialize(DOC)
    assert AvroParser(EVENT).parse(value) == DOC == JsonParser().parse(json.dumps(DOC).encode())


def test_null_reads_as_missing():
    value = AvroSerializer(EVENT).serialize({"x": [1.0], "y": 0})
    assert AvroParser(EVENT).parse(value) == {"id": None, "ts": None, "x": [1.0], "y": 0}


def test_timestamp_millis_reads_as_epoch_ms():
    schema = {
        "type": "record",
        "name": "T",
        "fields": [{"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}}],
    }
    value = AvroSerializer(schema).serialize({"ts": 1764500000123})
    assert AvroParser(schema).parse(value) == {"ts": 1764500000123}


def test_reads_the_value_confluents_client_wrote(registry):
    registry.add("placeholder 1")
    registry.add("placeholder 2")
    assert registry.add(json.dumps(EVENT)) == 3
    parser = AvroParser(registry=SchemaRegistryClient(registry.url))
    assert parser.parse(CONFLUENT_AVRO) == DOC
    assert parser.parse(CONFLUENT_AVRO) == DOC
    assert registry.requests == [("GET", "/schemas/ids/3")]  # once per id


def test_registry_round_trip(registry):
    client = SchemaRegistryClient(registry.url)
    value = AvroSerializer(EVENT, registry=client, subject="events-value").serialize(DOC)
    assert value[:5] == b"\x00\x00\x00\x00\x01"
    assert AvroParser(registry=SchemaRegistryClient(registry.url)).parse(value) == DOC
    # A producer without a schema file writes with the subject's latest schema.
    latest = AvroSerializer(registry=client, subject="events-value").serialize(DOC)
    assert latest == value


def test_reader_schema_resolves_an_older_writer(registry):
    client = SchemaRegistryClient(registry.url)
    old = AvroSerializer(EVENT, registry=client, subject="events-value").serialize(DOC)
    newer = dict(EVENT, fields=[*EVENT["fields"], {"name": "w", "type": "double", "default": 0.5}])
    assert AvroParser(newer, registry=client).parse(old) == {**DOC, "w": 0.5}


@pytest.mark.parametrize(
    "value, reason",
    [
        (AvroSerializer(EVENT).serialize(DOC)[:-3], "bad avro: record cut short"),
        (AvroSerializer(EVENT).serialize(DOC) + b"\x00\x00", "bad avro: 2 bytes left over after the record"),
        (b"\x07garbage", "bad avro: IndexError: list index out of range"),
        (b"", "empty value: record has no payload"),
    ],
)
def test_bad_records_without_registry(value, reason):
    with pytest.raises(ParseError) as caught:
        AvroParser(EVENT).parse(value)
    assert caught.value.reason == reason


def test_bad_records_with_registry(registry):
    good_id = registry.add(json.dumps(EVENT))
    proto_id = registry.add('syntax = "proto3";', "PROTOBUF")
    broken_id = registry.add('{"type": "record", "name": "B", "fields": [{"name": "a", "type": "nope"}]}')
    payload = AvroSerializer(EVENT).serialize(DOC)
    parser = AvroParser(registry=SchemaRegistryClient(registry.url))
    cases = {
        b"\x05" + payload: "bad wire format: magic byte 0x05, expected 0x00",
        payload: "bad wire format: magic byte 0x02, expected 0x00",
        b"\x00\x00\x00\x00\x07" + payload: "unknown schema id 7: registry said 404 (Schema not found)",
        b"\x00\x00\x00\x00" + bytes([proto_id]) + payload: (
            f"wrong schema type: schema id {proto_id} is PROTOBUF, not AVRO"
        ),
        b"\x00\x00\x00\x00" + bytes([good_id]) + payload[:4]: "bad avro: record cut short",
    }
    for value, reason in cases.items():
        with pytest.raises(ParseError) as caught:
            parser.parse(value)
        assert caught.value.reason == reason
    with pytest.raises(ParseError, match=f"bad avro schema: schema id {broken_id}: UnknownType: nope"):
        parser.parse(b"\x00\x00\x00\x00" + bytes([broken_id]) + payload)


def test_an_unreachable_registry_is_not_a_bad_record():
    parser = AvroParser(registry=SchemaRegistryClient(f"http://127.0.0.1:{free_port()}", timeout_s=1))
    with pytest.raises(RegistryUnreachable):
        parser.parse(b"\x00\x00\x00\x00\x01\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_garbage_only_ever_raises_parse_error(value):
    try:
        AvroParser(EVENT).parse(value)
    except ParseError as exc:
        assert exc.reason.startswith(("bad avro: ", "empty value: "))


def test_schema_file_mistakes_are_config_errors(tmp_path):
    good = tmp_path / "event.avsc"
    good.write_text(json.dumps(EVENT))
    assert load_avro_schema(good)[1] == json.dumps(EVENT)
    (tmp_path / "bad.avsc").write_text("{not json")
    (tmp_path / "enum.avsc").write_text('{"type": "enum", "name": "E", "symbols": ["A"]}')
    (tmp_path / "invalid.avsc").write_text('{"type": "record", "name": "R", "fields": [{"name": "a"}]}')
    for name, message in [
        ("missing.avsc", "cannot read the Avro schema"),
        ("bad.avsc", "is not JSON"),
        ("enum.avsc", "the top-level type must be a record, got 'enum'"),
        ("invalid.avsc", "is invalid"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_avro_schema(tmp_path / name)


def test_a_document_that_does_not_fit_is_a_config_error():
    with pytest.raises(ConfigError, match="a record does not fit the Avro schema"):
        AvroSerializer(EVENT).serialize({"x": "not a list", "y": 1})
