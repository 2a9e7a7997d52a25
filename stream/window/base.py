"""What every window kind shares: the :class:`Windower` contract, its :class:`WindowOutput`,
and the residue, snapshot and numbering helpers the runtimes build on.

A window kind is a frozen config whose ``build(resume_state=None)`` returns its
runtime windower (bytewax's ``Windower.build`` shape); the kinds live in
:mod:`stream.window.count`, :mod:`stream.window.processing_time` and
:mod:`stream.window.event_time`, and :mod:`stream.window.spec` parses the CLI's
window specs into them.

Every windower implements :class:`Windower`: ``add`` / ``tick`` return a
:class:`WindowOutput` (the batches that closed, and for event time the late
events, which the engine routes: count, drop or dead-letter); ``flush`` emits
everything pending at the end of a bounded replay or on shutdown (never on a
normal checkpoint); ``pending`` is the residue that a checkpoint must hold;
``snapshot`` returns plain data (numpy arrays, ints, strings, lists, ``None``)
that ``build(resume_state=...)`` turns back into an equivalent windower.

All work is on whole numpy arrays; Python loops run per batch or per chunk,
never per event. Emitted batches may share memory with the ``Events`` that were
added (slices, not copies): treat both as read-only.

Examples
--------
>>> import numpy as np
>>> from stream.core.records import Events
>>> from stream.window.spec import parse_window
>>> def events(ts):
...     n = len(ts)
...     return Events(X=np.zeros((n, 1), np.float32), y=np.zeros(n, np.int64),
...                   ts=np.array(ts, np.int64), ids=np.array([str(t) for t in ts]),
...                   topic=np.array(["t"] * n), partition=np.zeros(n, np.int32),
...                   offset=np.arange(n, dtype=np.int64))
>>> windower = parse_window("event:10ms").build()
>>> isinstance(windower, Windower)
True
>>> out = windower.add(events([1, 5, 12]))   # the watermark moves to 12: [0, 10) closes
>>> [(b.window_start, b.window_end, b.events.ids.tolist()) for b in out.batches]
[(0, 10, ['1', '5'])]
>>> out = windower.add(events([3, 15]))      # 3 belongs to a closed window
>>> out.late.ids.tolist(), windower.late_count
(['3'], 1)
>>> [(b.window_start, b.events.ids.tolist()) for b in windower.flush()]
[(10, ['12', '15'])]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Protocol, runtime_checkable

import numpy as np

from stream.core.errors import CheckpointError, ConfigError, SchemaMismatchError
from stream.core.records import Events, MicroBatch

__all__ = [
    "WindowOutput",
    "Windower",
    "BaseWindower",
    "Residue",
    "positive_int",
    "check_clock",
    "read_resume",
    "residue_to_plain",
    "SNAPSHOT_FORMAT",
]

# Version of the snapshot layout; bump when a key changes meaning.
SNAPSHOT_FORMAT = 1


# ----------------------------------------------------------------- contract
@dataclass(frozen=True, slots=True)
class WindowOutput:
    """What one ``add`` or ``tick`` produced.

    Attributes
    ----------
    batches : list of MicroBatch
        Windows that closed, in window (and ``seq``) order; often empty.
    late : Events or None
        Events that arrived after their window closed (event-time windows
        only), in arrival order; they are in no batch. The engine decides their
        fate (count and drop, or dead-letter).
    """

    batches: list[MicroBatch]
    late: Events | None = None


@runtime_checkable
class Windower(Protocol):
    """The runtime side of a window: events in, micro-batches out."""

    @property
    def late_count(self) -> int:
        """Events reported late over the windower's life (survives restore)."""
        ...

    @property
    def batches_emitted(self) -> int:
        """Batches emitted over the windower's life; also the next batch's ``seq``."""
        ...

    def add(self, events: Events) -> WindowOutput:
        """Accept events (in arrival order) and return the windows they closed."""
        ...

    def tick(self, now_ms: int | None = None) -> WindowOutput:
        """Close windows due at processing time ``now_ms`` (default: the clock's now)."""
        ...

    def flush(self) -> list[MicroBatch]:
        """Emit everything pending (end of a bounded replay, shutdown); nothing stays pending."""
        ...

    def pending(self) -> Events | None:
        """Events accepted but not yet emitted, in arrival order; ``None`` if none."""
        ...

    def snapshot(self) -> dict:
        """Plain data that ``build(resume_state=...)`` restores to an equivalent windower."""
        ...


# ------------------------------------------------- config checks
def positive_int(owner: str, name: str, value: Any, *, minimum: int = 1) -> int:
    # bool is an int subclass; `True` as a window size is a bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{owner}.{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{owner}.{name} must be >= {minimum}, got {value}")
    return int(value)


def check_clock(owner: str, clock: Any) -> None:
    if not callable(getattr(clock, "now_ms", None)):
        raise ConfigError(
            f"{owner}.clock must have a now_ms() method (e.g. stream.core.clock.SystemClock()), got {clock!r}"
        )


# ------------------------------------------------------------------ runtime
class Residue:
    """Accepted, not yet emitted events as a list of chunks.

    Appending is O(1); the chunks are concatenated once, when the residue is
    read. Re-concatenating a growing residue on every ``add`` would be
    quadratic in the window size.
    """

    __slots__ = ("_chunks", "n")

    def __init__(self) -> None:
        self._chunks: list[Events] = []
        self.n = 0

    def append(self, events: Events) -> None:
        self._chunks.append(events)
        self.n += len(events)

    def events(self) -> Events | None:
        if not self._chunks:
            return None
        if len(self._chunks) > 1:
            self._chunks = [Events.concat(self._chunks)]
        return self._chunks[0]

    def pop(self) -> Events | None:
        merged = self.events()
        self._chunks = []
        self.n = 0
        return merged

    def chunks_with(self, events: Events) -> list[Events]:
        """The chunks followed by ``events``, and the residue emptied (for one concat)."""
        parts = self._chunks + [events]
        self._chunks = []
        self.n = 0
        return parts


def residue_to_plain(events: Events | None) -> dict | None:
    if events is None:
        return None
    # Copies: the snapshot must not share memory with arrays that the caller
    # who added them might still hold and reuse.
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in events.to_plain().items()}


def read_resume(state: Mapping[str, Any], kind: str, keys: tuple[str, ...]) -> Mapping[str, Any]:
    """Validate a resume state's shape; raises CheckpointError / ConfigError."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"window resume state must be a dict, got {type(state).__name__}")
    if state.get("format") != SNAPSHOT_FORMAT:
        raise CheckpointError(
            f"window resume state has format {state.get('format')!r}, this version reads {SNAPSHOT_FORMAT}; "
            "the checkpoint was written by an incompatible streamlearn"
        )
    if state.get("kind") != kind:
        raise ConfigError(
            f"the checkpoint holds a {state.get('kind')!r} window but a {kind!r} window is configured; "
            "configure the same window kind, or start from a fresh checkpoint"
        )
    missing = [k for k in ("seq", "late_count", "pending", *keys) if k not in state]
    if missing:
        raise CheckpointError(f"window resume state lacks {', '.join(missing)}; the checkpoint is damaged")
    return state


class BaseWindower:
    """Counters, residue and batch numbering shared by all windowers."""

    _kind: ClassVar[str]

    def __init__(self) -> None:
        self._residue = Residue()
        self._seq = 0
        self._late_count = 0
        self._n_features: int | None = None

    # -- counters
    @property
    def late_count(self) -> int:
        return self._late_count

    @property
    def batches_emitted(self) -> int:
        return self._seq

    def pending(self) -> Events | None:
        return self._residue.events()

    # -- helpers
    def _check_schema(self, events: Events) -> None:
        d = events.X.shape[1] if events.X.ndim == 2 else -1
        if self._n_features is None:
            self._n_features = d
        elif d != self._n_features:
            raise SchemaMismatchError(
                f"events with {d} features added to a window holding {self._n_features}-feature events; "
                "the codec's feature dimension must not change while a window is open"
            )

    def _emit(self, events: Events, start: int | None = None, end: int | None = None) -> MicroBatch:
        # INVARIANT: seq numbers emitted batches 0, 1, 2, ... without gaps, and
        # continues across snapshot/restore (it is part of the snapshot).
        batch = MicroBatch(events=events, seq=self._seq, window_start=start, window_end=end)
        self._seq += 1
        return batch

    def _base_snapshot(self) -> dict:
        return {
            "format": SNAPSHOT_FORMAT,
            "kind": self._kind,
            "seq": self._seq,
            "late_count": self._late_count,
            "pending": residue_to_plain(self._residue.events()),
        }

    def _base_restore(self, state: Mapping[str, Any]) -> Events | None:
        self._seq = int(state["seq"])
        self._late_count = int(state["late_count"])
        if state["pending"] is None:
            return None
        residue = Events.from_plain(state["pending"])
        if len(residue) == 0:
            return None
        self._check_schema(residue)
        self._residue.append(residue)
        return residue
