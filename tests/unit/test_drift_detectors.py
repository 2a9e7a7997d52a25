"""Error and feature drift detectors: they fire on real changes, stay quiet on stationary data, resume exactly."""

from __future__ import annotations

import numpy as np
import pytest

from drift.detectors import DriftMonitor, ErrorDriftDetector, FeatureDriftDetector, population_stability_index
from learners.state_io import dumps_state, loads_state
from stream.core.errors import ConfigError

QUIET_ON_STATIONARY = ("adwin", "page_hinkley", "ddm", "kswin")


def _bernoulli_batches(rng, rates, batch=500):
    for rate in rates:
        yield (rng.random(batch) < rate).astype(np.float64)


@pytest.mark.parametrize("name", QUIET_ON_STATIONARY)
def test_error_detector_is_quiet_on_a_stationary_error_stream(name):
    det = ErrorDriftDetector(name)
    rng = np.random.default_rng(1)
    levels = [det.update(e).level for e in _bernoulli_batches(rng, [0.1] * 100)]
    assert "drift" not in levels


@pytest.mark.parametrize("name", [*QUIET_ON_STATIONARY, "eddm"])
def test_error_detector_fires_within_a_few_batches_of_an_abrupt_rise(name):
    det = ErrorDriftDetector(name)
    rng = np.random.default_rng(2)
    for e in _bernoulli_batches(rng, [0.1] * 40):
        det.update(e)
    levels = [det.update(e).level for e in _bernoulli_batches(rng, [0.45] * 10)]
    assert "drift" in levels
    # KSWIN sees one value per batch, so it needs a few batches more than the per-event ones.
    assert levels.index("drift") <= (9 if name == "kswin" else 1)


def test_fewer_errors_is_not_an_alarm():
    det = ErrorDriftDetector("adwin")
    rng = np.random.default_rng(3)
    for e in _bernoulli_batches(rng, [0.4] * 20):
        det.update(e)
    signals = [det.update(e) for e in _bernoulli_batches(rng, [0.05] * 10)]
    assert all(s.level != "drift" for s in signals)
    assert any(s.evidence.get("improved") for s in signals)  # ADWIN did see the change, and it was a good one


def test_a_drift_signal_carries_its_evidence():
    det = ErrorDriftDetector("adwin")
    rng = np.random.default_rng(4)
    for e in _bernoulli_batches(rng, [0.1] * 20):
        det.update(e)
    signal = det.update((rng.random(500) < 0.7).astype(float))
    assert signal.is_drift and signal.detector == "adwin"
    assert signal.evidence["batch_error"] > 0.6 and signal.evidence["error_before"] < 0.15


@pytest.mark.parametrize("name", ["adwin", "page_hinkley", "ddm", "eddm", "kswin"])
def test_error_detector_resumes_exactly_from_its_snapshot(name):
    rng = np.random.default_rng(5)
    det = ErrorDriftDetector(name)
    for e in _bernoulli_batches(rng, [0.1] * 30):
        det.update(e)
    back = ErrorDriftDetector(name)
    back.restore(loads_state(dumps_state({"s": det.snapshot()}))["s"])
    rest = list(_bernoulli_batches(rng, [0.1] * 5 + [0.5] * 10))
    assert [det.update(e).level for e in rest] == [back.update(e).level for e in rest]


def test_binary_detectors_are_refused_for_regression_and_unknown_names_are_clear():
    with pytest.raises(ConfigError, match="0/1 errors"):
        ErrorDriftDetector("ddm", task="regression")
    with pytest.raises(ConfigError, match="choose one of"):
        ErrorDriftDetector("cusum")
    with pytest.raises(ConfigError, match="bad parameter"):
        ErrorDriftDetector("adwin", no_such_parameter=1)
    assert (
        ErrorDriftDetector("adwin", task="regression")
        .update(np.abs(np.random.default_rng(0).normal(size=50)))
        .level
        == "none"
    )


def test_ks_feature_drift_finds_the_shifted_feature_among_many_with_fdr_control():
    rng = np.random.default_rng(6)
    det = FeatureDriftDetector("ks", window=1000, feature_names=[f"f{i}" for i in range(20)])
    levels = [det.update(rng.normal(size=(500, 20))).level for _ in range(60)]
    assert "drift" not in levels  # 58 checks x 20 features of stationary data
    shifted = rng.normal(size=(500, 20))
    shifted[:, 7] += 0.5
    signals = [det.update(shifted) for _ in range(2)]
    drift = next(s for s in signals if s.is_drift)
    assert drift.evidence["features"][0]["feature"] == "f7" and drift.evidence["min_q"] < 1e-4
    # After the drift the shifted data is the reference: no second alarm for the same shift.
    assert all(det.update(shifted).level != "drift" for _ in range(6))


def test_psi_feature_drift_uses_its_thresholds():
    rng = np.random.default_rng(7)
    det = FeatureDriftDetector("psi", window=2000)
    assert all(det.update(rng.normal(size=(1000, 3))).level == "none" for _ in range(6))
    signal = next(
        s for s in (det.update(rng.normal(size=(1000, 3)) * [1, 1, 3]) for _ in range(3)) if s.level != "none"
    )
    assert (
        signal.is_drift
        and signal.evidence["features"][0]["feature"] == "x2"
        and signal.evidence["max_psi"] > 0.25
    )
    assert population_stability_index(np.arange(100.0), np.arange(100.0)) == pytest.approx(0.0)


def test_feature_detector_resumes_from_its_snapshot():
    rng = np.random.default_rng(8)
    det = FeatureDriftDetector("ks", window=200)
    for _ in range(5):
        det.update(rng.normal(size=(100, 2)))
    back = FeatureDriftDetector("ks", window=200)
    back.restore(loads_state(dumps_state({"s": det.snapshot()}))["s"])
    for batch in [rng.normal(size=(100, 2)) for _ in range(3)] + [
        rng.normal(size=(100, 2)) + 2 for _ in range(3)
    ]:
        a, b = det.update(batch), back.update(batch)
        assert a.level == b.level and a.evidence == b.evidence


def test_feature_detector_rejects_bad_settings():
    with pytest.raises(ConfigError, match="'ks' or 'psi'"):
        FeatureDriftDetector("chi2")
    with pytest.raises(ConfigError, match="alpha"):
        FeatureDriftDetector(alpha=0.1, warning_alpha=0.01)


def test_monitor_reports_the_strongest_signal_and_needs_a_detector():
    rng = np.random.default_rng(9)
    monitor = DriftMonitor([ErrorDriftDetector("ddm")], FeatureDriftDetector(window=100))
    for _ in range(10):
        assert monitor.update(rng.normal(size=(100, 2)), rng.random(100) < 0.1).level != "drift"
    signal = monitor.update(rng.normal(size=(100, 2)) + 5, rng.random(100) < 0.1)
    assert signal.is_drift and signal.detector == "features_ks"
    with pytest.raises(ConfigError, match="at least one detector"):
        DriftMonitor([])


def test_a_monitor_with_other_detectors_than_its_checkpoint_starts_them_fresh(caplog):
    rng = np.random.default_rng(10)
    old = DriftMonitor([ErrorDriftDetector("adwin")])
    for _ in range(5):
        old.update(np.zeros((500, 1)), rng.random(500) < 0.1)
    new = DriftMonitor([ErrorDriftDetector("ddm"), ErrorDriftDetector("page_hinkley")])
    new.restore(old.snapshot())
    assert "start fresh" in caplog.text
    same = DriftMonitor([ErrorDriftDetector("adwin")])
    same.restore(old.snapshot())
    assert same.error_detectors[0].snapshot()["seen"] == 2500
