"""The Schema Registry client against a real HTTP server answering as Confluent's API does.

No real registry runs here (see tests/unit/registry_server.py): the answers are
Confluent's documented ones, served over real sockets.
"""

from __future__ import annotations

import pytest
from registry_server import FakeRegistry

from stream.codec.schema_registry import (
    RegisteredSchema,
    RegistryRefused,
    RegistryUnreachable,
    SchemaNotFound,
    SchemaRegistryClient,
)
from stream.sources.embedded_broker import free_port

AVSC = '{"type": "record", "name": "E", "fields": [{"name": "y", "type": "int"}]}'


@pytest.fixture
def registry():
    with FakeRegistry() as reg:
        yield reg


def test_schema_by_id_is_asked_once(registry):
    schema_id = registry.add(AVSC)
    with SchemaRegistryClient(registry.url) as client:
        first = client.schema(schema_id)
        second = client.schema(schema_id)
    assert first == second == RegisteredSchema(schema_id, AVSC, "AVRO")
    assert registry.requests == [("GET", f"/schemas/ids/{schema_id}")]


def test_schema_type_and_references_are_kept(registry):
    schema_id = registry.add('syntax = "proto3";', "PROTOBUF")
    registry.schemas[schema_id]["references"] = [{"name": "a.proto", "subject": "a", "version": 1}]
    with SchemaRegistryClient(registry.url) as client:
        found = client.schema(schema_id)
    assert found.schema_type == "PROTOBUF"
    assert found.references == ({"name": "a.proto", "subject": "a", "version": 1},)


def test_unknown_id_is_remembered_only_briefly(registry):
    now = [0.0]
    with SchemaRegistryClient(registry.url, negative_ttl_s=30, clock=lambda: now[0]) as client:
        for _ in range(3):
            with pytest.raises(SchemaNotFound, match=r"registry said 404 \(Schema not found\)"):
                client.schema(7)
        assert len(registry.requests) == 1  # a poll full of id 7 asks once
        registry.schemas[7] = {"schema": AVSC}  # another producer registers it
        now[0] = 29.0
        with pytest.raises(SchemaNotFound):
            client.schema(7)
        now[0] = 31.0
        assert client.schema(7).schema_id == 7
    assert len(registry.requests) == 2


def test_connection_refused_is_unreachable_not_a_record_defect():
    with SchemaRegistryClient(f"http://127.0.0.1:{free_port()}", timeout_s=1) as client:
        with pytest.raises(RegistryUnreachable, match="unreachable: ConnectError"):
            client.schema(1)
    assert not issubclass(RegistryUnreachable, SchemaNotFound)


def test_timeout_is_unreachable(registry):
    registry.add(AVSC)
    registry.delay_s = 1.0
    with SchemaRegistryClient(registry.url, timeout_s=0.2) as client:
        with pytest.raises(RegistryUnreachable, match="ReadTimeout"):
            client.schema(1)


def test_server_errors_are_unreachable_and_not_cached(registry):
    schema_id = registry.add(AVSC)
    registry.fail_with = 503
    with SchemaRegistryClient(registry.url) as client:
        with pytest.raises(RegistryUnreachable, match="registry said 503"):
            client.schema(schema_id)
        registry.fail_with = None
        assert client.schema(schema_id).schema == AVSC


def test_register_returns_the_id_and_is_idempotent(registry):
    with SchemaRegistryClient(registry.url) as client:
        first = client.register("events-value", AVSC)
        again = client.register("events-value", AVSC)
        proto_id = client.register("other-value", 'syntax = "proto3";', "PROTOBUF")
        assert client.schema(first).schema == AVSC  # learned from registering: no GET
    assert first == again != proto_id
    assert registry.schemas[proto_id]["schemaType"] == "PROTOBUF"
    assert registry.requests == [
        ("POST", "/subjects/events-value/versions"),
        ("POST", "/subjects/events-value/versions"),
        ("POST", "/subjects/other-value/versions"),
    ]


def test_invalid_schema_is_refused_with_the_registrys_message(registry):
    with SchemaRegistryClient(registry.url) as client:
        with pytest.raises(RegistryRefused, match=r"registry said 422 \(Invalid schema\)"):
            client.register("events-value", "INVALID")


def test_latest_of_a_subject(registry):
    registry.add(AVSC, subject="a/b-value")
    newer = registry.add(AVSC.replace('"E"', '"F"'), subject="a/b-value")
    with SchemaRegistryClient(registry.url) as client:
        latest = client.latest("a/b-value")
        assert (latest.schema_id, latest.schema_type) == (newer, "AVRO")
        with pytest.raises(SchemaNotFound, match="Subject 'nope' not found"):
            client.latest("nope")
    assert registry.requests[0] == ("GET", "/subjects/a%2Fb-value/versions/latest")


def test_basic_auth_from_the_url_is_sent_but_never_shown(registry):
    seen = []
    registry.on_request = seen.append
    url = registry.url.replace("http://", "http://reader:s3cret@")
    with SchemaRegistryClient(url) as client:
        with pytest.raises(SchemaNotFound):
            client.schema(1)
    assert seen == ["Basic cmVhZGVyOnMzY3JldA=="]  # base64 of reader:s3cret
    with SchemaRegistryClient(f"http://reader:s3cret@127.0.0.1:{free_port()}", timeout_s=1) as client:
        with pytest.raises(RegistryUnreachable) as caught:
            client.schema(1)
    assert "s3cret" not in str(caught.value)
