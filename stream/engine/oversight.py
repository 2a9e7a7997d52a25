"""What watches the live learner besides the loop: the gate, the drift policy, an observer, a reconciler, the feedback loop.

Each part is optional; the engine builds a batch stage for each one present
(:func:`stream.engine.stages.batch_stages`). Grouped so the engine and the
stage list take one value for them, and the builder wires them once
(:func:`stream.engine.stages.connect_drift_policy`).

>>> Oversight().gate is None and Oversight().policy is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drift.policy import DriftPolicy
    from stream.engine.feedback_loop import FeedbackLoop
    from stream.engine.gate import ValidationGate
    from stream.engine.observer import BatchObserver
    from stream.engine.reconcile_port import Reconciler


@dataclass(frozen=True)
class Oversight:
    """The validation gate, the drift policy, a batch observer, a full-retrain reconciler (all optional)...

    ...and the feedback loop: delayed labels joined with their predictions
    before decoding, and the served versions scored live on them
    (:mod:`stream.engine.feedback_loop`).
    """

    gate: ValidationGate | None = None
    policy: DriftPolicy | None = None
    observer: BatchObserver | None = None
    reconciler: Reconciler | None = None
    feedback: FeedbackLoop | None = None
