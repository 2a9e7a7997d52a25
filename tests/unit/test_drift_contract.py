"""The drift-detector contract (drift.base), over every detector the CLI accepts and the test double.

``--drift-detector`` takes the names of :data:`~drift.detectors.ERROR_DETECTORS`
and ``--feature-drift`` takes ``ks`` or ``psi``; each is held to its
protocol: plain-data signals, an empty batch is ``none``, a clear rise is
``drift``, ``snapshot``/``restore`` continue exactly, and ``reset`` starts
over. The scripted double (drift.testing) must honour the same interface.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import orjson
import pytest

from drift.base import ErrorDetector, FeatureDetector, Signal
from drift.detectors import ERROR_DETECTORS, DriftMonitor, ErrorDriftDetector, FeatureDriftDetector
from drift.testing import ScriptedDetector
from learners.state_io import dumps_state, loads_state
from stream.core.errors import ConfigError

BATCH = 500
CHANGE = 40  # the batch where the stream changes (KSWIN, one value per batch, needs a long reference)
LEVELS = {"none", "warning", "drift"}

ERROR: dict[str, Callable[[], ErrorDetector]] = {
    **{name: (lambda name=name: ErrorDriftDetector(name)) for name in ERROR_DETECTORS},
    "scripted": lambda: ScriptedDetector(fire_at=[CHANGE + 2]),
}
FEATURE: dict[str, Callable[[], FeatureDetector]] = {
    method: (lambda method=method: FeatureDriftDetector(method, window=400)) for method in ("ks", "psi")
}


def error_batches(seed: int = 0):
    """CHANGE batches at a 10% error rate, then 10 at 60%."""
    rng = np.random.default_rng(seed)
    return [(rng.random(BATCH) < (0.1 if i < CHANGE else 0.6)).astype(np.float64) for i in range(CHANGE + 10)]


def feature_batches(seed: int = 0):
    """CHANGE batches of standard normal features, then 10 with one feature shifted by 1.5."""
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(BATCH, 3)) + ([0, 0, 1.5] if i >= CHANGE else 0) for i in range(CHANGE + 10)]


CASES = {f"error-{k}": (v, error_batches, ErrorDetector) for k, v in ERROR.items()}
CASES.update({f"feature-{k}": (v, feature_batches, FeatureDetector) for k, v in FEATURE.items()})


@pytest.fixture(params=sorted(CASES))
def case(request):
    return CASES[request.param]


def levels(detector, batches) -> list[str]:
    return [detector.update(b).level for b in batches]


def test_implements_its_protocol(case):
    make, _, protocol = case
    detector = make()
    assert isinstance(detector, protocol)
    assert isinstance(detector.name, str) and detector.name


def test_signals_are_plain_data_and_an_empty_batch_is_none(case):
    make, batches, _ = case
    detector = make()
    empty = np.zeros((0, 3)) if batches is feature_batches else np.zeros(0)
    if not isinstance(detector, ScriptedDetector):  # the double counts calls, whatever they hold
        assert detector.update(empty).level == "none"
    for b in batches():
        signal = detector.update(b)
        assert isinstance(signal, Signal) and signal.level in LEVELS
        assert signal.detector == detector.name
        orjson.dumps(dict(signal.evidence))


def test_a_clear_change_is_a_drift(case):
    # Quietness on stationary streams is per detector (EDDM is not): tests/unit/test_drift_detectors.py.
    make, batches, _ = case
    assert "drift" in levels(make(), batches())[CHANGE:]


def test_snapshot_and_restore_continue_exactly(case):
    make, batches, _ = case
    data = batches()
    original = make()
    levels(original, data[: CHANGE - 2])
    # Through the checkpoint's serialisation (plain data and tensors, no pickle).
    state = loads_state(dumps_state({"s": original.snapshot()}))["s"]
    restored = make()
    restored.restore(state)
    assert levels(restored, data[CHANGE - 2 :]) == levels(original, data[CHANGE - 2 :])


def test_reset_starts_over(case):
    make, batches, _ = case
    data = batches(seed=3)
    used = make()
    levels(used, data[:CHANGE])
    used.reset()
    if isinstance(used, ScriptedDetector):
        assert used.resets == 1
        return
    assert levels(used, data) == levels(make(), data)


def test_binary_detectors_refuse_regression():
    for name, spec in ERROR_DETECTORS.items():
        if spec.binary:
            with pytest.raises(ConfigError):
                ErrorDriftDetector(name, task="regression")
        else:
            assert isinstance(ErrorDriftDetector(name, task="regression"), ErrorDetector)


def test_the_monitor_takes_any_detector_of_the_protocols():
    monitor = DriftMonitor([ScriptedDetector([2]), ErrorDriftDetector("adwin")], FEATURE["ks"]())
    X, errors = np.zeros((10, 3)), np.zeros(10)
    assert [monitor.update(X, errors).level for _ in range(3)] == ["none", "drift", "none"]
    assert monitor.snapshot()["names"] == ["scripted", "adwin"]
