"""Protobuf record values, with the message type from a schema file or a Schema Registry.

Three ways to know the message type:

- a schema file only (``.proto`` or a descriptor set, :mod:`stream.codec.proto_schema`):
  values are bare serialized messages;
- a schema file and a registry: values are Confluent-framed and read with the
  file's type (the schema id is not looked up, as Confluent's own deserializer
  does with a generated class); Protobuf's field numbers keep old and new
  writers readable;
- a registry only: each value's schema id is looked up once and its ``.proto``
  text compiled (needs grpcio-tools); the message indexes pick the message.
  Schemas that import other subjects (*references*) are not supported, except
  the well-known ``google/protobuf/*.proto`` types.

A message becomes a dict of its field names. Fields with presence (``optional``,
``oneof`` members, messages) are left out when unset, so they read as missing;
proto3 fields without presence read as their value, zero included -- so declare
``optional string id`` and ``optional int64 ts`` when records may lack them (an
unset plain ``string id`` reads as the id ``""``). 64-bit integers stay
integers (``json_format.MessageToDict`` would make them strings), enums become
their names, ``google.protobuf.Timestamp`` becomes epoch milliseconds and the
wrapper types (``DoubleValue``...) their value.

Examples
--------
>>> from stream.codec.proto_schema import compile_proto
>>> schema = compile_proto('syntax = "proto3"; message Event { repeated double x = 1; int32 y = 2; '
...                        'optional int64 ts = 3; }')
>>> value = ProtobufSerializer(schema).serialize({"x": [0.5, 1.0], "y": 0, "ts": None})
>>> ProtobufParser(schema).parse(value)
{'x': [0.5, 1.0], 'y': 0}
>>> try:
...     ProtobufParser(schema).parse(b"\\x0a\\xff")
... except ParseError as exc:
...     exc.reason
"bad protobuf: Error parsing message with type 'Event': Wire format was corrupt"
"""

from __future__ import annotations

from typing import Any, Sequence

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from stream.codec.parsers import ParseError, require_payload
from stream.codec.proto_schema import (
    ProtoSchema,
    compile_proto,
    find_message,
    message_at,
    message_class,
    message_indexes,
)
from stream.codec.schema_registry import SchemaNotFound, SchemaRegistryClient, usable_schema
from stream.codec.wire import frame, unframe
from stream.core.errors import ConfigError

_WRAPPERS = {
    f"google.protobuf.{kind}Value"
    for kind in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
}


class ProtobufParser:
    """Reads Protobuf values; see the module docstring for the three modes.

    Raises:
        ConfigError: neither a schema nor a registry; an unknown ``message``; a
            registry without a schema but no grpcio-tools to compile its ``.proto`` text.
    """

    def __init__(
        self,
        schema: ProtoSchema | None = None,
        *,
        message: str | None = None,
        registry: SchemaRegistryClient | None = None,
    ) -> None:
        if schema is None and registry is None:
            raise ConfigError("Protobuf needs a schema file or a schema registry")
        self._local = message_class(schema, message) if schema is not None else None
        self._registry = registry
        if self._local is None:
            compile_proto('syntax = "proto3";')  # fail now, not per record, when protoc is missing
        # By schema id: the compiled file, or why it cannot be used; by (id, indexes): the class.
        self._files: dict[int, Any] = {}
        self._classes: dict[tuple[int, tuple[int, ...]], type[Message]] = {}

    def parse(self, value: bytes) -> dict[str, Any]:
        require_payload(value)
        if self._registry is None:
            return _read(self._local, value)
        framed = unframe(value, protobuf=True)
        cls = self._local or self._class(framed.schema_id, framed.message_indexes)
        return _read(cls, framed.payload)

    def _class(self, schema_id: int, indexes: tuple[int, ...]) -> type[Message]:
        cls = self._classes.get((schema_id, indexes))
        if cls is not None:
            return cls
        file = self._files.get(schema_id)
        if file is None:
            file = self._files[schema_id] = self._fetch(schema_id)
        if isinstance(file, str):
            raise ParseError(file)
        try:
            descriptor = message_at(file, indexes)
        except LookupError as exc:
            raise ParseError(f"bad wire format: schema id {schema_id}: {exc}") from None
        cls = self._classes[(schema_id, indexes)] = GetMessageClass(descriptor)
        return cls

    def _fetch(self, schema_id: int) -> Any:
        """The compiled file of ``schema_id``, or the reason it cannot be used (a str)."""
        try:
            found = usable_schema(self._registry, schema_id, "PROTOBUF")
        except SchemaNotFound as exc:
            raise ParseError(f"unknown schema id {schema_id}: {exc}") from None
        if isinstance(found, str):
            return found
        try:
            return compile_proto(found.schema, name=f"schema_{schema_id}.proto").file
        except ConfigError as exc:
            return f"bad protobuf schema: schema id {schema_id}: {exc}"


def _read(cls: type[Message], payload: bytes) -> dict[str, Any]:
    msg = cls()
    try:
        msg.ParseFromString(payload)
    except DecodeError as exc:
        raise ParseError(f"bad protobuf: {exc}") from None
    except Exception as exc:  # the runtime's own checks (bad UTF-8 in a string field, depth)
        raise ParseError(f"bad protobuf: {type(exc).__name__}: {exc}") from None
    return message_to_dict(msg)


def message_to_dict(msg: Message) -> dict[str, Any]:
    """``msg`` as a dict by field name; see the module docstring for the mapping."""
    out: dict[str, Any] = {}
    for field in msg.DESCRIPTOR.fields:
        if field.has_presence and not msg.HasField(field.name):
            continue
        value = getattr(msg, field.name)
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {k: _value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_value(field, v) for v in value]
        else:
            out[field.name] = _value(field, value)
    return out


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM:
        known = field.enum_type.values_by_number.get(value)
        return known.name if known is not None else value
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return value
    name = field.message_type.full_name
    if name == "google.protobuf.Timestamp":
        return value.seconds * 1000 + value.nanos // 1_000_000
    if name in _WRAPPERS:
        return value.value
    return message_to_dict(value)


class ProtobufSerializer:
    """Writes documents as Protobuf messages: bare, or framed for a registry under ``subject``.

    With a registry the schema's ``.proto`` text is registered under
    ``subject`` when the serializer is made (a descriptor set has no text:
    registering needs the ``.proto`` file); without a ``schema`` the subject's
    latest schema is used.

    Raises:
        ConfigError: no schema and no registry; a registry without a subject, or
            with a descriptor set; an unknown ``message``.
    """

    def __init__(
        self,
        schema: ProtoSchema | None = None,
        *,
        message: str | None = None,
        registry: SchemaRegistryClient | None = None,
        subject: str | None = None,
    ) -> None:
        self._schema_id: int | None = None
        self._indexes: Sequence[int] | None = None
        if registry is not None:
            if not subject:
                raise ConfigError("writing to a schema registry needs a subject (e.g. '<topic>-value')")
            if schema is None:
                latest = registry.latest(subject)
                schema, self._schema_id = compile_proto(latest.schema), latest.schema_id
            elif schema.text is None:
                raise ConfigError("registering a Protobuf schema needs its .proto file, not a descriptor set")
            else:
                self._schema_id = registry.register(subject, schema.text, "PROTOBUF")
        elif schema is None:
            raise ConfigError("Protobuf needs a schema file or a schema registry")
        descriptor: Descriptor = find_message(schema.file, message)
        self._cls = GetMessageClass(descriptor)
        if self._schema_id is not None:
            self._indexes = message_indexes(descriptor)

    def serialize(self, doc: dict[str, Any]) -> bytes:
        """``doc`` as one message (wire-framed when a registry is used); ``None`` values are left unset.

        Raises:
            ConfigError: ``doc`` does not fit the message (an unknown field, a wrong type).
        """
        msg = self._cls()
        try:
            json_format.ParseDict({k: v for k, v in doc.items() if v is not None}, msg)
        except json_format.ParseError as exc:
            raise ConfigError(f"a record does not fit the Protobuf message: {exc}") from None
        payload = msg.SerializeToString()
        if self._schema_id is None:
            return payload
        return frame(self._schema_id, payload, message_indexes=self._indexes)
