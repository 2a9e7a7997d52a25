"""A model registry in Redis: version documents, weights, the validated pointer, audit, notifications.

Keys, all under a namespace (default ``streamlearn``) so deployments can
share a Redis::

    {ns}:next              INCR counter that numbers versions
    {ns}:meta              hash: version number -> Version JSON
    {ns}:state:{n}         the weights of version n (dumps_state bytes)
    {ns}:pointer           hash: version, generation (the validated pointer)
    {ns}:audit             stream of AuditEvent JSON (capped, ~100k entries)
    {ns}:notify            pub/sub channel: one message per transition

Each transition is one MULTI/EXEC transaction (document, pointer, audit
entry and notification together), so a reader never sees a pointer without
its version or an audit trail that disagrees with the state. Credentials and
TLS come from the URL (``rediss://user:password@host:6380/0``); transient
connection errors are retried with exponential backoff by redis-py itself,
and what is left surfaces as :class:`~stream.core.errors.RegistryUnavailableError`.

Usage (needs a Redis; tests/integration/test_registry_contract.py runs the
same calls against a real one)::

    reg = RedisRegistry("rediss://:PASSWORD@redis.internal:6380/0", namespace="fraud")
    version = reg.publish(learner.state_dict(), Version(number=0, metrics={...}))
    reg.validate(version.number, reason="no worse on holdout")
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import orjson
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from serving.registry.base import Pointer, RegistryBase, not_found
from serving.registry.versions import AuditEvent, Version
from stream.core.errors import RegistryError, RegistryUnavailableError

__all__ = ["RedisRegistry"]

_AUDIT_MAXLEN = 100_000
#: Stream entry ids are ``<ms>-<seq>`` with an unsigned 64-bit ``ms``.
_MAX_STREAM_MS = 2**64 - 1


def _stream_ms(seconds: float) -> int:
    """Epoch seconds as the millisecond part of a stream id, clamped to what Redis accepts.

    A bound outside the id range (negative, 1e308, inf) selects the same
    entries as the nearest id, so it is clamped rather than sent: ``int()`` of
    an infinite product overflows, and Redis refuses a negative or 2**64+ id.

    Examples
    --------
    >>> _stream_ms(1.5), _stream_ms(-3.0), _stream_ms(1e308) == _stream_ms(float("inf")) == 2**64 - 1
    (1500, 0, True)
    """
    ms = seconds * 1000
    if ms <= 0:
        return 0
    return _MAX_STREAM_MS if ms >= _MAX_STREAM_MS else int(ms)


class RedisRegistry(RegistryBase):
    """A :class:`~serving.registry.base.ModelRegistry` backed by Redis at ``url``.

    ``socket_timeout`` bounds every command; ``retries`` transient failures are
    retried with exponential backoff (50 ms doubling, capped at 1 s) before
    :class:`~stream.core.errors.RegistryUnavailableError` is raised.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "streamlearn",
        keep_states: int = 100,
        socket_timeout: float = 2.0,
        retries: int = 2,
    ) -> None:
        if not namespace or any(c in namespace for c in " {}"):
            raise RegistryError(f"bad registry namespace {namespace!r}: use letters, digits, ':' '-' '_'")
        self.url = url
        self.namespace = namespace
        self.keep_states = max(1, int(keep_states))
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries),
            retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
            health_check_interval=10,
        )
        self._pubsub: redis.client.PubSub | None = None
        ns = namespace
        self._k_next, self._k_meta, self._k_pointer = f"{ns}:next", f"{ns}:meta", f"{ns}:pointer"
        self._k_audit, self._channel = f"{ns}:audit", f"{ns}:notify"
        self._k_live = f"{ns}:live"

    def __repr__(self) -> str:
        # Never print the password that may be in the URL.
        kwargs = self._client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"
        return f"RedisRegistry({where!r}, namespace={self.namespace!r})"

    def _k_state(self, number: int) -> str:
        return f"{self.namespace}:state:{number}"

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except redis.exceptions.AuthenticationError as exc:
            raise RegistryUnavailableError(
                f"Redis refused the credentials while {doing}: {exc}; "
                "check the user/password in the registry URL"
            ) from exc
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise RegistryUnavailableError(f"Redis at {self!r} is unreachable while {doing}: {exc}") from exc
        except redis.exceptions.ResponseError as exc:
            raise RegistryError(f"Redis refused a command while {doing}: {exc}") from exc

    def _notify(self, pipe, kind: str, number: int | None) -> None:
        pipe.publish(self._channel, orjson.dumps({"kind": kind, "version": number}))

    def _xadd(self, pipe, event: AuditEvent) -> None:
        pipe.xadd(
            self._k_audit, {"doc": orjson.dumps(event.to_dict())}, maxlen=_AUDIT_MAXLEN, approximate=True
        )

    # --------------------------------------------------------- primitives
    def _next_number(self) -> int:
        with self._errors("numbering a new version"):
            return int(self._client.incr(self._k_next))

    def _store_new(self, version: Version, blob: bytes, event: AuditEvent) -> None:
        with self._errors(f"publishing version {version.number}"):
            pipe = self._client.pipeline(transaction=True)
            pipe.set(self._k_state(version.number), blob)
            pipe.hset(self._k_meta, str(version.number), version.to_json())
            self._xadd(pipe, event)
            self._notify(pipe, "publish", version.number)
            pipe.execute()

    def _transition(
        self, version: Version, *, move_pointer: bool, demoted: Version | None, event: AuditEvent
    ) -> None:
        with self._errors(f"recording '{event.kind}' of version {version.number}"):
            pipe = self._client.pipeline(transaction=True)
            if demoted is not None:
                pipe.hset(self._k_meta, str(demoted.number), demoted.to_json())
            pipe.hset(self._k_meta, str(version.number), version.to_json())
            if move_pointer:
                pipe.hset(self._k_pointer, "version", version.number)
                pipe.hincrby(self._k_pointer, "generation", 1)
            self._xadd(pipe, event)
            self._notify(pipe, event.kind, version.number)
            pipe.execute()

    def _read_version(self, number: int) -> Version:
        with self._errors(f"reading version {number}"):
            doc = self._client.hget(self._k_meta, str(number))
        if doc is None:
            raise not_found(number)
        return Version.from_json(doc)

    def _read_versions(self) -> list[Version]:
        with self._errors("listing versions"):
            docs = self._client.hvals(self._k_meta)
        return [Version.from_json(d) for d in docs]

    def _read_pointer(self) -> Pointer:
        with self._errors("reading the validated pointer"):
            version, generation = self._client.hmget(self._k_pointer, ["version", "generation"])
        return (None if version is None else int(version)), int(generation or 0)

    def _read_state(self, number: int) -> bytes:
        with self._errors(f"reading weights of version {number}"):
            blob = self._client.get(self._k_state(number))
        if blob is None:
            self._read_version(number)  # VersionNotFoundError for an unknown number
            raise RegistryError(f"version {number} has no weights any more (pruned)")
        return blob

    def _has_state(self, number: int) -> bool:
        with self._errors(f"checking weights of version {number}"):
            return bool(self._client.exists(self._k_state(number)))

    def _drop_states_below(self, number: int, keep: int | None) -> None:
        # Called after every publish, so at most a few keys are due each time;
        # scanning a window below the cutoff is enough and stays O(1).
        doomed = [self._k_state(n) for n in range(max(1, number - 10), number) if n != keep]
        if doomed:
            with self._errors("pruning old weights"):
                self._client.delete(*doomed)

    def _write_live(self, blob: bytes) -> None:
        with self._errors("recording live metrics"):
            self._client.set(self._k_live, blob)

    def _read_live(self) -> bytes | None:
        with self._errors("reading live metrics"):
            return self._client.get(self._k_live)

    def _append_event(self, event: AuditEvent) -> AuditEvent:
        with self._errors(f"recording audit event '{event.kind}'"):
            entry_id = self._client.xadd(
                self._k_audit, {"doc": orjson.dumps(event.to_dict())}, maxlen=_AUDIT_MAXLEN, approximate=True
            )
            self._client.publish(self._channel, orjson.dumps({"kind": event.kind, "version": event.version}))
        return AuditEvent(
            event.kind,
            event.version,
            event.at,
            event.reason,
            event.details,
            id=entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id),
        )

    def _read_events(
        self, kind: str | None, since: float | None, limit: int, until: float | None = None
    ) -> list[AuditEvent]:
        low = "-" if since is None else str(_stream_ms(since))
        out: list[AuditEvent] = []
        # Entry ids are milliseconds of the Redis clock; +1 ms and the exact
        # filter below make the bound inclusive of the writer's `at`.
        high = "+" if until is None else str(min(_stream_ms(until) + 1, _MAX_STREAM_MS))
        # Page backwards through the stream until enough events of `kind` are found.
        while len(out) < limit:
            with self._errors("reading audit events"):
                page = self._client.xrevrange(self._k_audit, max=high, min=low, count=max(100, limit))
            if not page:
                break
            for entry_id, fields in page:
                doc = orjson.loads(fields[b"doc"])
                doc["id"] = entry_id.decode()
                event = AuditEvent.from_dict(doc)
                if (
                    (kind is None or event.kind == kind)
                    and (since is None or event.at >= since)
                    and (until is None or event.at <= until)
                ):
                    out.append(event)
                    if len(out) >= limit:
                        break
            last = page[-1][0].decode()
            high = f"({last}"  # exclusive: continue below the last entry seen
        return out

    def _wait_for_notification(self, timeout: float) -> None:
        with self._errors("waiting for registry notifications"):
            try:
                if self._pubsub is None:
                    self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                    self._pubsub.subscribe(self._channel)
                self._pubsub.get_message(timeout=timeout)
            except BaseException:
                # A broken subscription is rebuilt on the next wait.
                self._drop_pubsub()
                raise

    def _drop_pubsub(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                self._pubsub.close()
            self._pubsub = None

    def ping(self) -> None:
        with self._errors("pinging"):
            self._client.ping()

    def close(self) -> None:
        self._drop_pubsub()
        with contextlib.suppress(Exception):
            self._client.close()
