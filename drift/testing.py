"""A test double for the drift policy: a detector that fires when told to.

>>> det = ScriptedDetector(fire_at=[2])
>>> [det.update(None).level for _ in range(3)]
['none', 'drift', 'none']
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from drift.base import ErrorDetector, Signal  # noqa: F401 -- ErrorDetector: the docstring example

__all__ = ["ScriptedDetector"]


class ScriptedDetector:
    """Raises a drift signal on the chosen update numbers (1-based); otherwise ``none``.

    It is an :class:`~drift.base.ErrorDetector`, so a
    :class:`~drift.detectors.DriftMonitor` takes it like any other.

    >>> isinstance(ScriptedDetector(), ErrorDetector)
    True
    """

    name = "scripted"

    def __init__(self, fire_at: Iterable[int] = ()) -> None:
        self.fire_at = set(fire_at)
        self.seen = 0
        self.resets = 0

    def update(self, errors: Any) -> Signal:
        self.seen += 1
        return Signal("drift" if self.seen in self.fire_at else "none", self.name, {"update": self.seen})

    def reset(self) -> None:
        self.resets += 1

    def snapshot(self) -> dict:
        return {"seen": self.seen}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.seen = int(state["seen"])
