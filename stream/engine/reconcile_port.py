"""The engine's side of reconciliation: what it calls on a reconciler, what a reconciler may see of it.

The engine knows a reconciler only as a :class:`Reconciler` (called at batch
boundaries and before each batch is learned) and receives an :class:`Adoption`
when a caught-up retrain should replace the live learner. The reconciler sees
the engine only as an :class:`EngineView`: read-only facts plus two helpers
(a fresh learner, the engine's decoding). ``stream.reconcile`` implements the
first and uses the second; ``stream.engine`` never imports it.

Examples
--------
>>> from stream.testing.doubles import make_batch
>>> class NeverAdopts:
...     def at_boundary(self, engine): pass
...     def before_learn(self, engine, batch, live_pred): return None
...     def request(self, details=None): pass
...     def close(self): pass
>>> reconciler: Reconciler = NeverAdopts()
>>> reconciler.before_learn(None, make_batch(3, n_features=2), None) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from learners.base import Learner
from stream.core.poll import PollColumns
from stream.core.records import Events, MicroBatch, TopicPartition

if TYPE_CHECKING:
    from serving.registry.versions import Version

__all__ = ["Adoption", "EngineView", "Reconciler"]


@dataclass
class Adoption:
    """What the engine swaps in: the caught-up learner, its published version, the ids it has learned."""

    learner: Any
    version: Version
    learned_ids: list[str] | None


class EngineView(Protocol):
    """What a reconciler may read of the engine, and the two things it may ask of it."""

    @property
    def learner(self) -> Learner | None:
        """The live learner (``None`` before the first batch)."""
        ...

    @property
    def events_learned(self) -> int:
        """Events the live model has learned, restored ones included."""
        ...

    @property
    def positions(self) -> dict[TopicPartition, int]:
        """Per partition, the next offset to read (a copy)."""
        ...

    @property
    def keeps_ledger(self) -> bool:
        """Whether the engine records the id of every learned event (then a retrain must record its ids)."""
        ...

    @property
    def codec_state(self) -> dict:
        """How the engine reads records now: feature schema, label map (a retrain must read them the same way)."""
        ...

    def pending(self) -> Events | None:
        """Events read but not learned yet: the open window's residue."""
        ...

    def new_learner(self, n_features: int) -> Learner:
        """A fresh learner as the engine builds them."""
        ...

    def decode_events(self, poll: PollColumns) -> Events:
        """``poll`` decoded as the engine decodes, without dead-lettering (those records were handled)."""
        ...


class Reconciler(Protocol):
    """What the engine calls on a reconciler (``stream.reconcile.reconciler.Reconciler`` is one)."""

    def at_boundary(self, engine: EngineView) -> None:
        """Between batches, once per loop turn: the only time a retrain may be launched or caught up."""
        ...

    def before_learn(
        self, engine: EngineView, batch: MicroBatch, live_pred: np.ndarray | None
    ) -> Adoption | None:
        """``batch`` is about to be learned (``live_pred``: the live model's prediction, if made): adopt?"""
        ...

    def request(self, details: dict | None = None) -> None:
        """A retrain is wanted at the next boundary (wired to the drift policy's retrain requests)."""
        ...

    def close(self) -> None:
        """The engine is closing: stop whatever runs."""
        ...
