"""bench/drift.py's scoring and feeding, checked on small cases (the bench itself is not a test)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.drift import error_stream, f_measure, feature_mode, locate, run_detector, true_positives


def test_tcpdbench_f1_matches_its_published_examples():
    assert f_measure({1: [10, 20], 2: [11, 20], 3: [10], 4: [0, 5]}, [10, 20]) == 1.0
    assert f_measure({1: [50], 2: [55]}, []) == pytest.approx(2 / 3)  # zero: P = 1, R = 1/2
    assert true_positives({10, 20}, {12, 30}) == {10}  # 20 has no prediction within 5


def test_error_streams_and_detector_delays():
    errors = error_stream(np.random.default_rng(0), 20_000, 0.5, 0, 5_000)
    assert errors[:20_000].mean() == pytest.approx(0.1, abs=0.01) and errors[20_000:].mean() > 0.45
    false_alarms, delay = run_detector("adwin", errors, 500, 20_000)
    assert false_alarms == 0 and delay is not None and delay <= 1_000


def test_feature_mode_places_a_level_shift_near_its_position():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(0, 1, 300), rng.normal(3, 1, 300)])[:, None]
    assert locate(values) == 300
    found = feature_mode(values, "ks", 50)
    assert found and abs(found[0] - 300) <= 5
    assert f_measure({1: [300]}, found) > 0.6
