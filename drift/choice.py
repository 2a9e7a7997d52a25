"""The drift options of the CLI as one validated value that builds the monitor and the policy.

>>> choice = DriftChoice(detectors=("adwin",), feature_method="ks", options=("warmup_events=5000",))
>>> policy = choice.build(task="classification")
>>> policy.config.warmup_events, [d.name for d in policy.monitor.error_detectors], policy.monitor.feature_detector
(5000, ['adwin'], FeatureDriftDetector('ks', window=1000))
>>> DriftChoice(options=("warmup_batches=20",))
Traceback (most recent call last):
...
stream.core.errors.ConfigError: drift option warmup_batches was replaced by warmup_events (counted in events, not batches: 20 batches of count:1000 = 20000 events)
>>> DriftChoice(detectors=("none",)).build(task="classification") is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from drift.detectors import ERROR_DETECTORS, DriftMonitor, ErrorDriftDetector, FeatureDriftDetector
from drift.policy import DriftPolicy
from drift.policy_config import PolicyConfig
from learners.choice import parse_options
from stream.core.errors import ConfigError

__all__ = ["DriftChoice"]


@dataclass(frozen=True)
class DriftChoice:
    """``--drift-detector`` (repeatable, or ``none``), ``--feature-drift``, ``--drift-option KEY=VALUE``."""

    detectors: tuple[str, ...] = ("adwin",)
    feature_method: str = "none"
    feature_window: int = 1000
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = tuple(self.detectors)
        unknown = [n for n in names if n != "none" and n not in ERROR_DETECTORS]
        if unknown:
            raise ConfigError(
                f"--drift-detector {unknown[0]!r}: choose from {', '.join(ERROR_DETECTORS)} or none"
            )
        if "none" in names and len(names) > 1:
            raise ConfigError("--drift-detector none cannot be combined with other detectors")
        if self.feature_method not in ("none", "ks", "psi"):
            raise ConfigError(f"--feature-drift {self.feature_method!r}: choose ks, psi or none")
        self.policy_config()  # validate the options now, not at the first batch

    @property
    def enabled(self) -> bool:
        return self.detectors != ("none",) or self.feature_method != "none"

    def policy_config(self) -> PolicyConfig:
        """The policy settings of ``options``; an option renamed since (``warmup_batches``) names its successor."""
        return PolicyConfig.from_options(parse_options(self.options, "--drift-option"), "--drift-option")

    def build(self, *, task: str, feature_names: Sequence[str] | None = None) -> DriftPolicy | None:
        """The policy these options describe, or ``None`` when drift handling is off."""
        if not self.enabled:
            return None
        errors = [ErrorDriftDetector(n, task=task) for n in self.detectors if n != "none"]
        features = (
            None
            if self.feature_method == "none"
            else FeatureDriftDetector(
                self.feature_method, window=self.feature_window, feature_names=feature_names
            )
        )
        return DriftPolicy(DriftMonitor(errors, features), self.policy_config(), task=task)
