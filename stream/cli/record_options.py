"""The options that say how records are written: their value format and the feature schema of named fields.

``run`` and ``replay`` share them; :func:`schema_from` and :func:`value_format_from`
turn their values into the typed configuration (a mistake is one line, exit 2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from stream.cli.table import Option, Values

if TYPE_CHECKING:
    from stream.codec.value_format import ValueFormat
    from stream.core.features import FeatureSchema

__all__ = ["RECORD_FORMAT", "SCHEMA", "schema_from", "value_format_from"]

SCHEMA = Option(
    "--schema",
    "schema",
    type=click.Path(dir_okay=False),
    help="Feature schema (YAML/JSON) for records whose x is named fields of mixed types; default: "
    "inferred from the first records (the summary and YAML to save are printed). See docs/features.md.",
)
RECORD_FORMAT = (
    Option(
        "--format",
        "record_format",
        type=click.Choice(["json", "avro", "protobuf"]),
        default="json",
        show_default=True,
        help="How record values are written. avro/protobuf need --value-schema or --schema-registry.",
    ),
    Option(
        "--value-schema",
        "value_schema",
        type=click.Path(dir_okay=False),
        help="The values' Avro (.avsc) or Protobuf (.proto, .desc) schema file.",
    ),
    Option(
        "--schema-registry",
        "schema_registry",
        help="Confluent-compatible Schema Registry URL: values in its wire format (magic byte + schema id).",
    ),
    Option("--proto-message", "proto_message", help="The Protobuf message type (default: the file's first)."),
)


def schema_from(opts: Values) -> FeatureSchema | None:
    """The declared feature schema of ``--schema``, read and checked now (a mistake is one line, exit 2)."""
    from stream.core.features import load_schema

    path = opts.get("schema")
    return load_schema(path) if path else None


def value_format_from(opts: Values) -> ValueFormat | None:
    """The record format of the :data:`RECORD_FORMAT` options; ``None`` for plain JSON."""
    from stream.codec.value_format import ValueFormat

    fmt = ValueFormat(
        opts.get("record_format") or "json",
        opts.get("value_schema"),
        opts.get("schema_registry"),
        message=opts.get("proto_message"),
    )
    return None if fmt == ValueFormat() else fmt
