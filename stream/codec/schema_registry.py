"""A client for a Confluent-compatible Schema Registry (Confluent's, Karapace, Redpanda's, Apicurio's ccompat).

Three calls of the REST API: a schema by id (``GET /schemas/ids/{id}``), the
latest version of a subject (``GET /subjects/{subject}/versions/latest``) and
registering a schema under a subject (``POST /subjects/{subject}/versions``).

Schemas by id are cached for the life of the client: a registry never changes
the schema behind an id, so one request per id is enough. An unknown id is
remembered only for ``negative_ttl_s`` (a poll full of records with the same
bad id asks once, not once a record), because the id may yet be registered.

Two kinds of failure are kept apart, since the engine must treat them
differently:

- :class:`RegistryUnreachable` -- no answer, a timeout, or a 5xx: nothing is
  wrong with the record, so it must not be dead-lettered; retry later.
- :class:`SchemaNotFound` -- the registry answered that the id (or subject)
  does not exist: a defect of the record (its parser makes it a dead letter).

Any other refusal (an invalid or incompatible schema on registering, a 401)
is a :class:`RegistryRefused`, whose message carries the registry's own.

Examples
--------
>>> client = SchemaRegistryClient("http://127.0.0.1:1", timeout_s=0.5)
>>> try:
...     client.schema(1)
... except RegistryUnreachable as exc:
...     str(exc).startswith("schema registry at http://127.0.0.1:1 unreachable")
True
>>> client.close()
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote

import httpx

from stream.codec.registry_errors import RegistryRefused, RegistryUnreachable, SchemaNotFound

#: The media type Confluent's registry speaks (plain application/json is accepted too).
_MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"


@dataclass(frozen=True)
class RegisteredSchema:
    """A schema as the registry holds it: ``schema_type`` is ``AVRO``, ``PROTOBUF`` or ``JSON``."""

    schema_id: int
    schema: str
    schema_type: str = "AVRO"
    #: Other subjects' schemas this one imports, as ``{"name", "subject", "version"}`` dicts.
    references: tuple[dict[str, Any], ...] = ()


class SchemaRegistryClient:
    """A cached, thread-safe client for one registry; see the module docstring.

    ``client`` is an :class:`httpx.Client` to use instead of a new one (for
    TLS or authentication settings); basic authentication also works as
    ``https://user:password@host``. ``clock`` times the negative cache.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        negative_ttl_s: float = 30.0,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url.rstrip("/")
        # Messages name the registry without the password of a https://user:password@host URL.
        self._shown = str(httpx.URL(self.url).copy_with(username=None, password=None))
        self.timeout_s = timeout_s
        self.negative_ttl_s = negative_ttl_s
        self._http = client or httpx.Client(timeout=timeout_s, headers={"Accept": _MEDIA_TYPE})
        self._clock = clock
        self._by_id: dict[int, RegisteredSchema] = {}
        self._missing: dict[int, tuple[float, str]] = {}  # id -> (asked at, the registry's message)
        self._lock = threading.Lock()

    def schema(self, schema_id: int) -> RegisteredSchema:
        """The schema registered under ``schema_id``; asks the registry once per id.

        Raises:
            SchemaNotFound: the registry has no such id.
            RegistryUnreachable: no answer; try again later.
            RegistryRefused: any other refusal.
        """
        with self._lock:
            cached = self._by_id.get(schema_id)
            if cached is not None:
                return cached
            missing = self._missing.get(schema_id)
            if missing is not None and self._clock() - missing[0] < self.negative_ttl_s:
                raise SchemaNotFound(missing[1])
        # The request is made outside the lock: a slow registry must not hold up
        # lookups of ids already cached. Two threads may both ask for a new id;
        # they get the same answer.
        try:
            body = self._request("GET", f"/schemas/ids/{schema_id}")
        except SchemaNotFound as exc:
            with self._lock:
                self._missing[schema_id] = (self._clock(), str(exc))
            raise
        found = _registered(schema_id, body)
        with self._lock:
            self._by_id[schema_id] = found
            self._missing.pop(schema_id, None)
        return found

    def latest(self, subject: str) -> RegisteredSchema:
        """The latest schema registered under ``subject`` (not cached: it changes).

        Raises:
            SchemaNotFound: no such subject.
            RegistryUnreachable: no answer.
            RegistryRefused: any other refusal.
        """
        body = self._request("GET", f"/subjects/{quote(subject, safe='')}/versions/latest")
        return self._remember(_registered(int(body["id"]), body))

    def register(self, subject: str, schema: str, schema_type: str = "AVRO") -> int:
        """Register ``schema`` under ``subject`` and return its id (an existing one if already there).

        Raises:
            RegistryRefused: the schema is invalid or incompatible with the subject's.
            RegistryUnreachable: no answer.
        """
        payload: dict[str, Any] = {"schema": schema}
        if schema_type != "AVRO":  # Confluent's default type; older registries reject the field
            payload["schemaType"] = schema_type
        body = self._request("POST", f"/subjects/{quote(subject, safe='')}/versions", payload)
        schema_id = int(body["id"])
        self._remember(RegisteredSchema(schema_id, schema, schema_type))
        return schema_id

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SchemaRegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _remember(self, found: RegisteredSchema) -> RegisteredSchema:
        with self._lock:
            self._by_id.setdefault(found.schema_id, found)
        return found

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.url + path
        try:
            response = self._http.request(
                method,
                url,
                json=payload,
                headers={"Content-Type": _MEDIA_TYPE} if payload is not None else None,
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:  # refused, reset, DNS, timeouts
            raise RegistryUnreachable(
                f"schema registry at {self._shown} unreachable: {type(exc).__name__}: {exc}"
            ) from None
        body = _json_body(response)
        if response.status_code == 200:
            if not isinstance(body, dict):
                raise RegistryRefused(f"schema registry at {self._shown}: {method} {path} answered {body!r}")
            return body
        message = body.get("message") if isinstance(body, dict) else None
        said = f"registry said {response.status_code}" + (f" ({message})" if message else "")
        if response.status_code == 404:
            raise SchemaNotFound(said)
        if response.status_code >= 500:
            raise RegistryUnreachable(f"schema registry at {self._shown}: {method} {path}: {said}")
        raise RegistryRefused(f"schema registry at {self._shown}: {method} {path}: {said}")


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _registered(schema_id: int, body: dict[str, Any]) -> RegisteredSchema:
    if not isinstance(body.get("schema"), str):
        raise RegistryRefused(f"schema registry answered for id {schema_id} without a schema: {body!r}")
    return RegisteredSchema(
        schema_id,
        body["schema"],
        body.get("schemaType") or "AVRO",
        tuple(body.get("references") or ()),
    )


def usable_schema(registry: SchemaRegistryClient, schema_id: int, schema_type: str) -> RegisteredSchema | str:
    """The registered schema ``schema_id`` if it is of ``schema_type`` and self-contained, else the reason (a str).

    An unknown id is :class:`SchemaNotFound` (a parser makes it a dead letter); an
    unreachable registry is :class:`RegistryUnreachable` (the engine retries).
    """
    found = registry.schema(schema_id)
    if found.schema_type != schema_type:
        return f"wrong schema type: schema id {schema_id} is {found.schema_type}, not {schema_type}"
    if found.references:
        kind = schema_type.lower()
        return f"bad {kind} schema: schema id {schema_id} has references, which are not supported"
    return found
