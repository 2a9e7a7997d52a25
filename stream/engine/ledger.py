"""An audit ledger of which event ids a model has learned, and how often.

It is part of the checkpoint, so it rolls back together with the model: after
a crash and restart it states exactly what the restored model has learned.
That makes it the evidence for exactly-once learning (``count == 1`` for every
id). It costs memory per distinct id, so it is off unless asked for
(``streamlearn run --ledger``).

Examples
--------
>>> import numpy as np
>>> ledger = LearnLedger()
>>> ledger.record(np.array(["a", "b"])); ledger.record(np.array(["b"]))
>>> ledger.total, ledger.distinct, ledger.duplicated()
(3, 2, {'b': 2})
>>> LearnLedger.from_snapshot(ledger.snapshot()).duplicated()
{'b': 2}
"""

from __future__ import annotations

from collections import Counter

import numpy as np


class LearnLedger:
    """Counts learned events per id."""

    def __init__(self, counts: dict[str, int] | None = None) -> None:
        self._counts: Counter[str] = Counter(counts or {})

    def record(self, ids: np.ndarray) -> None:
        self._counts.update(ids.tolist())

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    @property
    def distinct(self) -> int:
        return len(self._counts)

    def count(self, event_id: str) -> int:
        return self._counts.get(event_id, 0)

    def ids(self) -> set[str]:
        return set(self._counts)

    def duplicated(self) -> dict[str, int]:
        """Ids learned more than once, with their counts (empty when exactly-once held)."""
        return {k: v for k, v in self._counts.items() if v > 1}

    def snapshot(self) -> dict:
        return {
            "ids": list(self._counts),
            "counts": np.fromiter(self._counts.values(), np.int64, len(self._counts)),
        }

    @classmethod
    def from_snapshot(cls, snap: dict) -> LearnLedger:
        return cls(dict(zip(snap["ids"], np.asarray(snap["counts"]).tolist())))
