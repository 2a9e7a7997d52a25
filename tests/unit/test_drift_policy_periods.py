"""The drift policy's warm-up, cool-down and raised plasticity are counted in events, not batches.

Each runs the policy alone over batches of several sizes: a period must last
the same number of events (rounded up to whole batches) whatever the window.
"""

from __future__ import annotations

import numpy as np
import pytest

from drift.choice import DriftChoice
from drift.detectors import DriftMonitor
from drift.policy import DriftPolicy
from drift.policy_config import PolicyConfig
from drift.testing import ScriptedDetector
from stream.core.errors import ConfigError
from stream.replay.config import ReplayConfig
from stream.testing.doubles import make_batch


class _Plastic:
    """An :class:`~learners.base.Adaptable` stand-in that records when its plasticity is raised and restored."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def adapt(self, *, ewc_factor: float = 0.1, replay_refresh: float = 0.5) -> dict:
        self.calls.append("adapt")
        return {"ewc_strength": [100.0, 100.0 * ewc_factor]}

    def restore_plasticity(self) -> dict:
        self.calls.append("restore")
        return {"ewc_strength": [10.0, 100.0]}


def _feed(policy, size, n, *, learner=None, wrong=lambda i: False):
    """Observe ``n`` batches of ``size`` events; per batch, the events observed before it and what happened."""
    learner = learner if learner is not None else _Plastic()
    out = []
    for i in range(n):
        batch = make_batch(size, n_features=3, start_offset=i * size)
        pred = 1 - batch.y if wrong(i) else batch.y  # all wrong / all right
        calls = len(learner.calls)
        decision = policy.observe(learner, batch, np.asarray(pred))
        out.append(
            {
                "start": i * size,
                "alarm": policy.new_alarm is not None,
                "decision": None if decision is None else decision.kind,
                "calls": learner.calls[calls:],
                "suppressed": policy.counts["suppressed"],
            }
        )
    return out


@pytest.mark.parametrize("size", [100, 300, 500])
def test_the_warm_up_lasts_the_same_number_of_events_whatever_the_batch_size(size):
    detector = ScriptedDetector()
    policy = DriftPolicy(DriftMonitor([detector]), PolicyConfig(warmup_events=2000))
    fed = []
    for i in range(30):
        batch = make_batch(size, n_features=3, start_offset=i * size)
        policy.observe(_Plastic(), batch, batch.y)
        fed.append(detector.seen)
    first_fed = fed.index(1)  # = the number of warm-up batches
    # The first batch fed to the detectors starts at the first event at or after 2000: the
    # batch that crosses 2000 (300: events 1800..2099) is still warm-up.
    assert 2000 <= first_fed * size < 2000 + size
    assert {100: 20, 300: 7, 500: 4}[size] == first_fed  # warm-up batches


def test_no_warm_up_feeds_the_detectors_from_the_first_batch():
    detector = ScriptedDetector()
    policy = DriftPolicy(DriftMonitor([detector]), PolicyConfig(warmup_events=0))
    _feed(policy, 100, 1)
    assert detector.seen == 1


@pytest.mark.parametrize("size", [100, 250])
def test_the_cool_down_after_a_dismissal_lasts_cooldown_events_from_the_decision_batch(size):
    cfg = PolicyConfig(warmup_events=0, evidence_batches=1, min_evidence_events=1, cooldown_events=1000)
    policy = DriftPolicy(DriftMonitor([ScriptedDetector(range(1, 1000))]), cfg)  # fires on every update
    log = _feed(policy, size, 20)
    alarms = [r["start"] for r in log if r["alarm"]]
    dismissed = [r["start"] for r in log if r["decision"] == "drift_dismissed"]
    assert alarms[0] == 0 and dismissed[0] == size  # alarm, one batch of evidence, dismissed
    # Alarms on every batch that starts within 1000 events of the decision batch's first event
    # are noted only; the first batch starting at or after it opens the next alarm.
    assert alarms[1] == dismissed[0] + 1000
    assert log[alarms[1] // size - 1]["suppressed"] == 1000 // size - 1


def test_the_policy_reports_cooling_until_the_cool_down_events_are_observed():
    cfg = PolicyConfig(warmup_events=0, evidence_batches=1, min_evidence_events=1, cooldown_events=1000)
    policy = DriftPolicy(DriftMonitor([ScriptedDetector([1])]), cfg)
    states = []
    for i in range(14):
        batch = make_batch(100, n_features=3, start_offset=i * 100)
        policy.observe(_Plastic(), batch, batch.y)
        states.append(policy.state)
    # Dismissed on batch 2 (events 100..199): cooling while the next batch starts before 1100.
    assert states[:2] == ["collecting", "cooling"]
    assert states.index("watching") == 10 and set(states[1:10]) == {"cooling"}


@pytest.mark.parametrize("size", [100, 250])
def test_raised_plasticity_lasts_plasticity_events_learned_from_the_adapt_on(size):
    cfg = PolicyConfig(
        warmup_events=0, evidence_batches=1, min_evidence_events=1, cooldown_events=0, plasticity_events=1000
    )
    policy = DriftPolicy(DriftMonitor([ScriptedDetector([3])]), cfg)
    learner = _Plastic()
    # Right before the alarm (the level), all wrong after it: degraded, no snapshot -> adapt.
    log = _feed(policy, size, 20, learner=learner, wrong=lambda i: i >= 2)
    adapted = [r["start"] for r in log if "adapt" in r["calls"]]
    restored = [r["start"] for r in log if "restore" in r["calls"]]
    assert len(adapted) == 1 and len(restored) == 1
    # The adapt batch is the first learned with raised plasticity; restored before the batch
    # that starts 1000 events later is learned.
    assert restored[0] - adapted[0] == 1000
    assert policy.snapshot()["plasticity_until_events"] is None


def test_the_state_keeps_the_event_counts():
    cfg = PolicyConfig(warmup_events=0, evidence_batches=1, min_evidence_events=1, cooldown_events=1000)
    policy = DriftPolicy(DriftMonitor([ScriptedDetector([1])]), cfg)
    _feed(policy, 100, 3)
    state = policy.snapshot()
    assert state["batches"] == 3 and state["events"] == 300
    assert state["cooldown_until_events"] == 1100 and state["plasticity_until_events"] is None
    again = DriftPolicy(DriftMonitor([ScriptedDetector([])]), cfg)
    again.restore(state)
    assert again.snapshot() == state and again.state == "cooling"


def test_a_state_from_the_batch_counting_version_loads_and_its_periods_restart_safely():
    old = {"batches": 40, "cooldown_until": 45, "plasticity_until": 50, "counts": {"adapt": 1}}
    detector = ScriptedDetector()
    policy = DriftPolicy(DriftMonitor([detector]), PolicyConfig(warmup_events=200))
    policy.restore(old)
    assert policy.state == "watching"  # no cool-down
    learner = _Plastic()
    log = _feed(policy, 100, 3, learner=learner)
    assert log[0]["calls"] == ["restore"] and learner.calls == ["restore"]  # restored on the next batch
    assert detector.seen == 1  # the warm-up ran again: 200 events
    state = policy.snapshot()
    assert state["batches"] == 43 and state["events"] == 300 and state["counts"]["adapt"] == 1
    assert state["cooldown_until_events"] == 0 and state["plasticity_until_events"] is None
    assert "cooldown_until" not in state and "plasticity_until" not in state


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("warmup_batches", "warmup_events"),
        ("cooldown_batches", "cooldown_events"),
        ("plasticity_batches", "plasticity_events"),
    ],
)
def test_an_option_counted_in_batches_is_refused_with_its_replacement_named(old, new):
    message = (
        f"drift option {old} was replaced by {new} "
        "(counted in events, not batches: 20 batches of count:1000 = 20000 events)"
    )
    with pytest.raises(ConfigError) as cli:
        DriftChoice(options=(f"{old}=20",))
    assert str(cli.value) == message
    with pytest.raises(ConfigError) as replay:
        ReplayConfig.from_mapping({"drift": {"options": {old: 20}}}, base=ReplayConfig.base())
    assert str(replay.value) == f"config: {message}"  # prefixed with where, as every config error
    with pytest.raises(ConfigError, match=f"replaced by {new}"):
        PolicyConfig.from_options({old: 20})
    assert DriftChoice(options=(f"{new}=20000",)).policy_config() == PolicyConfig(**{new: 20000})


def test_the_event_counted_settings_are_validated():
    for name in ("warmup_events", "cooldown_events", "plasticity_events"):
        with pytest.raises(ConfigError, match=f"{name} must be >= 0"):
            PolicyConfig(**{name: -1})
    with pytest.raises(ConfigError, match="not a drift policy setting"):
        PolicyConfig.from_options({"warmup": 3})
    with pytest.raises(ConfigError, match="--drift-option"):
        DriftChoice(options=("warmup_events=soon",))
