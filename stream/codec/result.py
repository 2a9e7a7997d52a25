"""What decoding one poll gives: events and dead letters (:class:`DecodeResult`), and the per-record refusal."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stream.core.deadletter import DeadLetter
from stream.core.records import Events

__all__ = ["DecodeResult", "Reject", "merge_results"]


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


def merge_results(first: DecodeResult, second: DecodeResult, second_rows: np.ndarray) -> DecodeResult:
    """One poll's result from two decodings of disjoint rows, in poll order.

    ``first`` is numbered in poll rows; ``second`` decoded only the poll rows
    ``second_rows`` (its row ``i`` is poll row ``second_rows[i]``). Dead letters
    come from ``second`` only, already in poll order.
    """
    if not len(second.events):
        return DecodeResult(first.events, second.dead_letters, first.event_rows(), first.own_ids)
    rows = np.concatenate([first.event_rows(), second_rows[second.event_rows()]])
    order = np.argsort(rows, kind="stable")
    events = Events.concat([first.events, second.events]).take(order)
    if first.own_ids is None and second.own_ids is None:
        own = None
    else:
        own = np.concatenate([_own(first), _own(second)])[order]
    return DecodeResult(events, second.dead_letters, rows[order], own)


def _own(result: DecodeResult) -> np.ndarray:
    return np.ones(len(result.events), dtype=bool) if result.own_ids is None else result.own_ids


class Reject(Exception):
    """One record is unusable; the message is the dead-letter reason (internal to the codec package)."""
