"""The plasticity verbs of a :class:`~learners.neural.learner.TorchLearner`: consolidate, reset, adapt, restore.

The engine and the drift policy call them occasionally (a validated version,
an adopted retrain, an *adapt* decision); the learner's plugins that hold the
past (EWC, replay buffers) answer through their optional hooks
(:class:`~learners.neural.hooks.PluginHooks`), and the learner's
:class:`~learners.neural.schedule.Schedule` makes it young again after an
adapt.
"""

from __future__ import annotations

from learners.neural.hooks import PluginHooks
from learners.neural.schedule import Schedule

__all__ = ["PlasticityVerbs"]


class PlasticityVerbs:
    """Mixed into :class:`~learners.neural.learner.TorchLearner` (it sets the attributes below)."""

    _hooks: PluginHooks
    schedule: Schedule
    steps_per_batch: int
    _n_learned: int
    _young_until: int

    def consolidate(self) -> int:
        """Ask every plugin that consolidates (EWC) to anchor on the model as it is now.

        The engine calls this when the gate validates a version, so anchors
        are evidence-backed states. Returns how many plugins consolidated.
        """
        return self._hooks.consolidate()

    def reset_consolidation(self) -> int:
        """Forget every EWC anchor and Fisher (an adopted full retrain is the new reference); how many reset."""
        return self._hooks.reset()

    def adapt(self, *, ewc_factor: float = 0.1, replay_refresh: float = 0.5) -> dict:
        """Raise plasticity because the world changed (the drift policy's *adapt* decision).

        Plugins that hold the past -- EWC (``relax``) and replay buffers
        (``refresh``) -- loosen their grip: the EWC strength in force is
        multiplied by ``ewc_factor`` and ``replay_refresh`` of each buffer is
        evicted so new data takes its place. :meth:`restore_plasticity` undoes
        the EWC part. Returns what changed, for the audit trail.

        >>> from learners.neural.ewc import EWC
        >>> from learners.neural.learner import TorchLearner
        >>> learner = TorchLearner(n_features=2, device="cpu", plugins=[EWC(strength=100)])
        >>> learner.adapt(ewc_factor=0.1)
        {'ewc_strength': [100.0, 10.0]}
        >>> learner.restore_plasticity()
        {'ewc_strength': [10.0, 100.0]}
        """
        changes = self._hooks.adapt(ewc_factor=ewc_factor, replay_refresh=replay_refresh)
        if self.schedule.young_events and self.schedule.young_steps > self.steps_per_batch:
            # The new concept is learned like a first one: young steps for young_events.
            self._young_until = self._n_learned + self.schedule.young_events
            changes["young_until"] = self._young_until
        return changes

    def restore_plasticity(self) -> dict:
        """Undo :meth:`adapt`'s EWC relaxation (the evicted replay rows have been replaced by then)."""
        return self._hooks.restore_plasticity()
