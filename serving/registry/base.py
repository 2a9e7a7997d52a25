"""The model registry: where versions are published, validated, promoted and rolled back.

:class:`ModelRegistry` is the seam (a Protocol) with two implementations that
pass the same test suite: :class:`~serving.registry.redis_backend.RedisRegistry` for
deployments and :class:`~serving.registry.file_backend.FileRegistry`, a local
directory, as the embedded default. :func:`serving.registry.factory.open_registry`
picks one from a URL.

The lifecycle of a version::

    publish -> candidate --validate--> validated (the pointer moves to it)
                         --reject----> rejected
    promote (admin): any version with weights -> validated, pointer moves to it
    rollback: pointer moves back to an older validated version; the one it
              leaves becomes rolled_back

"Current" is whatever the *validated pointer* names; the pointer carries a
generation that grows with every move, so a watcher can tell a new decision
from a repeated one (a rollback moves the pointer back but its generation
forward). Every transition appends an :class:`~serving.registry.versions.AuditEvent`
and notifies subscribers.

Weights are stored as the bytes of :func:`learners.state_io.dumps_state`
(safetensors + a JSON skeleton); nothing read back is ever unpickled.

Examples
--------
>>> import tempfile, torch
>>> from serving.registry.factory import open_registry
>>> from serving.registry.versions import Version
>>> reg = open_registry(tempfile.mkdtemp())
>>> v = reg.publish({"w": torch.ones(2)}, Version(number=0, metrics={"holdout_accuracy": 0.9}))
>>> reg.current() is None, v.status
(True, 'candidate')
>>> reg.validate(v.number, reason="first version").status
'validated'
>>> reg.current().number == v.number, reg.load_state(v.number)["w"]
(True, tensor([1., 1.]))
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import replace
from typing import Any, Iterator, Mapping, Protocol, runtime_checkable

import orjson

from learners.state_io import dumps_state, loads_state
from serving.registry.versions import AuditEvent, Version
from stream.core.errors import CheckpointError, ConfigError, RegistryError, VersionNotFoundError

__all__ = ["ModelRegistry", "RegistryBase", "Pointer"]

Pointer = tuple[int | None, int]
"""``(validated version number or None, generation)``."""


@runtime_checkable
class ModelRegistry(Protocol):
    """What the daemon and the API need from a model registry."""

    def publish(self, state: Mapping[str, Any] | bytes, draft: Version) -> Version:
        """Store a new candidate (weights + metadata); the registry assigns its number."""

    def validate(self, number: int, reason: str = "", metrics: Mapping[str, float] | None = None) -> Version:
        """Mark a candidate validated and move the validated pointer to it."""

    def reject(self, number: int, reason: str = "", metrics: Mapping[str, float] | None = None) -> Version:
        """Mark a candidate rejected (the pointer stays)."""

    def promote(self, number: int, reason: str = "") -> Version:
        """Admin override: serve this version (it becomes validated)."""

    def rollback(
        self, to: int | None = None, reason: str = "", details: Mapping[str, Any] | None = None
    ) -> Version:
        """Move the pointer back to ``to`` (default: the previous validated version).

        ``details`` (plain data: the drift policy's evidence) joins the audit event.
        """

    def current(self) -> Version | None:
        """The version the validated pointer names, or ``None``."""

    def pointer(self) -> Pointer:
        """The validated pointer and its generation (a cheap read)."""

    def get(self, number: int) -> Version:
        """One version's metadata."""

    def history(self, limit: int | None = None) -> list[Version]:
        """Versions, newest first."""

    def load_state(self, number: int, device: str | None = None) -> dict:
        """The learner state published with a version."""

    def record_event(self, event: AuditEvent) -> AuditEvent:
        """Append an audit event (the drift policy's decisions go here too)."""

    def events(
        self,
        kind: str | None = None,
        since: float | None = None,
        limit: int = 100,
        until: float | None = None,
    ) -> list[AuditEvent]:
        """Audit events, newest first, optionally of one kind and within ``[since, until]`` (epoch s)."""

    def subscribe(self, poll_interval: float = 1.0, stop: threading.Event | None = None) -> Iterator[Pointer]:
        """Yield the pointer each time it moves (first: its value now)."""

    def record_live(self, live: Mapping[str, Any]) -> None:
        """Replace the live-metrics document (per version, from joined labels; see :mod:`stream.engine.live`)."""
        ...

    def live(self) -> dict[str, Any]:
        """The live-metrics document last recorded (``{}`` before any)."""
        ...

    def ping(self) -> None:
        """Raise :class:`~stream.core.errors.RegistryUnavailableError` if the registry cannot be reached."""

    def close(self) -> None:
        """Release connections."""


class RegistryBase:
    """The version lifecycle, written once over a few storage primitives.

    A backend implements the primitives (``_next_number``, ``_store_new``,
    ``_transition``, ``_read_version``, ``_read_versions``, ``_read_pointer``,
    ``_read_state``, ``_has_state``, ``_append_event``, ``_read_events``,
    ``_write_live``, ``_read_live``,
    ``_wait_for_notification``); each mutating primitive is atomic in its
    backend (a Redis MULTI, or writes under a file lock).
    """

    #: Weights of versions older than the newest ``keep_states`` are dropped
    #: (metadata stays), except the current one; so a registry fed every few
    #: seconds for months stays small.
    keep_states: int = 100

    # ------------------------------------------------------------ writing
    def publish(self, state: Mapping[str, Any] | bytes, draft: Version) -> Version:
        blob = state if isinstance(state, (bytes, bytearray)) else dumps_state(state)
        number = self._next_number()
        version = replace(draft, number=number, status="candidate", created_at=time.time())
        event = AuditEvent(
            "publish",
            number,
            reason=draft.note,
            details={
                "parent": draft.parent,
                "metrics": dict(draft.metrics),
                "offsets": {k: list(v) for k, v in draft.offsets.items()},
            },
        )
        self._store_new(version, bytes(blob), event)
        self._prune_states(number)
        return version

    def validate(self, number: int, reason: str = "", metrics: Mapping[str, float] | None = None) -> Version:
        version = self._require_state(number)
        return self._move(version, "validate", reason, metrics)

    def reject(self, number: int, reason: str = "", metrics: Mapping[str, float] | None = None) -> Version:
        version = self.get(number)
        updated = replace(
            version.with_status("rejected", reason), metrics={**version.metrics, **(metrics or {})}
        )
        self._transition(
            updated,
            move_pointer=False,
            demoted=None,
            event=AuditEvent("reject", number, reason=reason, details={"metrics": dict(updated.metrics)}),
        )
        return updated

    def promote(self, number: int, reason: str = "") -> Version:
        version = self._require_state(number)
        return self._move(version, "promote", reason or "promoted by an operator", None)

    def rollback(
        self, to: int | None = None, reason: str = "", details: Mapping[str, Any] | None = None
    ) -> Version:
        here, _ = self._read_pointer()
        if to is None:
            target = self._previous_validated(here)
        else:
            target = self._require_state(to)
        if here == target.number:
            raise RegistryError(
                f"version {target.number} is already the current version; nothing to roll back"
            )
        demoted = None
        if here is not None:
            demoted = self.get(here).with_status("rolled_back", reason)
        updated = target.with_status("validated")
        self._transition(
            updated,
            move_pointer=True,
            demoted=demoted,
            event=AuditEvent(
                "rollback",
                target.number,
                reason=reason,
                details={**(details or {}), "from": here, "to": target.number},
            ),
        )
        return updated

    def record_event(self, event: AuditEvent) -> AuditEvent:
        return self._append_event(event)

    def record_live(self, live: Mapping[str, Any]) -> None:
        # One small document overwritten whole: the daemon's cumulative figures, as of its last checkpoint.
        self._write_live(orjson.dumps(dict(live), option=orjson.OPT_NON_STR_KEYS))

    def live(self) -> dict[str, Any]:
        blob = self._read_live()
        if not blob:
            return {}
        try:
            doc = orjson.loads(blob)
        except orjson.JSONDecodeError as exc:
            raise RegistryError(f"the live-metrics document is unreadable: {exc}") from exc
        return doc if isinstance(doc, dict) else {}

    # ------------------------------------------------------------ reading
    def current(self) -> Version | None:
        number, _ = self._read_pointer()
        return None if number is None else self._read_version(number)

    def pointer(self) -> Pointer:
        return self._read_pointer()

    def get(self, number: int) -> Version:
        return self._read_version(int(number))

    def history(self, limit: int | None = None) -> list[Version]:
        versions = sorted(self._read_versions(), key=lambda v: v.number, reverse=True)
        return versions if limit is None else versions[:limit]

    def load_state(self, number: int, device: str | None = None) -> dict:
        blob = self._read_state(int(number))
        try:
            return loads_state(blob, device=device)
        except CheckpointError as exc:
            raise RegistryError(f"weights of version {number} are unreadable: {exc}") from exc

    def load_state_bytes(self, number: int) -> bytes:
        return self._read_state(int(number))

    def events(
        self,
        kind: str | None = None,
        since: float | None = None,
        limit: int = 100,
        until: float | None = None,
    ) -> list[AuditEvent]:
        """Audit events, newest first, within ``[since, until]``; any non-NaN bound, even ±inf, is a plain comparison.

        Raises
        ------
        ConfigError
            ``since`` or ``until`` is NaN (it would compare false against every event).
        """
        for name, bound in (("since", since), ("until", until)):
            if bound is not None and math.isnan(bound):
                raise ConfigError(f"{name} is NaN; give epoch seconds as a number")
        return self._read_events(kind, since, max(0, int(limit)), until)

    def subscribe(self, poll_interval: float = 1.0, stop: threading.Event | None = None) -> Iterator[Pointer]:
        """Yield the pointer now, then each time its generation changes.

        Wakes on the backend's notifications and, as a fallback for missed
        ones, every ``poll_interval`` seconds. Raises
        :class:`~stream.core.errors.RegistryUnavailableError` when the backend goes
        away; the caller reconnects (see :mod:`serving.api.hot_swap`).
        """
        last = self._read_pointer()
        yield last
        while stop is None or not stop.is_set():
            self._wait_for_notification(poll_interval)
            now = self._read_pointer()
            if now[1] != last[1]:
                last = now
                yield now

    # ------------------------------------------------------------ helpers
    def _move(self, version: Version, kind: str, reason: str, metrics: Mapping[str, float] | None) -> Version:
        updated = version.with_status("validated", reason)
        if metrics:
            updated = replace(updated, metrics={**updated.metrics, **metrics})
        self._transition(
            updated,
            move_pointer=True,
            demoted=None,
            event=AuditEvent(kind, version.number, reason=reason, details={"metrics": dict(updated.metrics)}),
        )
        return updated

    def _require_state(self, number: int) -> Version:
        version = self.get(number)
        if not self._has_state(version.number):
            raise RegistryError(
                f"version {number} has no weights any more (only the newest {self.keep_states} "
                f"keep them); choose a newer version"
            )
        return version

    def _previous_validated(self, here: int | None) -> Version:
        for version in self.history():
            if (
                (here is None or version.number < here)
                and version.status == "validated"
                and self._has_state(version.number)
            ):
                return version
        where = f"before version {here}" if here is not None else "at all"
        raise RegistryError(f"no validated version {where} to roll back to; name one with --to / 'to'")

    def _prune_states(self, newest: int) -> None:
        current, _ = self._read_pointer()
        cutoff = newest - self.keep_states
        if cutoff < 1:
            return
        self._drop_states_below(cutoff + 1, keep=current)

    # ---------------------------------------------------------- primitives
    def _next_number(self) -> int:
        raise NotImplementedError

    def _store_new(self, version: Version, blob: bytes, event: AuditEvent) -> None:
        raise NotImplementedError

    def _transition(
        self, version: Version, *, move_pointer: bool, demoted: Version | None, event: AuditEvent
    ) -> None:
        raise NotImplementedError

    def _read_version(self, number: int) -> Version:
        raise NotImplementedError

    def _read_versions(self) -> list[Version]:
        raise NotImplementedError

    def _read_pointer(self) -> Pointer:
        raise NotImplementedError

    def _read_state(self, number: int) -> bytes:
        raise NotImplementedError

    def _has_state(self, number: int) -> bool:
        raise NotImplementedError

    def _drop_states_below(self, number: int, keep: int | None) -> None:
        raise NotImplementedError

    def _append_event(self, event: AuditEvent) -> AuditEvent:
        raise NotImplementedError

    def _write_live(self, blob: bytes) -> None:
        raise NotImplementedError

    def _read_live(self) -> bytes | None:
        raise NotImplementedError

    def _read_events(
        self, kind: str | None, since: float | None, limit: int, until: float | None = None
    ) -> list[AuditEvent]:
        raise NotImplementedError

    def _wait_for_notification(self, timeout: float) -> None:
        raise NotImplementedError


def not_found(number: int) -> VersionNotFoundError:
    return VersionNotFoundError(f"no model version {number} in the registry; `GET /models` lists them")
