"""One backtest configuration: learner, window, drift policy and gate, from the CLI and/or a YAML file.

``streamlearn replay`` compares configurations. Each ``--config FILE`` is a
YAML mapping whose keys are the learner options of ``streamlearn run`` (in
``snake_case`` or ``--dash-case``, e.g. ``model``, ``lr``, ``ewc_strength``,
``replay``, ``model_options``), plus ``name``, ``window`` and two sections:

.. code-block:: yaml

    name: mlp-ewc
    model: mlp
    model_options: {hidden: [64]}
    lr: 0.01
    ewc_strength: 10
    window: count:500
    drift: {detectors: [adwin], feature: ks, options: {warmup_events: 10000}}
    validation: {every_batches: 20, tolerance: 0.01, holdout_min_events: 100}

A file's keys override the options given on the command line, which are the
base of every configuration (so ``--window count:500`` applies to all files
that do not set ``window``).

Examples
--------
>>> base = ReplayConfig.base()
>>> cfg = ReplayConfig.from_mapping({"name": "small-lr", "lr": 0.01, "ewc-strength": 5,
...                                  "drift": {"detectors": "page_hinkley"}}, base=base)
>>> cfg.name, cfg.learner.lr, cfg.learner.ewc_strength, cfg.drift.detectors, cfg.window
('small-lr', 0.01, 5, ('page_hinkley',), 'count:1000')
>>> ReplayConfig.from_mapping({"learning_rate": 0.1}, base=base)
Traceback (most recent call last):
...
stream.core.errors.ConfigError: config: unknown key 'learning_rate'; known: avalanche, avalanche_options, ...
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from drift.choice import DriftChoice
from learners.choice import LearnerChoice
from stream.core.errors import ConfigError
from stream.engine.gate import GateConfig
from stream.window.spec import parse_window

__all__ = ["REPLAY_GATE", "ReplayConfig", "load_configs"]

_LEARNER_KEYS = {f.name for f in fields(LearnerChoice)}
_ALIASES = {
    "classes": "n_classes",
    "model_option": "model_options",
    "avalanche_option": "avalanche_options",
    "avalanche_plugin": "avalanche_plugins",
}
_TOP_KEYS = {"name", "window", "drift", "validation"}
_DRIFT_KEYS = {
    "detectors": "detectors",
    "detector": "detectors",
    "feature": "feature_method",
    "feature_drift": "feature_method",
    "feature_window": "feature_window",
    "options": "options",
}


#: A backtest's gate is paced in batches only (wall time would make a replay non-deterministic).
REPLAY_GATE = GateConfig(every_seconds=None)
#: The ``validation`` keys of a configuration file: the gate's settings but its wall-clock pace.
_GATE_KEYS = ("every_batches", "tolerance", "holdout_min_events")


def _as_options(value: Any, key: str) -> tuple[str, ...]:
    """A YAML mapping ``{hidden: [64]}`` or list ``["hidden=[64]"]`` -> the CLI's ``KEY=JSON`` strings."""
    if value is None:
        return ()
    if isinstance(value, Mapping):
        return tuple(f"{k}={json.dumps(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    if isinstance(value, str):
        return (value,)
    raise ConfigError(f"config: {key} must be a mapping or a list of KEY=VALUE strings")


def _key(raw: str) -> str:
    key = str(raw).strip().lstrip("-").replace("-", "_")
    return _ALIASES.get(key, key)


@dataclass(frozen=True)
class ReplayConfig:
    """A named configuration of a backtest (``file`` is where it came from, if a file)."""

    name: str
    learner: LearnerChoice
    window: str = "count:1000"
    drift: DriftChoice = DriftChoice()
    gate: GateConfig = REPLAY_GATE
    file: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not re.fullmatch(r"[\w.\-]+", self.name):
            raise ConfigError(f"configuration name {self.name!r}: use letters, digits, '.', '-' or '_'")
        parse_window(self.window)  # fail now, not after the topic was read

    @classmethod
    def base(cls, **overrides: Any) -> ReplayConfig:
        """The defaults of ``streamlearn run``, with ``overrides``."""
        values = {"name": "default", "learner": LearnerChoice(), **overrides}
        return cls(**values)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, base: ReplayConfig, file: str | None = None
    ) -> ReplayConfig:
        """``base`` with the keys of ``data`` applied (see the module docstring for the keys)."""
        where = f"config {file}" if file else "config"
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping of options, got {type(data).__name__}")
        learner: dict[str, Any] = {}
        top: dict[str, Any] = {}
        for raw, value in data.items():
            key = _key(raw)
            if key in _TOP_KEYS:
                top[key] = value
            elif key in _LEARNER_KEYS:
                learner[key] = (
                    _as_options(value, key)
                    if key.endswith("_options") or key == "avalanche_plugins"
                    else value
                )
            else:
                raise _unknown(where, "key", raw, _LEARNER_KEYS | _TOP_KEYS)
        try:
            choice = replace(base.learner, **learner) if learner else base.learner
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        name = str(top.get("name") or (os.path.splitext(os.path.basename(file))[0] if file else base.name))
        try:
            return cls(
                name=name,
                learner=choice,
                window=str(top.get("window", base.window)),
                drift=_drift(top.get("drift"), base.drift, where),
                gate=_gate(top.get("validation"), base.gate, where),
                file=file,
            )
        except ConfigError as exc:
            if str(exc).startswith(where):
                raise
            raise ConfigError(f"{where}: {exc}") from None

    def settings(self) -> dict[str, Any]:
        """Everything this configuration sets, as flat plain data (for the report).

        >>> base = ReplayConfig.base()
        >>> base.settings()["lr"], ReplayConfig.from_mapping({"model": "logistic"}, base=base).settings()["lr"]
        (0.01, 0.05)
        """
        out: dict[str, Any] = {"window": self.window}
        defaults = LearnerChoice()
        for f in fields(LearnerChoice):
            value = getattr(self.learner, f.name)
            if value != getattr(defaults, f.name) or f.name in ("model", "lr", "seed"):
                out[f.name] = list(value) if isinstance(value, tuple) else value
        out["lr"] = self.learner.learning_rate  # the rate in force: --lr, else the model's default
        out["drift"] = (
            "none"
            if not self.drift.enabled
            else {
                "detectors": list(self.drift.detectors),
                "feature": self.drift.feature_method,
                **({"options": list(self.drift.options)} if self.drift.options else {}),
            }
        )
        out["validation"] = {key: getattr(self.gate, key) for key in _GATE_KEYS}
        return out


def _drift(value: Any, base: DriftChoice, where: str) -> DriftChoice:
    if value is None:
        return base
    if value == "none" or value is False:
        return DriftChoice(detectors=("none",))
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{where}: drift must be a mapping (detectors, feature, feature_window, options) or none"
        )
    kwargs: dict[str, Any] = {}
    for raw, v in value.items():
        key = _DRIFT_KEYS.get(_key(raw))
        if key is None:
            raise _unknown(where, "drift key", raw, _DRIFT_KEYS)
        if key == "detectors":
            v = (v,) if isinstance(v, str) else tuple(v)
        elif key == "options":
            v = _as_options(v, "drift options")
        kwargs[key] = v
    return replace(base, **kwargs)


def _gate(value: Any, base: GateConfig, where: str) -> GateConfig:
    if value is None:
        return base
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{where}: validation must be a mapping (every_batches, tolerance, holdout_min_events)"
        )
    known = set(_GATE_KEYS)
    values = {_key(k): v for k, v in value.items()}
    bad = sorted(set(values) - known)
    if bad:
        raise _unknown(where, "validation key", bad[0], known)
    return replace(base, **values)


def _unknown(where: str, what: str, raw: Any, known) -> ConfigError:
    """The error for an unknown key: the closest known one when a typo is likely, and all of them.

    >>> str(_unknown("config a.yaml", "key", "windw", {"window", "lr"}))
    "config a.yaml: unknown key 'windw' (did you mean 'window'?); known: lr, window"
    """
    known = sorted(set(known))
    close = difflib.get_close_matches(_key(str(raw)), known, n=1)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{where}: unknown {what} {raw!r}{guess}; known: {', '.join(known)}")


def load_configs(paths: list[str], base: ReplayConfig) -> list[ReplayConfig]:
    """One configuration per YAML file (or just ``base`` without files); names made unique."""
    import yaml

    if not paths:
        return [base]
    configs = []
    for path in paths:
        if not os.path.isfile(path):
            raise ConfigError(f"--config {path!r} does not exist")
        with open(path, encoding="utf-8") as f:
            try:
                data = yaml.safe_load(f) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"--config {path!r} is not valid YAML: {exc}") from None
        configs.append(ReplayConfig.from_mapping(data, base=base, file=path))
    seen: dict[str, int] = {}
    unique = []
    for cfg in configs:
        n = seen.get(cfg.name, 0)
        seen[cfg.name] = n + 1
        unique.append(cfg if n == 0 else replace(cfg, name=f"{cfg.name}-{n + 1}"))
    return unique
