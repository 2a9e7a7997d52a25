"""make_parser / make_serializer: every format round-trips; user mistakes are one-line ConfigErrors."""

from __future__ import annotations

import json

import pytest
from registry_server import FakeRegistry
from test_avro_format import EVENT as AVRO_EVENT
from test_protobuf_format import PROTO

from stream.codec.formats import FORMATS, RecordSerializer, make_parser, make_serializer
from stream.codec.parsers import RecordParser
from stream.core.errors import ConfigError

DOC = {"id": "ev-42", "ts": 1764500000000, "x": [0.1, 0.5, -0.3], "y": 1}


@pytest.fixture
def schemas(tmp_path):
    (tmp_path / "event.avsc").write_text(json.dumps(AVRO_EVENT))
    (tmp_path / "event.proto").write_text(PROTO)
    return {"json": None, "avro": str(tmp_path / "event.avsc"), "protobuf": str(tmp_path / "event.proto")}


@pytest.mark.parametrize("record_format", FORMATS)
def test_every_format_round_trips_from_a_schema_file(record_format, schemas):
    options = {"message": "Event"} if record_format == "protobuf" else {}
    serializer = make_serializer(record_format, schemas[record_format], **options)
    parser = make_parser(record_format, schemas[record_format], **options)
    assert isinstance(serializer, RecordSerializer) and isinstance(parser, RecordParser)
    assert parser.parse(serializer.serialize(DOC)) == DOC


@pytest.mark.parametrize("record_format", ["avro", "protobuf"])
def test_every_binary_format_round_trips_through_a_registry(record_format, schemas):
    options = {"message": "Event"} if record_format == "protobuf" else {}
    with FakeRegistry() as registry:
        serializer = make_serializer(
            record_format, schemas[record_format], registry.url, subject="events-value", **options
        )
        value = serializer.serialize(DOC)
        assert value[0] == 0  # the wire format's magic byte
        assert make_parser(record_format, registry_url=registry.url).parse(value) == DOC


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: make_parser("xml"), "unknown record format 'xml': choose json, avro or protobuf"),
        (lambda: make_parser("avro"), "--format avro needs --value-schema FILE or --schema-registry URL"),
        (lambda: make_serializer("protobuf"), "--format protobuf needs --value-schema FILE"),
        (lambda: make_parser("json", "x.avsc"), "--format json takes no --value-schema or --schema-registry"),
        (lambda: make_parser("avro", None, "localhost:8081"), "must be an http:// or https:// URL"),
        (lambda: make_parser("avro", "/no/such.avsc"), "cannot read the Avro schema /no/such.avsc"),
        (lambda: make_parser("protobuf", "/no/such.proto"), "cannot read the Protobuf schema /no/such.proto"),
        (lambda: make_serializer("avro", None, "http://127.0.0.1:1"), "needs a subject"),
    ],
)
def test_user_mistakes_are_one_line_config_errors(call, message):
    with pytest.raises(ConfigError) as caught:
        call()
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
