"""What a drift detector is: :class:`Signal`, and the :class:`ErrorDetector` / :class:`FeatureDetector` protocols.

A detector is fed one micro-batch at a time and answers with a
:class:`Signal` (``none``, ``warning`` or ``drift``, with plain-data
evidence). It can ``reset()`` (after a decision: the next alarm is about the
next change) and round-trip its state through ``snapshot()``/``restore()``
(plain data, part of the engine's checkpoint). Two kinds differ only in what
they are fed:

- an :class:`ErrorDetector` gets the live model's per-event errors
  (:func:`drift.evidence.batch_errors`: 0/1 or absolute errors);
- a :class:`FeatureDetector` gets the batch's feature matrix.

:class:`~drift.detectors.DriftMonitor` takes any number of the first and at
most one of the second, and the policy (:mod:`drift.policy`) only ever talks
to the monitor. The shipped implementations are in :mod:`drift.detectors`;
:class:`drift.testing.ScriptedDetector` is the test double.

>>> stronger(Signal("warning", "adwin"), Signal("drift", "kswin")).detector
'kswin'
>>> stronger(None, Signal("none", "ddm")).level
'none'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Protocol, runtime_checkable

import numpy as np

__all__ = ["ErrorDetector", "FeatureDetector", "Level", "Signal", "stronger"]

Level = Literal["none", "warning", "drift"]
_RANK = {"none": 0, "warning": 1, "drift": 2}


@dataclass(frozen=True)
class Signal:
    """What one detector concluded from one batch, with its evidence (plain JSON data)."""

    level: Level
    detector: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_drift(self) -> bool:
        return self.level == "drift"


def stronger(a: Signal | None, b: Signal) -> Signal:
    """The signal with the higher level (``a`` on ties; ``a`` may be ``None``)."""
    return b if a is None or _RANK[b.level] > _RANK[a.level] else a


@runtime_checkable
class ErrorDetector(Protocol):
    """Watches the live model's per-event errors for a lasting rise."""

    #: Names the detector in signals and checkpoints (a changed list of names starts detectors fresh).
    name: str

    def update(self, errors: np.ndarray) -> Signal:
        """Feed one batch's per-event errors; an empty batch is ``none``."""
        ...

    def reset(self) -> None:
        """Forget everything seen so far."""
        ...

    def snapshot(self) -> dict:
        """Plain-data state for the checkpoint."""
        ...

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from what :meth:`snapshot` returned."""
        ...


@runtime_checkable
class FeatureDetector(Protocol):
    """Watches the input features for a shift away from a reference."""

    name: str

    def update(self, X: np.ndarray) -> Signal:
        """Feed one batch's features, shape (n, n_features)."""
        ...

    def reset(self) -> None: ...

    def snapshot(self) -> dict: ...

    def restore(self, state: Mapping[str, Any]) -> None: ...
