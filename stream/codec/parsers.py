"""The bytes -> document step of decoding, one :class:`RecordParser` per record format.

A parser turns one record value into a dict document (``{"id", "ts", "x", "y"}``
or whatever fields the codec is configured to read). Anything it cannot decode
raises :class:`ParseError`, whose message becomes the record's dead-letter
reason; ``"bad avro: ..."`` has the reason kind ``bad avro``. A parser never
raises anything else for bad *data*: an error that is not the record's fault
(a schema registry that does not answer) is a different exception, so the
engine can retry instead of dead-lettering good records.

Examples
--------
>>> JsonParser().parse(b'{"x": [1, 2], "y": 1}')
{'x': [1, 2], 'y': 1}
>>> try:
...     JsonParser().parse(b"[1, 2]")
... except ParseError as exc:
...     exc.reason
'bad json: expected an object, got list'
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import orjson


class ParseError(Exception):
    """One record value cannot be decoded; ``reason`` is its dead-letter reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@runtime_checkable
class RecordParser(Protocol):
    """Decodes one record value into a document; see the module docstring."""

    def parse(self, value: bytes) -> dict[str, Any]:
        """The document ``value`` holds.

        Raises:
            ParseError: the value is not a valid record of this format.
        """
        ...


def require_payload(value: bytes | None) -> bytes:
    """``value`` itself, or a ParseError for a tombstone or an empty value (no format decodes those).

    >>> require_payload(b"")
    Traceback (most recent call last):
    stream.codec.parsers.ParseError: empty value: record has no payload
    """
    if not value:
        raise ParseError("empty value: record has no payload")
    return value


class JsonParser:
    """JSON objects, read with orjson (the format of ``stream.codec.json_codec``)."""

    def parse(self, value: bytes) -> dict[str, Any]:
        require_payload(value)
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"bad json: {exc}") from None
        if not isinstance(doc, dict):
            raise ParseError(f"bad json: expected an object, got {type(doc).__name__}")
        return doc
