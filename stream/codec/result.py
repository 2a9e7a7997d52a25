"""What decoding one poll gives: events and dead letters (:class:`DecodeResult`), and the per-record refusal."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stream.core.deadletter import DeadLetter
from stream.core.records import Events

__all__ = ["DecodeResult", "Reject"]


@dataclass(slots=True)
class DecodeResult:
    """Decoded events (in poll order) and the records that were dead-lettered.

    ``rows[i]`` is the poll row event ``i`` came from (so a later stage can
    dead-letter its original record). ``own_ids[i]`` says whether the record
    carried its own id; ``None`` means every one did. Events without one get
    ``topic:partition:offset``, which is unique by construction.
    """

    events: Events
    dead_letters: list[DeadLetter] = field(default_factory=list)
    rows: np.ndarray | None = None
    own_ids: np.ndarray | None = None

    def event_rows(self) -> np.ndarray:
        """``rows``, or ``0..n-1`` when every poll row became an event."""
        return self.rows if self.rows is not None else np.arange(len(self.events))


class Reject(Exception):
    """One record is unusable; the message is the dead-letter reason (internal to the codec package)."""
