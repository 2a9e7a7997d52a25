"""A record format as configured: plain, frozen data, cheap to import (the parsers load on first use)."""

from __future__ import annotations

from dataclasses import dataclass

from stream.core.errors import ConfigError

__all__ = ["FORMATS", "ValueFormat", "check_format"]

FORMATS = ("json", "avro", "protobuf")


@dataclass(frozen=True)
class ValueFormat:
    """A record format by name, as configured (``--format``, ``--value-schema``, ``--schema-registry``).

    Plain data, so it can sit in a frozen configuration (the settings are
    checked here); :func:`stream.codec.formats.parser_for` builds the live parser.

    >>> ValueFormat("avro")
    Traceback (most recent call last):
    stream.core.errors.ConfigError: --format avro needs --value-schema FILE or --schema-registry URL
    """

    record_format: str = "json"
    schema_path: str | None = None
    registry_url: str | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        check_format(self.record_format, self.schema_path, self.registry_url)


def check_format(record_format: str, schema_path: str | None, registry_url: str | None) -> None:
    """Refuse a format/schema/registry combination that cannot work, in one line."""
    if record_format not in FORMATS:
        raise ConfigError(
            f"unknown record format {record_format!r}: choose {', '.join(FORMATS[:-1])} or {FORMATS[-1]}"
        )
    if record_format == "json":
        if schema_path or registry_url:
            raise ConfigError(
                "--format json takes no --value-schema or --schema-registry (JSON Schema is not supported)"
            )
        return
    if not (schema_path or registry_url):
        raise ConfigError(f"--format {record_format} needs --value-schema FILE or --schema-registry URL")
    if registry_url and not registry_url.startswith(("http://", "https://")):
        raise ConfigError(f"--schema-registry must be an http:// or https:// URL, got {registry_url!r}")
