"""Drift detectors fed one micro-batch at a time: the model's error stream and its input features.

Two kinds, one interface (``update(...) -> Signal``, ``reset()``,
``snapshot()``/``restore()`` for checkpoints), declared in :mod:`drift.base`:

- :class:`ErrorDriftDetector` runs one of river's detectors -- ADWIN,
  Page-Hinkley, DDM, EDDM, KSWIN -- over the per-event errors of the live model
  (0/1 for classification, absolute error for regression). Only *degradation*
  is an alarm: a change towards fewer errors is reported as ``improved``,
  never as drift. DDM and EDDM have their own warning level; the others get a
  twin detector with a looser threshold for it.
- :class:`FeatureDriftDetector` compares each feature's recent window with a
  reference window -- Kolmogorov-Smirnov tests with Benjamini-Hochberg
  control of the false discovery rate across features, or the Population
  Stability Index with its conventional 0.1 / 0.25 thresholds -- and
  re-references after a drift, so one shift is one alarm.

:class:`DriftMonitor` feeds a batch to all of them and reports the strongest
signal. Detector state round-trips through :mod:`learners.river_adapter.state`
(pickle-free), so it is part of the engine's checkpoint.

Examples
--------
>>> import numpy as np
>>> detector = ErrorDriftDetector("adwin")
>>> rng = np.random.default_rng(0)
>>> [detector.update(rng.random(500) < 0.1).level for _ in range(4)]
['none', 'none', 'none', 'none']
>>> detector.update(rng.random(500) < 0.6).level
'drift'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
from river import drift as river_drift
from river.drift import binary as river_binary
from scipy import stats

from drift.base import ErrorDetector, FeatureDetector, Level, Signal, stronger
from learners.river_adapter.state import from_plain, to_plain
from stream.core.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "ERROR_DETECTORS",
    "DriftMonitor",
    "ErrorDriftDetector",
    "FeatureDriftDetector",
]


@dataclass(frozen=True)
class _Spec:
    """How to build one river detector: drift and warning parameters, and how it is fed."""

    build: Callable[..., Any]
    drift_params: Mapping[str, Any]
    warning_params: Mapping[str, Any] | None  # None: the detector has its own warning level
    per_event: bool  # False: fed one value per batch (the batch's mean error)
    binary: bool  # needs 0/1 errors


# Page-Hinkley at river's default threshold (50) false-alarms every 30-60k
# events of a steady 10% error rate; 100 did not in 300k. Warning twins are
# the same detector with a looser threshold:
# they fire earlier and more often, which is what a warning is for.
ERROR_DETECTORS: dict[str, _Spec] = {
    "adwin": _Spec(river_drift.ADWIN, {"delta": 0.002}, {"delta": 0.02}, per_event=True, binary=False),
    "page_hinkley": _Spec(
        river_drift.PageHinkley,
        {"threshold": 100.0, "mode": "up"},
        {"threshold": 50.0, "mode": "up"},
        per_event=True,
        binary=False,
    ),
    "ddm": _Spec(river_binary.DDM, {}, None, per_event=True, binary=True),
    "eddm": _Spec(river_binary.EDDM, {}, None, per_event=True, binary=True),
    # KSWIN runs a KS test at every update (~0.4 ms): it sees batch means, not events.
    "kswin": _Spec(
        river_drift.KSWIN,
        {"alpha": 0.005, "window_size": 50, "stat_size": 10, "seed": 0},
        {"alpha": 0.05, "window_size": 50, "stat_size": 10, "seed": 0},
        per_event=False,
        binary=False,
    ),
}


class ErrorDriftDetector:
    """A river detector over the live model's per-event errors; see the module docstring.

    Parameters
    ----------
    name
        One of :data:`ERROR_DETECTORS`: ``adwin``, ``page_hinkley``, ``ddm``,
        ``eddm``, ``kswin``.
    task
        ``classification`` (0/1 errors) or ``regression`` (absolute errors;
        DDM and EDDM need 0/1 errors and are refused).
    burn_in
        Events a fresh (or reset) detector sees before it may signal: the
        first few hundred estimates of an error rate are noisy enough for
        Page-Hinkley and DDM to fire on a stationary stream.
    params
        Overrides of the drift-level detector's parameters (river's names).

    Raises
    ------
    ConfigError
        Unknown detector or parameter, or a binary detector for regression.
    """

    def __init__(
        self, name: str = "adwin", *, task: str = "classification", burn_in: int = 1000, **params: Any
    ) -> None:
        spec = ERROR_DETECTORS.get(name)
        if spec is None:
            raise ConfigError(f"unknown drift detector {name!r}; choose one of: {', '.join(ERROR_DETECTORS)}")
        if spec.binary and task != "classification":
            raise ConfigError(
                f"the {name} detector needs 0/1 errors (classification); use adwin, "
                "page_hinkley or kswin for regression"
            )
        self.name = name
        self.task = task
        self.params = dict(params)
        self.burn_in = int(burn_in)
        self._seen = 0
        self._spec = spec
        try:
            self._drift = spec.build(**{**spec.drift_params, **params})
            self._warn = (
                None if spec.warning_params is None else spec.build(**{**spec.warning_params, **params})
            )
        except TypeError as exc:
            raise ConfigError(f"bad parameter for the {name} detector: {exc}") from exc

    def update(self, errors: np.ndarray) -> Signal:
        """Feed one batch's per-event errors (bools, 0/1 or absolute errors)."""
        errors = np.asarray(errors, dtype=np.float64).ravel()
        if errors.size == 0:
            return Signal("none", self.name)
        values = errors.tolist() if self._spec.per_event else [float(errors.mean())]
        before = self._level()
        drift = self._feed(self._drift, values)
        warning = (
            self._feed(self._warn, values)
            if self._warn is not None
            else bool(getattr(self._drift, "warning_detected", False))
        )
        now = self._level() if self.name == "adwin" else float(errors.mean())
        evidence = {
            "error_before": before,
            "error_now": now,
            "batch_error": float(errors.mean()),
            "batch_events": int(errors.size),
        }
        self._seen += errors.size
        if self._seen <= self.burn_in:
            return Signal("none", self.name, {**evidence, "burn_in": True})
        if (drift or warning) and before is not None and (now <= before or evidence["batch_error"] <= before):
            # A change towards fewer errors -- the model got better, or the
            # stream easier -- or a cut whose recent side is noise while this
            # batch is no worse than the level before it. Not an alarm.
            return Signal("none", self.name, {**evidence, "improved": True})
        if drift:
            return Signal("drift", self.name, evidence)
        return Signal("warning" if warning else "none", self.name, evidence)

    def _level(self) -> float | None:
        """The error level the detector holds now, for the detectors that can change both ways.

        ADWIN's estimate is the mean of its window, which it cuts to the
        recent side when it detects a change, so before/after tells the
        direction. KSWIN's window holds batch means. Page-Hinkley ("up"), DDM
        and EDDM only ever detect increases: ``None``.
        """
        if self.name == "adwin":
            return float(self._drift.estimation) if self._drift.width > 0 else None
        if self.name == "kswin":
            window = getattr(self._drift, "window", None)
            return float(np.mean(window)) if window else None
        return None

    @staticmethod
    def _feed(detector: Any, values: list[float]) -> bool:
        fired = False
        update = detector.update
        for v in values:
            update(v)
            if detector.drift_detected:
                fired = True
        return fired

    def reset(self) -> None:
        """Forget everything (after a decision: the next alarm is about the next change)."""
        self._drift = self._spec.build(**{**self._spec.drift_params, **self.params})
        if self._warn is not None:
            self._warn = self._spec.build(**{**self._spec.warning_params, **self.params})
        self._seen = 0

    def snapshot(self) -> dict:
        return {
            "drift": to_plain(self._drift),
            "warn": None if self._warn is None else to_plain(self._warn),
            "seen": self._seen,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self._drift = from_plain(state["drift"])
        if state.get("warn") is not None:
            self._warn = from_plain(state["warn"])
        self._seen = int(state.get("seen", 0))

    def __repr__(self) -> str:
        return f"ErrorDriftDetector({self.name!r}, task={self.task!r})"


class FeatureDriftDetector:
    """Per-feature drift of the inputs: a recent window against a reference window.

    The first ``window`` events are the reference. Every ``check_every``
    events (once ``window`` recent events are in) each feature's recent window
    is compared with its reference:

    - ``method="ks"``: two-sample Kolmogorov-Smirnov p-values, adjusted across
      features with Benjamini-Hochberg (q-values); drift when a q-value is below
      ``alpha``, a warning below ``warning_alpha``;
    - ``method="psi"``: Population Stability Index over ``bins`` quantile bins
      of the reference; drift above 0.25, a warning above 0.1 (the usual rule
      of thumb; PSI is not a test, so there is nothing to adjust).

    After a drift the recent window becomes the reference: the new normal.

    >>> rng = np.random.default_rng(1)
    >>> det = FeatureDriftDetector(window=500)
    >>> [det.update(rng.normal(size=(250, 3))).level for _ in range(6)]
    ['none', 'none', 'none', 'none', 'none', 'none']
    >>> det.update(rng.normal(size=(250, 3)) + [0, 0, 1]).level
    'drift'
    """

    def __init__(
        self,
        method: Literal["ks", "psi"] = "ks",
        *,
        window: int = 1000,
        check_every: int | None = None,
        alpha: float = 1e-4,
        warning_alpha: float = 1e-2,
        bins: int = 10,
        feature_names: Sequence[str] | None = None,
    ) -> None:
        if method not in ("ks", "psi"):
            raise ConfigError(f"feature drift method must be 'ks' or 'psi', got {method!r}")
        if window < 20:
            raise ConfigError(f"feature drift window must be at least 20 events, got {window!r}")
        if not 0 < alpha <= warning_alpha < 1:
            raise ConfigError(
                f"need 0 < alpha <= warning_alpha < 1, got alpha={alpha!r}, warning_alpha={warning_alpha!r}"
            )
        self.method = method
        self.window = int(window)
        self.check_every = int(check_every or max(1, window // 2))
        self.alpha = float(alpha)
        self.warning_alpha = float(warning_alpha)
        self.bins = int(bins)
        self.feature_names = list(feature_names) if feature_names is not None else None
        self.name = f"features_{method}"
        self.reset()

    def reset(self) -> None:
        self._reference: np.ndarray | None = None
        self._filling: list[np.ndarray] = []
        self._recent: np.ndarray | None = None  # ring buffer of the last `window` rows
        self._recent_n = 0
        self._since_check = 0

    def update(self, X: np.ndarray) -> Signal:
        """Feed one batch of feature rows."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(X) == 0:
            return Signal("none", self.name)
        if self._reference is None:
            self._filling.append(X)
            rows = sum(len(x) for x in self._filling)
            if rows >= self.window:
                self._reference = np.concatenate(self._filling)[-self.window :]
                self._filling = []
            return Signal("none", self.name, {"reference_events": min(rows, self.window)})
        self._push(X)
        self._since_check += len(X)
        if self._recent_n < self.window or self._since_check < self.check_every:
            return Signal("none", self.name)
        self._since_check = 0
        recent = self._recent
        if self.method == "ks":
            level, evidence = self._ks(self._reference, recent)
        else:
            level, evidence = self._psi(self._reference, recent)
        if level == "drift":
            self._reference = recent.copy()  # the new normal
            self._recent_n = 0
        return Signal(level, self.name, evidence)

    def _push(self, X: np.ndarray) -> None:
        if self._recent is None:
            self._recent = np.zeros((self.window, X.shape[1]))
        X = X[-self.window :]
        self._recent = np.roll(self._recent, -len(X), axis=0)
        self._recent[-len(X) :] = X
        self._recent_n = min(self.window, self._recent_n + len(X))

    def _name(self, j: int) -> str:
        return self.feature_names[j] if self.feature_names and j < len(self.feature_names) else f"x{j}"

    def _ks(self, ref: np.ndarray, recent: np.ndarray) -> tuple[Level, dict]:
        result = stats.ks_2samp(ref, recent, axis=0)
        p = np.nan_to_num(np.atleast_1d(result.pvalue), nan=1.0)
        q = stats.false_discovery_control(p)
        order = np.argsort(q)[:5]
        evidence = {
            "method": "ks",
            "window": self.window,
            "min_q": float(q.min()),
            "features": [
                {
                    "feature": self._name(int(j)),
                    "statistic": float(np.atleast_1d(result.statistic)[j]),
                    "p": float(p[j]),
                    "q": float(q[j]),
                }
                for j in order
            ],
        }
        level: Level = (
            "drift" if q.min() < self.alpha else "warning" if q.min() < self.warning_alpha else "none"
        )
        return level, evidence

    def _psi(self, ref: np.ndarray, recent: np.ndarray) -> tuple[Level, dict]:
        psi = np.array(
            [population_stability_index(ref[:, j], recent[:, j], self.bins) for j in range(ref.shape[1])]
        )
        order = np.argsort(-psi)[:5]
        evidence = {
            "method": "psi",
            "window": self.window,
            "max_psi": float(psi.max()),
            "features": [{"feature": self._name(int(j)), "psi": float(psi[j])} for j in order],
        }
        level: Level = "drift" if psi.max() > 0.25 else "warning" if psi.max() > 0.1 else "none"
        return level, evidence

    def snapshot(self) -> dict:
        return {
            "reference": self._reference,
            "filling": np.concatenate(self._filling) if self._filling else None,
            "recent": self._recent,
            "recent_n": self._recent_n,
            "since_check": self._since_check,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        def arr(v):
            return None if v is None else np.asarray(v, dtype=np.float64)

        self._reference = arr(state.get("reference"))
        filling = arr(state.get("filling"))
        self._filling = [] if filling is None else [filling]
        self._recent = arr(state.get("recent"))
        self._recent_n = int(state.get("recent_n", 0))
        self._since_check = int(state.get("since_check", 0))

    def __repr__(self) -> str:
        return f"FeatureDriftDetector({self.method!r}, window={self.window})"


def population_stability_index(reference: np.ndarray, recent: np.ndarray, bins: int = 10) -> float:
    """PSI of ``recent`` against ``reference`` over the reference's quantile bins.

    >>> rng = np.random.default_rng(0)
    >>> round(population_stability_index(rng.normal(size=5000), rng.normal(size=5000)), 3) < 0.01
    True
    >>> population_stability_index(rng.normal(size=5000), rng.normal(1, 1, size=5000)) > 0.25
    True
    """
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1) / len(
        reference
    )
    new = np.bincount(np.searchsorted(edges, recent, side="right"), minlength=len(edges) + 1) / len(recent)
    eps = 1e-4  # an empty bin would make the log infinite
    ref, new = np.clip(ref, eps, None), np.clip(new, eps, None)
    return float(np.sum((new - ref) * np.log(new / ref)))


class DriftMonitor:
    """Feeds each batch to every detector and reports the strongest signal.

    >>> monitor = DriftMonitor([ErrorDriftDetector("ddm")])
    >>> monitor.update(np.zeros((100, 2)), np.zeros(100)).level
    'none'
    """

    def __init__(
        self,
        error_detectors: Sequence[ErrorDetector] = (),
        feature_detector: FeatureDetector | None = None,
    ) -> None:
        self.error_detectors = list(error_detectors)
        self.feature_detector = feature_detector
        if not self.error_detectors and feature_detector is None:
            raise ConfigError("a drift monitor needs at least one detector")

    def update(self, X: np.ndarray, errors: np.ndarray) -> Signal:
        """The strongest signal of this batch (all detectors see every batch)."""
        best: Signal | None = None
        for det in self.error_detectors:
            best = stronger(best, det.update(errors))
        if self.feature_detector is not None:
            best = stronger(best, self.feature_detector.update(X))
        return best

    def _names(self) -> list[str]:
        return [d.name for d in self.error_detectors]

    def reset(self) -> None:
        for det in self.error_detectors:
            det.reset()
        # The feature reference is kept: the inputs' normal does not change
        # because a model was rolled back (it re-references itself on drift).

    def snapshot(self) -> dict:
        return {
            "names": self._names(),
            "errors": [d.snapshot() for d in self.error_detectors],
            "features": None if self.feature_detector is None else self.feature_detector.snapshot(),
        }

    def restore(self, state: Mapping[str, Any] | None) -> None:
        if not state:
            return
        saved = state.get("errors") or []
        names = state.get("names")
        if names is not None and list(names) != self._names():
            # The operator chose other detectors since the checkpoint: they start fresh.
            log.warning(
                "drift detectors changed since the checkpoint (%s -> %s); they start fresh",
                names,
                self._names(),
            )
        else:
            for det, s in zip(self.error_detectors, saved):
                det.restore(s)
        if self.feature_detector is not None and state.get("features") is not None:
            self.feature_detector.restore(state["features"])

    def __repr__(self) -> str:
        return f"DriftMonitor({self.error_detectors!r}, {self.feature_detector!r})"
