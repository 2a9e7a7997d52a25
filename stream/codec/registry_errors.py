"""How a Schema Registry request can fail, apart from the client (importing these costs no HTTP library).

The engine retries a poll on :class:`RegistryUnreachable`; a parser turns
:class:`SchemaNotFound` into a dead letter; :class:`RegistryRefused` carries the
registry's own message.
"""

from __future__ import annotations

from stream.core.errors import StreamlearnError

__all__ = ["RegistryRefused", "RegistryUnreachable", "SchemaNotFound"]


class RegistryUnreachable(StreamlearnError, ConnectionError):
    """The schema registry did not answer (or answered 5xx): retry; the record is not at fault."""


class SchemaNotFound(StreamlearnError, LookupError):
    """The schema registry has no schema with that id (or no such subject)."""


class RegistryRefused(StreamlearnError):
    """The schema registry refused a request (invalid or incompatible schema, unauthorised)."""
