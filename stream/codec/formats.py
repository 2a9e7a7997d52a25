"""The record formats by name (``json``, ``avro``, ``protobuf``): a parser and a serializer for each.

This is what the command line maps ``--format``, ``--value-schema FILE`` and
``--schema-registry URL`` onto. A user's mistake (an unknown format, a missing
or unreadable schema, a format that needs a schema given none) is a
:class:`~stream.core.errors.ConfigError` with a one-line message.

With a registry, values are in the Confluent wire format; a serializer
registers its schema under ``subject`` (Confluent's default naming is
``<topic>-value``).

Examples
--------
>>> make_parser("json").parse(make_serializer("json").serialize({"x": [1.0], "y": 0}))
{'x': [1.0], 'y': 0}
>>> make_parser("xml")
Traceback (most recent call last):
stream.core.errors.ConfigError: unknown record format 'xml': choose json, avro or protobuf
>>> make_parser("avro")
Traceback (most recent call last):
stream.core.errors.ConfigError: --format avro needs --value-schema FILE or --schema-registry URL
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import orjson

from stream.codec.avro_parser import AvroParser, AvroSerializer, load_avro_schema
from stream.codec.parsers import JsonParser, RecordParser
from stream.codec.proto_schema import load_proto_schema
from stream.codec.protobuf_parser import ProtobufParser, ProtobufSerializer
from stream.codec.schema_registry import SchemaRegistryClient
from stream.codec.value_format import FORMATS as FORMATS  # re-exported: the formats by name
from stream.codec.value_format import ValueFormat
from stream.codec.value_format import check_format as _check
from stream.core.errors import ConfigError


@runtime_checkable
class RecordSerializer(Protocol):
    """Encodes one document as a record value (the producer's side of a :class:`RecordParser`)."""

    def serialize(self, doc: dict[str, Any]) -> bytes:
        """The record value for ``doc``.

        Raises:
            ConfigError: ``doc`` does not fit the schema.
        """
        ...


class JsonSerializer:
    """JSON objects, written with orjson."""

    def serialize(self, doc: dict[str, Any]) -> bytes:
        return orjson.dumps(doc)


def make_parser(
    record_format: str,
    schema_path: str | None = None,
    registry_url: str | None = None,
    *,
    message: str | None = None,
) -> RecordParser:
    """The parser for ``record_format``; ``message`` picks a Protobuf message by name (default: the first).

    Raises:
        ConfigError: see the module docstring.
    """
    _check(record_format, schema_path, registry_url)
    if record_format == "json":
        return JsonParser()
    registry = _registry(registry_url)
    if record_format == "avro":
        schema = load_avro_schema(schema_path)[0] if schema_path else None
        return AvroParser(schema, registry=registry)
    schema = load_proto_schema(schema_path) if schema_path else None
    return ProtobufParser(schema, message=message, registry=registry)


def parser_for(value_format: ValueFormat) -> RecordParser:
    """The parser of a configured :class:`~stream.codec.value_format.ValueFormat`."""
    vf = value_format
    return make_parser(vf.record_format, vf.schema_path, vf.registry_url, message=vf.message)


def serializer_for(value_format: ValueFormat, subject: str | None = None) -> RecordSerializer:
    """The serializer of a configured :class:`~stream.codec.value_format.ValueFormat` (``subject``: with a registry)."""
    vf = value_format
    return make_serializer(
        vf.record_format, vf.schema_path, vf.registry_url, subject=subject, message=vf.message
    )


def make_serializer(
    record_format: str,
    schema_path: str | None = None,
    registry_url: str | None = None,
    *,
    subject: str | None = None,
    message: str | None = None,
) -> RecordSerializer:
    """The serializer for ``record_format``; with a registry, its schema is registered under ``subject`` now.

    Raises:
        ConfigError: see the module docstring; also a registry without a ``subject``.
        RegistryUnreachable: the registry did not answer.
        RegistryRefused: the registry rejected the schema (invalid, or incompatible with the subject's).
    """
    _check(record_format, schema_path, registry_url)
    if record_format == "json":
        return JsonSerializer()
    if registry_url and not subject:
        raise ConfigError("writing to a schema registry needs a subject (e.g. '<topic>-value')")
    registry = _registry(registry_url)
    if record_format == "avro":
        schema = load_avro_schema(schema_path)[1] if schema_path else None
        return AvroSerializer(schema, registry=registry, subject=subject)
    schema = load_proto_schema(schema_path) if schema_path else None
    return ProtobufSerializer(schema, message=message, registry=registry, subject=subject)


def _registry(url: str | None) -> SchemaRegistryClient | None:
    return SchemaRegistryClient(url) if url else None
