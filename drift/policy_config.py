"""The drift policy's thresholds and levers (:class:`PolicyConfig`), and the option names they replaced.

The policy's periods -- the warm-up, the cool-down after a decision, the
raised plasticity after an adapt -- are counted in *events*, so they mean the
same whatever the window: ``warmup_events=2000`` is 4 batches of ``count:500``
or 20 of ``count:100``. Evidence sizes (``evidence_batches``,
``reference_batches``) stay in batches. How each period is counted is in
:mod:`drift.policy`.

>>> PolicyConfig(warmup_events=500).warmup_events
500
>>> renamed_option("cooldown_batches", 10)
'drift option cooldown_batches was replaced by cooldown_events (counted in events, not batches: 10 batches of count:1000 = 10000 events)'
>>> renamed_option("evidence_batches", 3) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from stream.core.errors import ConfigError

__all__ = ["PolicyConfig", "RENAMED_OPTIONS", "renamed_option"]

#: Options of earlier versions, counted in batches, and the event-counted ones that replaced them.
RENAMED_OPTIONS = {
    "warmup_batches": "warmup_events",
    "cooldown_batches": "cooldown_events",
    "plasticity_batches": "plasticity_events",
}


def renamed_option(name: str, value: Any = None) -> str | None:
    """The one-line message for an option of an earlier version, or ``None`` if ``name`` is not one."""
    new = RENAMED_OPTIONS.get(name)
    if new is None:
        return None
    n = value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 20
    return (
        f"drift option {name} was replaced by {new} "
        f"(counted in events, not batches: {n} batches of count:1000 = {n * 1000} events)"
    )


@dataclass(frozen=True)
class PolicyConfig:
    """Thresholds and levers of the drift policy (see :mod:`drift.policy`)."""

    warmup_events: int = 2000
    evidence_batches: int = 3
    min_evidence_events: int = 200
    rollback_margin: float = 0.05
    significance: float = 0.01
    degradation: float = 0.05
    reference_batches: int = 10
    cooldown_events: int = 5000
    lookback_versions: int = 1
    ewc_factor: float = 0.1
    replay_refresh: float = 0.5
    plasticity_events: int = 10000
    request_retrain: bool = True
    burst_events: int = 5000

    def __post_init__(self) -> None:
        for name in ("evidence_batches", "min_evidence_events", "reference_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"drift policy {name} must be at least 1, got {getattr(self, name)!r}")
        for name in (
            "warmup_events", "cooldown_events", "plasticity_events", "lookback_versions", "burst_events"
        ):  # fmt: skip
            if getattr(self, name) < 0:
                raise ConfigError(f"drift policy {name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("rollback_margin", "degradation"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"drift policy {name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 < self.significance < 1:
            raise ConfigError(f"drift policy significance must be in (0, 1), got {self.significance!r}")
        if not 0 <= self.ewc_factor <= 1 or not 0 <= self.replay_refresh <= 1:
            raise ConfigError("drift policy ewc_factor and replay_refresh must be in [0, 1]")

    @classmethod
    def from_options(cls, values: Mapping[str, Any], what: str = "drift option") -> PolicyConfig:
        """The config these ``{key: value}`` options describe; a renamed or unknown key is a :class:`ConfigError`.

        >>> PolicyConfig.from_options({"warmup_batches": 5})
        Traceback (most recent call last):
        ...
        stream.core.errors.ConfigError: drift option warmup_batches was replaced by warmup_events (counted in events, not batches: 5 batches of count:1000 = 5000 events)
        """
        for name, value in values.items():
            message = renamed_option(name, value)
            if message is not None:
                raise ConfigError(message)
        known = {f.name for f in fields(cls)}
        bad = sorted(set(values) - known)
        if bad:
            raise ConfigError(
                f"{what} {bad[0]!r} is not a drift policy setting; known: {', '.join(sorted(known))}"
            )
        try:
            return cls(**values)
        except TypeError as exc:  # a value of the wrong type, compared in __post_init__
            raise ConfigError(f"{what}: {exc}") from exc
