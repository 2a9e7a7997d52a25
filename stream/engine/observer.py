"""What the engine tells an observer about each micro-batch (the backtest's metrics hook).

The engine calls :meth:`BatchObserver.before_learn` right after its
prequential prediction -- the model has not learned the batch yet, so an
observer may score it further (e.g. class probabilities for log loss) -- and
:meth:`BatchObserver.after_learn` once the batch is learned, with what the
drift policy and the validation gate did on it. ``stream.replay.driver`` collects its
per-window metrics this way; a live daemon runs without an observer.

Examples
--------
>>> import tempfile
>>> from stream.engine.checkpoint import CheckpointStore
>>> from stream.codec.json_codec import CodecConfig, JsonCodec
>>> from stream.engine.loop import Engine, EngineConfig
>>> from stream.engine.oversight import Oversight
>>> from stream.testing.doubles import ListSource, make_records
>>> from stream.window.count import CountWindow
>>> from learners.neural.learner import TorchLearner
>>> class Sizes:
...     def __init__(self): self.sizes = []
...     def before_learn(self, batch, pred, learner): pass
...     def after_learn(self, batch, outcome): self.sizes.append(outcome.report.n_samples)
>>> sizes = Sizes()
>>> _ = Engine(source=ListSource(make_records(120, n_features=3)), codec=JsonCodec(CodecConfig(n_features=3)),
...            window=CountWindow(50), learner_builder=lambda d: TorchLearner(n_features=d),
...            store=CheckpointStore(tempfile.mkdtemp()), config=EngineConfig(until_idle_seconds=0),
...            oversight=Oversight(observer=sizes)).run()
>>> sizes.sizes
[50, 50, 20]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from learners.base import LearnReport
from stream.core.records import MicroBatch

if TYPE_CHECKING:
    from drift.policy import Decision
    from serving.registry.versions import Version

__all__ = ["BatchObserver", "BatchOutcome"]


@dataclass(frozen=True)
class BatchOutcome:
    """What happened to one micro-batch after it was scored.

    ``decision``: the drift policy's decision on this batch, if any.
    ``version``: the version the gate published (validated or rejected) with
    this batch as holdout, if any. ``alarm``: the signal of a drift alarm that
    opened on this batch (``detector``, ``level``, ``evidence``), if any.
    ``seconds``: engine time on the batch (score, policy, gate, learn), the
    observer's own time excluded.
    """

    report: LearnReport
    decision: Decision | None
    version: Version | None
    alarm: dict[str, Any] | None
    seconds: float


class BatchObserver(Protocol):
    def before_learn(self, batch: MicroBatch, pred: np.ndarray | None, learner: Any) -> None:
        """``pred`` is the live model's prediction (``None`` when the engine is not prequential)."""
        ...

    def after_learn(self, batch: MicroBatch, outcome: BatchOutcome) -> None: ...
