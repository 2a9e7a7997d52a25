"""A member's share of a round: what it hands rank 0 so one checkpoint holds the whole round.

Rank 0 writes each round's checkpoint -- the combined model with every
member's positions, the ids every member learned (``--ledger``) and every
member's counters --
in one atomic file: that file is the round's commit record. Members other
than 0 keep only this round's part of those (:class:`MemberShard`) and send
it at the round boundary; rank 0 adds it to its own (:func:`absorb`). A
member that dies before rank 0 wrote the file leaves nothing half-counted:
every member restores the previous round and redoes the rest.

Examples
--------
>>> add_counters({"events_learned": 5, "dead_letters": {"bad json": 1}}, {"events_learned": 2, "dead_letters": {"bad json": 2}})
{'dead_letters': {'bad json': 3}, 'events_learned': 7}
>>> minus_counters({"events_learned": 7, "squared_error": 1.5}, {"events_learned": 5, "squared_error": 0.5})
{'events_learned': 2, 'squared_error': 1.0}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from stream.core.records import TopicPartition
from stream.engine.dedup import RecentIds
from stream.engine.ledger import LearnLedger

__all__ = ["MemberShard", "RoundRecentIds", "absorb_ledger", "add_counters", "minus_counters"]


@dataclass(frozen=True)
class MemberShard:
    """What a member other than rank 0 learned and read in one round (plain data)."""

    positions: Mapping[TopicPartition, int]  # next offset to read, per partition it owns
    counters: dict  # this round's counters (RunStats.counters() less the last round's)
    dead_letters: dict  # this round's dead letters by reason
    ledger: dict | None = None  # LearnLedger.snapshot() of this round's learned ids


def add_counters(a: Mapping, b: Mapping) -> dict:
    """``a + b`` for counter dicts (numbers, and dicts of numbers by name)."""
    return _combine(a, b, 1)


def minus_counters(a: Mapping, b: Mapping) -> dict:
    """``a - b`` for counter dicts: what was counted since ``b`` was taken."""
    return _combine(a, b, -1)


def _combine(a: Mapping, b: Mapping, sign: int) -> dict:
    out: dict = {}
    for key in {*a, *b}:
        x, y = a.get(key), b.get(key)
        if isinstance(x, Mapping) or isinstance(y, Mapping):
            out[key] = {k: v for k, v in _combine(x or {}, y or {}, sign).items() if v}
        else:
            out[key] = (x or 0) + sign * (y or 0)
    return dict(sorted(out.items()))


def absorb_ledger(ledger: LearnLedger, snapshot: dict | None) -> None:
    """Add another member's round ledger to ``ledger`` (ids learned twice stay counted twice)."""
    if not snapshot or not len(snapshot["ids"]):
        return
    ids = np.asarray(snapshot["ids"], dtype=object)
    ledger.record(np.repeat(ids, np.asarray(snapshot["counts"], dtype=np.int64)))


class RoundRecentIds(RecentIds):
    """A duplicate-id window that also keeps the hashes it admitted since :meth:`take_round` was last called."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        super().__init__(capacity)
        self._round: list[np.ndarray] = []

    @classmethod
    def of(cls, recent: RecentIds) -> RoundRecentIds:
        """``recent``'s memory, now also kept per round."""
        out = cls.from_snapshot(recent.snapshot())
        out._round = []
        return out

    def admit_hashes(self, hashes: np.ndarray) -> np.ndarray:
        fresh = super().admit_hashes(hashes)
        self._round.append(hashes[fresh])
        return fresh

    def take_round(self) -> np.ndarray:
        """The hashes admitted since the last call; forgets them (they are rank 0's to keep now)."""
        out = np.concatenate(self._round) if self._round else np.empty(0, np.uint64)
        self._round = []
        return out
