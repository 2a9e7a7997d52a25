"""The drift policy decides with evidence: corrupted model -> rollback, changed world -> adapt, else dismiss.

The scenarios run the real engine over an in-memory source and a directory
registry; tests/integration/test_drift_services.py runs the same behaviours
against a real broker, a real Redis and a real uvicorn server. The heavy ones
over 40,000-event Agrawal streams (a corrupted burst rolled back, a concept
change adapted to) are tests/e2e/test_drift_scenarios.py.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from drift.choice import DriftChoice
from drift.detectors import DriftMonitor, ErrorDriftDetector
from drift.policy import DriftPolicy
from drift.policy_config import PolicyConfig
from drift.testing import ScriptedDetector
from learners.neural.ewc import EWC
from learners.neural.learner import TorchLearner
from learners.neural.rehearsal import ClassBalancedReplay
from serving.registry.file_backend import FileRegistry
from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.errors import ConfigError, RegistryUnavailableError
from stream.core.records import RawRecord
from stream.engine.checkpoint import CheckpointStore
from stream.engine.gate import GateConfig, ValidationGate
from stream.engine.loop import Engine, EngineConfig
from stream.engine.oversight import Oversight
from stream.engine.stages import connect_drift_policy
from stream.sources.produce import poisoned_rows, synthetic_rows
from stream.testing.doubles import ListSource, make_batch
from stream.window.count import CountWindow

BATCH = 500


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


def test_a_stationary_stream_raises_no_alarm(tmp_path):
    # DDM is left out: at a ~1% error rate it false-alarms (bench/drift.py measures it).
    policy = DriftChoice(detectors=("adwin", "page_hinkley"), feature_method="ks").build(
        task="classification"
    )
    _, summary, registry, _ = _run(tmp_path, synthetic_rows("sea", 40_000, seed=3), policy)
    assert summary.drift["alarms"] == 0, registry.events(kind="drift_alarm")
    assert not registry.events(kind="rollback") and not registry.events(kind="adapt")


def test_a_false_alarm_is_dismissed_and_cooldown_makes_one_decision_per_drift(tmp_path):
    fires = ScriptedDetector(range(5, 12))  # 7 alarms in a row, one change
    policy = DriftPolicy(
        DriftMonitor([fires]), PolicyConfig(warmup_events=20 * BATCH, cooldown_events=20 * BATCH)
    )
    _, summary, registry, _ = _run(tmp_path, synthetic_rows("sea", 25_000, seed=3), policy)
    assert summary.drift["drift_dismissed"] == 1 and summary.drift["alarms"] == 1
    assert summary.drift["suppressed"] >= 2
    dismissed = registry.events(kind="drift_dismissed")[0]
    assert dismissed.details["alarm"]["detector"] == "scripted" and dismissed.details["events"] >= 3 * BATCH


def test_validation_holds_while_evidence_is_collected(tmp_path):
    fires = ScriptedDetector([3])
    policy = DriftPolicy(DriftMonitor([fires]), PolicyConfig(warmup_events=10 * BATCH, evidence_batches=20))
    _, _, registry, _ = _run(tmp_path, synthetic_rows("sea", 20_000, seed=3), policy)
    alarm_at = registry.events(kind="drift_alarm")[0].at
    decided_at = registry.events(kind="drift_dismissed")[0].at
    assert not [e for e in registry.events(kind="validate", limit=1000) if alarm_at <= e.at <= decided_at]
    assert [e for e in registry.events(kind="validate", limit=1000) if e.at > decided_at]  # and resumes after


def _trained(seed=0, flip=False, batches=20):
    learner = TorchLearner("mlp", n_features=4, device="cpu", lr=0.01, steps_per_batch=4, seed=seed)
    for i in range(batches):
        b = make_batch(BATCH, n_features=4, start_offset=i * BATCH, flip_labels=flip)
        learner.learn_batch(b.X, b.y)
    return learner


def test_rollback_goes_past_a_corrupted_validated_version_and_moves_the_pointer(tmp_path):
    from serving.registry.versions import Version

    registry = FileRegistry(tmp_path / "registry")
    good, bad = _trained(), _trained(flip=True)
    v1 = registry.validate(registry.publish(good.state_dict(), Version(0)).number).number
    v2 = registry.validate(registry.publish(bad.state_dict(), Version(0, parent=v1)).number).number
    gate = ValidationGate(registry)
    policy = DriftPolicy(
        DriftMonitor([ScriptedDetector([1])]),
        PolicyConfig(warmup_events=0),
        registry=registry,
        snapshot=gate.validated,
    )
    live = _trained(flip=True)
    decision = None
    for i in range(40, 45):
        batch = make_batch(BATCH, n_features=4, start_offset=i * BATCH)
        decision = policy.observe(live, batch, live.predict_batch(batch.X)) or decision
        if decision:
            break
    assert decision is not None and decision.kind == "rollback" and decision.version.number == v1
    assert registry.pointer()[0] == v1 and registry.get(v2).status == "rolled_back"
    event = registry.events(kind="rollback")[0]
    assert (
        event.details["pointer_moved"] is True and event.details["from"] == v2 and event.details["to"] == v1
    )
    assert event.details["older_versions"][str(v1)]["snapshot"] > 0.9
    # The live learner is now v1's model.
    probe = make_batch(200, n_features=4, start_offset=10**6)
    assert np.array_equal(live.predict_batch(probe.X), good.predict_batch(probe.X))


def test_an_older_validated_version_of_another_shape_is_skipped_not_fatal(tmp_path, caplog):
    """A registry shared with an earlier run (another model shape validated first) must not crash the alarm."""
    from serving.registry.versions import Version

    registry = FileRegistry(tmp_path / "registry")
    other_shape = TorchLearner("logistic", n_features=7, device="cpu")
    v1 = registry.validate(registry.publish(other_shape.state_dict(), Version(0)).number).number
    bad = _trained(flip=True)
    v2 = registry.validate(registry.publish(bad.state_dict(), Version(0, parent=v1)).number).number
    gate = ValidationGate(registry)
    policy = DriftPolicy(
        DriftMonitor([ScriptedDetector([1])]),
        PolicyConfig(warmup_events=0),
        registry=registry,
        snapshot=gate.validated,
    )
    live = _trained(flip=True)
    with caplog.at_level("WARNING", logger="drift.policy"):
        for i in range(40, 50):
            batch = make_batch(BATCH, n_features=4, start_offset=i * BATCH)
            policy.observe(live, batch, live.predict_batch(batch.X))
    assert policy.counts["alarms"] == 1
    assert f"validated version {v1} does not fit this learner" in caplog.text
    # The alarm compared the current version only; the misfit is never a rollback target.
    assert registry.pointer()[0] == v2 and registry.get(v1).status == "validated"


class _FlakyRegistry(FileRegistry):
    down = False

    def record_event(self, event):
        if self.down:
            raise RegistryUnavailableError("registry down (test)")
        return super().record_event(event)


def test_audit_events_wait_in_the_outbox_and_survive_a_checkpoint(tmp_path):
    registry = _FlakyRegistry(tmp_path / "registry")
    registry.down = True
    policy = DriftPolicy(
        DriftMonitor([ScriptedDetector([2])]),
        PolicyConfig(warmup_events=0, evidence_batches=1, min_evidence_events=1),
        registry=registry,
    )
    learner = _trained(batches=2)
    for i in range(4):
        b = make_batch(BATCH, n_features=4, start_offset=i * BATCH)
        policy.observe(learner, b, learner.predict_batch(b.X))
    assert registry.events() == [] and len(policy.snapshot()["outbox"]) == 2  # alarm + dismissal
    # A restarted policy inherits the outbox and delivers once the registry is back.
    again = DriftPolicy(DriftMonitor([ScriptedDetector([])]), registry=registry)
    again.restore(policy.snapshot())
    registry.down = False
    b = make_batch(BATCH, n_features=4, start_offset=10 * BATCH)
    again.observe(learner, b, learner.predict_batch(b.X))
    assert [e.kind for e in reversed(registry.events())] == ["drift_alarm", "drift_dismissed"]


def test_policy_state_is_checkpointed_and_an_open_alarm_resumes(tmp_path):
    rows = list(synthetic_rows("sea", 30_000, seed=5))
    cfg = PolicyConfig(warmup_events=5 * BATCH, evidence_batches=10)
    first = DriftPolicy(DriftMonitor([ScriptedDetector([20])]), cfg)
    registry = FileRegistry(tmp_path / "registry")
    gate = ValidationGate(registry, GateConfig(every_batches=5, every_seconds=None, holdout_min_events=100))
    connect_drift_policy(first, gate)
    engine = Engine(
        source=ListSource(_records(rows[:14_000]), batch_size=5000),
        codec=JsonCodec(CodecConfig()),
        window=CountWindow(BATCH),
        learner_builder=_learner,
        store=CheckpointStore(tmp_path / "ckpt"),
        config=EngineConfig(until_idle_seconds=0),
        oversight=Oversight(gate=gate, policy=first),
    )
    engine.run()
    assert first.state == "collecting"
    second = DriftPolicy(DriftMonitor([ScriptedDetector([])]), cfg)
    second_gate = ValidationGate(registry, gate.config)
    connect_drift_policy(second, second_gate)
    engine = Engine(
        source=ListSource(_records(rows), batch_size=5000),
        codec=JsonCodec(CodecConfig()),
        window=CountWindow(BATCH),
        learner_builder=_learner,
        store=CheckpointStore(tmp_path / "ckpt"),
        config=EngineConfig(until_idle_seconds=0),
        oversight=Oversight(gate=second_gate, policy=second),
    )
    summary = engine.run()
    assert second.counts["alarms"] == 1 and summary.drift["drift_dismissed"] == 1
    dismissed = registry.events(kind="drift_dismissed")[0]
    assert dismissed.details["batches"] == 10  # evidence from before and after the restart, counted once


def test_drift_choice_validates_options():
    with pytest.raises(ConfigError, match="not a drift policy setting"):
        DriftChoice(options=("warmup=3",))
    with pytest.raises(ConfigError, match="choose from"):
        DriftChoice(detectors=("cusum",))
    with pytest.raises(ConfigError, match="significance"):
        DriftChoice(options=("significance=2",))
    with pytest.raises(ConfigError, match="cannot be combined"):
        DriftChoice(detectors=("none", "adwin"))


# A burst of flipped labels longer than the evidence window (6 batches against 3): while it
# goes on, the snapshot scores as badly as the live model and the live model, learning the
# flips, catches up -- exactly what a change of the world looks like. Only its end tells.
BURST_AT, BURST = 15_000, 3000


def _burst_rows(count=BURST):
    return poisoned_rows(iter(synthetic_rows("sea", 30_000, seed=1)), "label_flip", BURST_AT, count)


def _clean_accuracy(registry, number: int) -> float:
    rows = list(synthetic_rows("sea", 2000, seed=99))
    X = np.array([r["x"] for r in rows], dtype=np.float32)
    learner = _learner(X.shape[1])
    learner.load_state_dict(registry.load_state(number))
    return float((learner.predict_batch(X) == np.array([r["y"] for r in rows])).mean())


def test_a_burst_longer_than_the_evidence_window_is_rolled_back_when_it_ends_never_adapted_to(tmp_path):
    _, summary, registry, _ = _run(tmp_path, _burst_rows())
    assert summary.drift["adapt"] == 0 and summary.drift["rollback"] == 1, summary.drift
    alarm = registry.events(kind="drift_alarm")[-1]
    assert BURST_AT <= alarm.details["window"]["t:0"][0] <= BURST_AT + 2 * BATCH
    rollback = registry.events(kind="rollback")[0]
    # Decided on the first batches after the burst, on them alone.
    end = BURST_AT + BURST
    assert (
        end <= rollback.details["window"]["t:0"][0] and rollback.details["window"]["t:0"][1] < end + 3 * BATCH
    )
    assert rollback.details["snapshot"] - rollback.details["live"] >= 0.05
    assert rollback.details["waited_events"] >= 3 * BATCH
    assert not registry.events(kind="retrain_request")
    # The gate held through the burst: nothing validated from it, so nothing corrupted served.
    during = [
        v
        for v in registry.history(limit=1000)
        if v.status in ("validated", "rolled_back") and BURST_AT <= v.offsets["t:0"][1] < end
    ]
    assert not during, during
    assert summary.accuracy > 0.88


def test_without_the_wait_the_same_burst_is_adapted_to(tmp_path):
    """``burst_events=0`` is the policy before the wait: it adapts inside the burst."""
    policy = DriftPolicy(DriftMonitor([ErrorDriftDetector("adwin")]), PolicyConfig(burst_events=0))
    _, summary, registry, _ = _run(tmp_path, _burst_rows(), policy)
    assert summary.drift["adapt"] == 1 and summary.drift["rollback"] == 0
    assert registry.events(kind="adapt")[0].details["window"]["t:0"][1] < BURST_AT + BURST


def test_an_anomaly_that_outlasts_the_wait_is_a_change_and_is_adapted_to_in_bounded_time(tmp_path):
    requests = []
    policy = DriftPolicy(
        DriftMonitor([ErrorDriftDetector("adwin")]),
        PolicyConfig(burst_events=4000),
        on_retrain_request=requests.append,
    )
    _, summary, registry, _ = _run(tmp_path, _burst_rows(count=30_000), policy)  # flipped for good
    assert summary.drift["adapt"] >= 1 and summary.drift["rollback"] == 0, summary.drift
    adapt = registry.events(kind="adapt")[-1]
    assert 4000 <= adapt.details["waited_events"] < 4000 + BATCH
    assert adapt.details["recent"]["snapshot"] < 0.5  # the old model is still wrong: the world changed
    assert adapt.details["reference"] - adapt.details["live"] >= 0.05
    assert requests and registry.events(kind="retrain_request")


def test_a_wait_for_a_burst_to_end_survives_a_restart(tmp_path):
    rows = list(_burst_rows())
    first = DriftPolicy(DriftMonitor([ErrorDriftDetector("adwin")]))
    _run(tmp_path, rows[: BURST_AT + 2500], first)
    state = first.snapshot()
    assert first.state == "collecting" and state["alarm"]["waiting"] is True
    assert state["alarm"]["recent"] and state["alarm"]["after_events"] >= 3 * BATCH
    second = DriftPolicy(DriftMonitor([ErrorDriftDetector("adwin")]))
    alarm = orjson.loads(orjson.dumps(state["alarm"]))  # plain data, as in the checkpoint
    second.restore({**state, "alarm": alarm})
    assert second.snapshot()["alarm"] == state["alarm"]
    _, summary, registry, _ = _run(tmp_path, rows, second)  # the same checkpoint and registry
    assert second.counts["alarms"] == 1 and summary.drift["rollback"] == 1 and summary.drift["adapt"] == 0
    assert registry.events(kind="rollback")[0].details["window"]["t:0"][0] >= BURST_AT + BURST


def test_an_open_alarm_checkpointed_before_the_wait_existed_resumes():
    from drift.evidence import PairedEvidence

    old = {
        "signal": {"detector": "adwin", "level": "drift", "evidence": {}},
        "batch": 30,
        "offsets": {"t:0": [0, 499]},
        "reference": 0.9,
        "evidence": PairedEvidence("classification", n=500, batches=1).to_dict(),
        "snapshot_version": None,
        "at": 0.0,
        "older": {},
    }
    policy = DriftPolicy(DriftMonitor([ScriptedDetector([])]))
    policy.restore({"batches": 31, "alarm": old})
    alarm = policy.snapshot()["alarm"]
    assert alarm["waiting"] is False and alarm["after_events"] == 500 and alarm["recent"] == []
