"""Rank 0's gate, judging each round's model on every member's unseen events.

A single daemon's gate judges the model on the batch it is about to learn.
Across members the model of round ``r`` is the same everywhere, and what none
of them has learned yet is each member's *first* batch after that round; the
gate gets them all at round ``r + 1``. So every member keeps a sample of its
first batch after a round (:func:`holdout_of`), rank 0 keeps the round's
model (:meth:`RoundGate.remember`), and at the next round rank 0 judges that
model on the members' samples together (:meth:`RoundGate.judge`): the
holdout accuracy is the members' correct answers summed over their events
summed, not one member's. The version reaches the registry one round later
than a single daemon's would.

Examples
--------
>>> import numpy as np
>>> from stream.testing.doubles import make_batch
>>> len(holdout_of(make_batch(50, n_features=3), cap=20)), holdout_of(None, cap=20) is None
(20, True)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from stream.core.records import Events, MicroBatch

__all__ = ["HOLDOUT_CAP", "RoundGate", "holdout_of"]

#: Most events of one member's holdout sent to rank 0 per round (its first batch after a round).
HOLDOUT_CAP = 4096


def holdout_of(batch: MicroBatch | None, cap: int = HOLDOUT_CAP) -> Events | None:
    """The part of a member's first batch after a round that goes to rank 0's gate."""
    if batch is None or not len(batch):
        return None
    return batch.events.take(slice(0, cap))


class RoundGate:
    """The gate's side of a round on rank 0: the last round's model, judged on every member's holdout."""

    def __init__(self, gate) -> None:
        self.gate = gate
        self._candidate: tuple[dict, dict] | None = None  # (learner state, schema) of the last round's model
        self._judging = False
        gate.only_when = lambda: self._judging  # never on a batch of rank 0's own: only here

    def remember(self, learner_state: dict, schema: dict) -> None:
        """The model every member starts the next round from (a snapshot: the learner goes on learning)."""
        self._candidate = (learner_state, schema)

    @property
    def empty(self) -> bool:
        """No model remembered yet."""
        return self._candidate is None

    def count(self, batches: int) -> None:
        """Batches the other members learned count toward the gate's cadence as rank 0's own do."""
        self.gate.count_elsewhere(batches)

    def judge(self, holdouts: Sequence[Events | None], build: Callable[[dict, dict], Any]) -> bool:
        """Publish and gate the remembered model on the members' holdouts when due; whether it was validated."""
        parts = [h for h in holdouts if h is not None and len(h)]
        if self._candidate is None or not parts:
            return False
        state, schema = self._candidate
        if any(p.n_features != parts[0].n_features for p in parts):
            return False  # a schema change mid-round: the next round's holdouts agree again
        self._judging = True
        try:
            if not self.gate.due():
                return False
            learner = build(state, schema)
            version = self.gate.before_learn(learner, MicroBatch(Events.concat(parts), seq=-1), None, schema)
        finally:
            self._judging = False
        return version is not None and version.status == "validated"
