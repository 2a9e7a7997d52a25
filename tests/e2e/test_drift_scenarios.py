"""The drift policy's heavy scenarios: a corrupted burst is rolled back, a concept change adapted to.

Each runs the real engine over a 40,000-event Agrawal stream and judges the
outcome statistically (accuracy floors, alarm delays, every validated version
healthy). River's Agrawal generator alone takes ~4 s per stream, so they are in
the e2e tier rather than the unit loop; the policy's other behaviours, and the
same engine over SEA streams, are in tests/unit/test_drift_policy.py, and
tests/integration/test_drift_services.py runs them against real services.
"""

from __future__ import annotations

import functools

import numpy as np
import orjson
import pytest

from drift.detectors import DriftMonitor, ErrorDriftDetector
from drift.policy import DriftPolicy
from drift.policy_config import PolicyConfig
from learners.neural.ewc import EWC
from learners.neural.learner import TorchLearner
from learners.neural.rehearsal import ClassBalancedReplay
from serving.registry.file_backend import FileRegistry
from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.records import RawRecord
from stream.engine.checkpoint import CheckpointStore
from stream.engine.gate import GateConfig, ValidationGate
from stream.engine.loop import Engine, EngineConfig
from stream.engine.oversight import Oversight
from stream.engine.stages import connect_drift_policy
from stream.sources.produce import poisoned_rows, synthetic_rows
from stream.testing.doubles import ListSource
from stream.window.count import CountWindow

BATCH = 500


# The learner, records and engine of tests/unit/test_drift_policy.py.
def _learner(d: int) -> TorchLearner:
    return TorchLearner(
        "mlp",
        n_features=d,
        device="cpu",
        lr=0.005,
        steps_per_batch=4,
        plugins=[EWC(strength=100), ClassBalancedReplay(2, 1000)],
    )


def _records(rows) -> list[RawRecord]:
    return [RawRecord("t", 0, i, r["ts"], None, orjson.dumps(r)) for i, r in enumerate(rows)]


def _run(tmp_path, rows, policy=None, *, tolerance=0.01):
    registry = FileRegistry(tmp_path / "registry")
    gate = ValidationGate(
        registry, GateConfig(every_batches=5, every_seconds=None, holdout_min_events=100, tolerance=tolerance)
    )
    policy = policy or DriftPolicy(DriftMonitor([ErrorDriftDetector("adwin")]))
    connect_drift_policy(policy, gate)
    engine = Engine(
        source=ListSource(_records(rows), batch_size=5000),
        codec=JsonCodec(CodecConfig()),
        window=CountWindow(BATCH),
        learner_builder=_learner,
        store=CheckpointStore(tmp_path / "ckpt"),
        config=EngineConfig(until_idle_seconds=0),
        oversight=Oversight(gate=gate, policy=policy),
    )
    return engine, engine.run(), registry, policy


@functools.cache
def _rows(generator: str, n: int, seed: int, drift_at: int | None = None) -> tuple[dict, ...]:
    """``synthetic_rows``, generated once per module for each set of arguments.

    River's Agrawal generator costs ~0.1 ms a row (it evaluates its concept per row), more than
    learning from the row; several tests read the same stream. No caller changes a row
    (``poisoned_rows`` copies the rows it corrupts).
    """
    return tuple(synthetic_rows(generator, n, seed=seed, drift_at=drift_at))


def _clean_accuracy(registry, number: int, generator: str) -> float:
    rows = _rows(generator, 2000, 99)
    X = np.array([r["x"] for r in rows], dtype=np.float32)
    y = np.array([r["y"] for r in rows])
    learner = _learner(X.shape[1])
    learner.load_state_dict(registry.load_state(number))
    return float((learner.predict_batch(X) == y).mean())


@pytest.mark.parametrize("poison", ["label_flip", "scale"])
def test_a_corrupted_burst_is_rolled_back_and_no_corrupted_version_is_validated(tmp_path, poison):
    start = 20_000
    rows = poisoned_rows(iter(_rows("agrawal", 40_000, 1)), poison, start, 1000)
    engine, summary, registry, policy = _run(tmp_path, rows)

    assert summary.drift["rollback"] >= 1 and summary.drift["adapt"] == 0
    rollback = registry.events(kind="rollback")[-1]  # the first one
    assert rollback.details["automatic"] is True
    assert rollback.details["snapshot"] - rollback.details["live"] >= 0.05
    assert rollback.details["p_snapshot_better"] < 0.01
    # Detected within a few batches of the first bad event.
    alarm = registry.events(kind="drift_alarm")[-1]
    first_alarm_offset = alarm.details["window"]["t:0"][0]
    assert start <= first_alarm_offset <= start + 3 * BATCH
    assert rollback.details["window"]["t:0"][1] <= start + 6 * BATCH
    # Every version validated (so possibly served) from the corruption on is a healthy model.
    since = [v for v in registry.history() if v.status == "validated" and v.offsets["t:0"][1] >= start]
    assert len(since) >= 3
    for version in since:
        assert _clean_accuracy(registry, version.number, "agrawal") > 0.85, version
    # The live learner came back from the snapshot and went on learning.
    assert summary.accuracy > 0.85 and engine.learner.n_learned > 0


def test_a_concept_change_is_adapted_to_and_a_retrain_requested(tmp_path):
    requests = []
    policy = DriftPolicy(
        DriftMonitor([ErrorDriftDetector("adwin")]),
        PolicyConfig(plasticity_events=10 * BATCH),
        on_retrain_request=requests.append,
    )
    rows = synthetic_rows("agrawal", 40_000, seed=1, drift_at=20_000)
    engine, summary, registry, _ = _run(tmp_path, rows, policy)

    assert summary.drift["adapt"] >= 1 and summary.drift["rollback"] == 0
    adapt = registry.events(kind="adapt")[-1]
    assert 20_000 <= adapt.details["alarm_window"]["t:0"][0] <= 20_000 + 3 * BATCH
    assert adapt.details["reference"] - adapt.details["live"] >= 0.05  # degraded...
    assert adapt.details["snapshot"] - adapt.details["live"] < 0.05  # ...and the snapshot is no cure
    assert (
        adapt.details["changes"]["ewc_strength"] == [100.0, 10.0]
        and adapt.details["changes"]["replay_evicted"] > 0
    )
    assert registry.events(kind="retrain_request") and requests and "evidence_window" in requests[0]
    # The relaxation was temporary.
    ewc = engine.learner.plugins[0]
    assert ewc.effective_strength == ewc.strength == 100.0
    assert summary.accuracy > 0.8
