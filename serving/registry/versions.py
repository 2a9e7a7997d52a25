"""What the registry knows about a model version, and its audit events.

A :class:`Version` is plain, immutable data: its number, parent, status, the
offsets it learned, its validation metrics and the schema a client must send.
It round-trips through JSON (``to_json``/``from_json``) so both registries
store exactly the same document, and nothing is ever unpickled.

Examples
--------
>>> v = Version(number=3, parent=2, status="validated", created_at=1.0,
...             offsets={"clicks:0": (0, 999)}, metrics={"holdout_accuracy": 0.91})
>>> Version.from_json(v.to_json()) == v
True
>>> v.with_status("rolled_back").status
'rolled_back'
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Mapping

import numpy as np
import orjson

from stream.core.errors import RegistryError

Status = Literal["candidate", "validated", "rejected", "rolled_back"]
STATUSES: tuple[str, ...] = ("candidate", "validated", "rejected", "rolled_back")

# Audit event kinds written by the registry itself; the drift policy adds its own.
EVENT_KINDS: tuple[str, ...] = ("publish", "validate", "reject", "promote", "rollback")


def _freeze_offsets(offsets: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    return {str(k): (int(v[0]), int(v[1])) for k, v in offsets.items()}


@dataclass(frozen=True)
class Version:
    """One published model version.

    ``offsets`` maps ``"topic:partition"`` to the lowest and highest offset the
    version's learner has learned (inclusive). ``holdout`` is the same for the
    window it was validated on -- data it had not learned. ``schema`` is what
    a prediction needs: ``n_features``, ``task``, ``n_classes``, optional
    ``feature_names`` and ``classes``.
    """

    number: int
    parent: int | None = None
    status: Status = "candidate"
    created_at: float = field(default_factory=time.time)
    offsets: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    holdout: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    events_learned: int = 0
    schema: Mapping[str, Any] = field(default_factory=dict)
    learner: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise RegistryError(f"unknown version status {self.status!r}; expected one of {STATUSES}")
        object.__setattr__(self, "offsets", _freeze_offsets(self.offsets))
        object.__setattr__(self, "holdout", _freeze_offsets(self.holdout))
        object.__setattr__(self, "metrics", {str(k): float(v) for k, v in self.metrics.items()})

    def with_status(self, status: Status, note: str | None = None) -> Version:
        return replace(self, status=status, note=self.note if note is None else note)

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "parent": self.parent,
            "status": self.status,
            "created_at": self.created_at,
            "offsets": {k: list(v) for k, v in self.offsets.items()},
            "holdout": {k: list(v) for k, v in self.holdout.items()},
            "metrics": dict(self.metrics),
            "events_learned": self.events_learned,
            "schema": dict(self.schema),
            "learner": self.learner,
            "note": self.note,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Version:
        try:
            return cls(
                number=int(doc["number"]),
                parent=None if doc.get("parent") is None else int(doc["parent"]),
                status=doc.get("status", "candidate"),
                created_at=float(doc["created_at"]),
                offsets=doc.get("offsets") or {},
                holdout=doc.get("holdout") or {},
                metrics=doc.get("metrics") or {},
                events_learned=int(doc.get("events_learned", 0)),
                schema=doc.get("schema") or {},
                learner=str(doc.get("learner", "")),
                note=str(doc.get("note", "")),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise RegistryError(f"malformed version document: {exc}") from exc

    @classmethod
    def from_json(cls, data: bytes | str) -> Version:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise RegistryError(f"version document is not JSON: {exc}") from exc
        return cls.from_dict(doc)


def json_plain(value: Any) -> Any:
    """Numpy scalars, tuples and NaN to JSON-friendly Python.

    >>> json_plain({"a": (np.int64(1), float("nan")), 2: np.float32(0.5)})
    {'a': [1, None], '2': 0.5}
    """
    if isinstance(value, Mapping):
        return {str(k): json_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


@dataclass(frozen=True)
class AuditEvent:
    """One entry of the registry's audit trail (publish, validate, rollback, drift decisions...).

    ``details`` is plain JSON data: metrics, offsets, the evidence for a decision
    (numpy scalars and tuples given here are converted, see :func:`json_plain`).
    """

    kind: str
    version: int | None
    at: float = field(default_factory=time.time)
    reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    id: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "details", json_plain(self.details))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "version": self.version,
            "at": self.at,
            "reason": self.reason,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> AuditEvent:
        return cls(
            kind=str(doc["kind"]),
            version=None if doc.get("version") is None else int(doc["version"]),
            at=float(doc["at"]),
            reason=str(doc.get("reason", "")),
            details=dict(doc.get("details") or {}),
            id=str(doc.get("id", "")),
        )
