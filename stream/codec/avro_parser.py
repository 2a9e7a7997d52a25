"""Avro record values (fastavro), with the schema from a ``.avsc`` file or a Schema Registry.

Without a registry a value is one Avro record in binary encoding with no
header (fastavro's *schemaless* encoding; what ``schemaless_writer`` writes),
read with the file's schema. With a registry every value is in the Confluent
wire format (:mod:`stream.codec.wire`): the schema id in front of the record
picks the writer's schema, fetched once per id; a schema file given as well is
the *reader's* schema, and Avro's schema resolution maps one onto the other
(added fields get their defaults, removed ones are skipped).

Avro ``null`` (``["null", "long"]`` unions) reads as ``None``, which the codec
treats as a missing value: no ``ts`` means the Kafka timestamp, no ``id`` means
``topic:partition:offset``. A top-level ``timestamp-millis`` (or ``-micros``)
field, read by fastavro as a datetime, is turned back into epoch milliseconds.

Examples
--------
>>> schema = {"type": "record", "name": "Event", "fields": [
...     {"name": "x", "type": {"type": "array", "items": "double"}},
...     {"name": "y", "type": "int"},
...     {"name": "ts", "type": ["null", "long"], "default": None}]}
>>> value = AvroSerializer(schema).serialize({"x": [0.5, 1.0], "y": 1})
>>> AvroParser(schema).parse(value)
{'x': [0.5, 1.0], 'y': 1, 'ts': None}
>>> try:
...     AvroParser(schema).parse(value[:3])
... except ParseError as exc:
...     exc.reason
'bad avro: record cut short'
"""

from __future__ import annotations

import datetime as _dt
import io
from pathlib import Path
from typing import Any

import fastavro
import orjson

from stream.codec.parsers import ParseError, require_payload
from stream.codec.schema_registry import SchemaNotFound, SchemaRegistryClient, usable_schema
from stream.codec.wire import frame, unframe
from stream.core.errors import ConfigError

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def load_avro_schema(path: str | Path) -> tuple[Any, str]:
    """The parsed schema in ``path`` (a ``.avsc`` file, one record schema) and its text.

    Raises:
        ConfigError: the file is missing, not JSON, not a valid Avro schema, or not a record.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the Avro schema {path}: {exc}") from None
    try:
        return parse_avro_schema(orjson.loads(text)), text
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"the Avro schema {path} is not JSON: {exc}") from None
    except ValueError as exc:  # ConfigError is a ValueError too: add the file's name
        raise ConfigError(f"the Avro schema {path} is invalid: {exc}") from None


def parse_avro_schema(schema: Any) -> Any:
    """``schema`` (a dict or JSON text) parsed by fastavro; it must be a record.

    Raises:
        ConfigError: not a valid Avro schema, or not a record schema.
    """
    if isinstance(schema, str):
        try:
            schema = orjson.loads(schema)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"not JSON: {exc}") from None
    try:
        parsed = fastavro.parse_schema(schema)
    except Exception as exc:  # fastavro raises SchemaParseException, KeyError, TypeError, ...
        raise ConfigError(f"{type(exc).__name__}: {exc}") from None
    kind = parsed.get("type") if isinstance(parsed, dict) else parsed
    if kind != "record":
        raise ConfigError(f"the top-level type must be a record, got {kind!r}")
    return parsed


class AvroParser:
    """Reads Avro record values; see the module docstring.

    ``schema`` (dict, JSON text or parsed) reads unframed values, or with a
    ``registry`` is the reader's schema of framed ones. One of the two is needed.
    """

    def __init__(self, schema: Any = None, *, registry: SchemaRegistryClient | None = None) -> None:
        if schema is None and registry is None:
            raise ConfigError("Avro needs a schema file or a schema registry")
        self._reader = parse_avro_schema(schema) if schema is not None else None
        self._registry = registry
        # Schemas by id, parsed once: a schema behind an id never changes, and
        # neither does the reason one cannot be used (cached as a str).
        self._writers: dict[int, Any] = {}

    def parse(self, value: bytes) -> dict[str, Any]:
        require_payload(value)
        if self._registry is None:
            return _read(value, self._reader, None)
        framed = unframe(value)
        schemas = self._writers.get(framed.schema_id)
        if schemas is None:
            schemas = self._writers[framed.schema_id] = self._schemas(framed.schema_id)
        if isinstance(schemas, str):
            raise ParseError(schemas)
        return _read(framed.payload, *schemas)

    def _schemas(self, schema_id: int) -> tuple[Any, Any] | str:
        """(writer's, reader's or None) for framed values with ``schema_id``, or why there are none."""
        writer = self._fetch(schema_id)
        if isinstance(writer, str):
            return writer
        # Same schema on both sides (or no file): skip fastavro's resolution step.
        return writer, None if self._reader is None or self._reader == writer else self._reader

    def _fetch(self, schema_id: int) -> Any:
        """The parsed writer's schema, or the reason it cannot be used (a str); RegistryUnreachable passes."""
        try:
            found = usable_schema(self._registry, schema_id, "AVRO")
        except SchemaNotFound as exc:
            # Not cached here: the client remembers a miss only briefly, as the id may yet appear.
            raise ParseError(f"unknown schema id {schema_id}: {exc}") from None
        if isinstance(found, str):
            return found
        try:
            return parse_avro_schema(found.schema)
        except ConfigError as exc:
            return f"bad avro schema: schema id {schema_id}: {exc}"


def _read(payload: bytes, writer: Any, reader: Any) -> dict[str, Any]:
    buf = io.BytesIO(payload)
    try:
        doc = fastavro.schemaless_reader(buf, writer, reader)
    except EOFError:
        raise ParseError("bad avro: record cut short") from None
    except Exception as exc:
        # Garbage makes fastavro fail in many ways (IndexError, UnicodeDecodeError,
        # SchemaResolutionError, ValueError on a bad union index...): all are the record's fault.
        raise ParseError(f"bad avro: {type(exc).__name__}: {exc}") from None
    left = len(payload) - buf.tell()
    if left:
        raise ParseError(f"bad avro: {left} bytes left over after the record")
    for key, item in doc.items():
        if isinstance(item, _dt.datetime):
            doc[key] = _epoch_ms(item)
    return doc


def _epoch_ms(when: _dt.datetime) -> int:
    if when.tzinfo is None:  # local-timestamp-* logical types: read as UTC, like the JSON codec
        when = when.replace(tzinfo=_dt.timezone.utc)
    return (when - _EPOCH) // _dt.timedelta(milliseconds=1)


class AvroSerializer:
    """Writes documents as Avro records: unframed, or framed for a registry under ``subject``.

    With a registry the schema is registered under ``subject`` when the
    serializer is made (an existing identical schema keeps its id); without a
    ``schema`` the subject's latest schema is used.

    Raises:
        ConfigError: no schema and no registry, or a registry without a subject.
    """

    def __init__(
        self,
        schema: Any = None,
        *,
        registry: SchemaRegistryClient | None = None,
        subject: str | None = None,
    ) -> None:
        self._schema_id: int | None = None
        if registry is not None:
            if not subject:
                raise ConfigError("writing to a schema registry needs a subject (e.g. '<topic>-value')")
            if schema is None:
                latest = registry.latest(subject)
                schema, self._schema_id = latest.schema, latest.schema_id
            else:
                text = schema if isinstance(schema, str) else orjson.dumps(schema).decode()
                self._schema_id = registry.register(subject, text, "AVRO")
        elif schema is None:
            raise ConfigError("Avro needs a schema file or a schema registry")
        self._schema = parse_avro_schema(schema)

    def serialize(self, doc: dict[str, Any]) -> bytes:
        """``doc`` as one Avro record (wire-framed when a registry is used).

        Raises:
            ConfigError: ``doc`` does not fit the schema (a missing or mistyped field).
        """
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, self._schema, doc)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ConfigError(f"a record does not fit the Avro schema: {exc}") from None
        payload = buf.getvalue()
        return payload if self._schema_id is None else frame(self._schema_id, payload)
