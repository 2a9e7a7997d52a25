"""Which continual-learning plugins a learner gets: the configuration behind ``--ewc-*`` and ``--replay*``.

A frozen, validated description (STYLE 4) that builds fresh plugins for each
learner it is asked for -- plugins hold state, so two learners never share one.

Examples
--------
>>> spec = PluginSpec(ewc_strength=100.0, replay="balanced", replay_capacity=1000)
>>> [type(p).__name__ for p in spec.build(task="classification", n_classes=3)]
['EWC', 'ClassBalancedReplay']
>>> PluginSpec().build(task="classification", n_classes=2)
[]
"""

from __future__ import annotations

from dataclasses import dataclass

from learners.neural.ewc import EWC
from learners.neural.hooks import UpdatePlugin
from learners.neural.rehearsal import ClassBalancedReplay, ReservoirReplay
from stream.core.errors import ConfigError

REPLAY_KINDS = ("none", "reservoir", "balanced")


@dataclass(frozen=True)
class PluginSpec:
    """EWC (off while ``ewc_strength`` is 0) and a rehearsal buffer (``replay``: none, reservoir, balanced)."""

    ewc_strength: float = 0.0
    ewc_decay: float = 0.9
    ewc_every: int | None = 50
    replay: str = "none"
    replay_capacity: int = 2000
    replay_mix: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.replay not in REPLAY_KINDS:
            raise ConfigError(f"--replay must be one of {', '.join(REPLAY_KINDS)}, got {self.replay!r}")
        # Build once (EWC even when off) to surface a bad value now, at configuration time.
        EWC(self.ewc_strength, self.ewc_decay, self.ewc_every)
        self.build(task="classification", n_classes=2)

    def build(self, *, task: str, n_classes: int) -> list[UpdatePlugin]:
        """Fresh plugins for one learner.

        Raises
        ------
        ConfigError
            A value is out of range, or class-balanced replay was asked for regression.
        """
        plugins: list[UpdatePlugin] = []
        if self.ewc_strength > 0:
            plugins.append(EWC(self.ewc_strength, self.ewc_decay, self.ewc_every))
        if self.replay == "reservoir":
            plugins.append(ReservoirReplay(self.replay_capacity, self.replay_mix, self.seed))
        elif self.replay == "balanced":
            if task != "classification":
                raise ConfigError(
                    "--replay balanced needs classification; use --replay reservoir for regression"
                )
            plugins.append(ClassBalancedReplay(n_classes, self.replay_capacity, self.replay_mix, self.seed))
        return plugins
