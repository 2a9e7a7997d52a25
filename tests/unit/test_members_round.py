"""A round of ``run --members``: the plan every member derives, and how combine() makes their learners one model.

combine() runs with the members as threads, each over its own gloo process
group (see ``member_group``), as ``test_round_average`` does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from member_group import Group, run_members

from learners.neural.ewc import EWC
from learners.neural.learner import TorchLearner
from learners.neural.round_average import standardizer_moments
from stream.members.sync import (
    MemberSchemaError,
    MemberState,
    RoundPlan,
    check_schemas,
    combine,
    schema_fingerprint,
)

pytestmark = pytest.mark.unit

N_FEATURES = 3


# ----------------------------------------------------------------- RoundPlan
def test_a_plan_sums_the_events_and_goes_on_while_someone_has_work():
    plan = RoundPlan.of(
        [MemberState(events=5, total=50, dirty=True), MemberState(events=7, total=7, idle=True)]
    )
    assert (plan.events, plan.stop, plan.all_idle, plan.commit) == (12, None, False, True)


def test_the_first_member_asking_to_stop_names_the_reason():
    states = [
        MemberState(events=0, total=0),
        MemberState(events=0, total=0, stop="received SIGTERM"),
        MemberState(events=0, total=0, stop="received SIGINT"),
    ]
    plan = RoundPlan.of(states)
    assert plan.stop == "member 1: received SIGTERM"
    assert plan.commit  # the last round is always made durable, dirty or not


def test_every_member_idle_stops_the_run_but_one_busy_member_does_not():
    assert RoundPlan.of([MemberState(0, 0, idle=True)] * 3).stop == "every member idle"
    assert RoundPlan.of([MemberState(0, 0, idle=True), MemberState(0, 0)]).stop is None


def test_max_events_counts_rank_0_total_and_the_others_events_of_this_round():
    # Rank 0's total holds every earlier round already (it absorbed the others'); theirs do not count twice.
    states = [
        MemberState(events=10, total=90),
        MemberState(events=6, total=1_000),
        MemberState(events=4, total=4),
    ]
    assert RoundPlan.of(states, max_events=101).stop is None
    assert RoundPlan.of(states, max_events=100).stop == "learned 100 >= max_events"
    assert RoundPlan.of(states).stop is None


def test_a_stop_reason_beats_idle_which_beats_max_events():
    states = [MemberState(5, 500, idle=True, stop="received SIGTERM"), MemberState(0, 0, idle=True)]
    assert RoundPlan.of(states, max_events=1).stop == "member 0: received SIGTERM"
    assert RoundPlan.of([MemberState(5, 500, idle=True)] * 2, max_events=1).stop == "every member idle"


def test_members_without_a_learner_adopt_the_first_that_has_one():
    states = [MemberState(0, 0), MemberState(3, 3, has_learner=True, n_classes=2),
              MemberState(4, 4, has_learner=True, n_classes=5), MemberState(0, 0)]  # fmt: skip
    plan = RoundPlan.of(states)
    assert (plan.adopt_from, plan.needs_learner, plan.n_classes) == (1, (0, 3), 5)
    nobody = RoundPlan.of([MemberState(0, 0), MemberState(0, 0)])
    assert (nobody.adopt_from, nobody.needs_learner) == (None, ())


def test_only_rank_0_decides_and_consolidates():
    others = RoundPlan.of([MemberState(0, 0), MemberState(0, 0, decided=True, consolidated=True)])
    assert (others.decided, others.consolidated) == (False, False)
    rank0 = RoundPlan.of([MemberState(0, 0, decided=True, consolidated=True), MemberState(0, 0)])
    assert (rank0.decided, rank0.consolidated) == (True, True)


def test_a_quiet_round_commits_nothing():
    assert not RoundPlan.of([MemberState(0, 10), MemberState(0, 0)]).commit
    assert RoundPlan.of([MemberState(0, 10), MemberState(0, 0, dirty=True)]).commit


# ------------------------------------------------------------------- schemas
def _schema(**over) -> dict:
    return {"n_features": 3, "classes": None, "features": None, "n_classes": 2, "unknown_fields": {}, **over}


def test_the_fingerprint_ignores_class_counts_and_unknown_fields_but_not_the_layout():
    base = schema_fingerprint(_schema())
    assert schema_fingerprint(_schema(n_classes=7, unknown_fields={"z": 3})) == base
    assert schema_fingerprint(_schema(n_features=4)) != base
    assert schema_fingerprint(_schema(classes=["a", "b"])) != schema_fingerprint(_schema(classes=["b", "a"]))
    assert schema_fingerprint(_schema(features=["x", "y", "z"])) != base


def test_members_with_different_schemas_are_refused_those_without_a_learner_do_not_count():
    a, b = schema_fingerprint(_schema()), schema_fingerprint(_schema(classes=["no", "yes"]))
    check_schemas([MemberState(1, 1, has_learner=True, schema=a), MemberState(0, 0, schema=b)])
    with pytest.raises(MemberSchemaError, match="--schema"):
        check_schemas(
            [MemberState(1, 1, has_learner=True, schema=a), MemberState(1, 1, has_learner=True, schema=b)]
        )


# ------------------------------------------------------------------- combine
def _learner(*, seed: int = 3, plugins=()) -> TorchLearner:
    return TorchLearner("mlp", n_features=N_FEATURES, device="cpu", seed=seed, lr=0.05, plugins=plugins)


def _rows(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, N_FEATURES)) * (seed + 1) + seed).astype(np.float32)


def _learn(learner: TorchLearner, X: np.ndarray, *, classes: int = 2) -> None:
    for chunk in np.array_split(X, max(1, len(X) // 10)):
        if len(chunk):
            learner.learn_batch(chunk, (np.abs(chunk[:, 0] * 7).astype(np.int64) % classes))


def _members(n: int, *, plugins=lambda: ()) -> list[TorchLearner]:
    """``n`` learners with the one model every member starts a round from (20 rows learned)."""
    first = _learner(plugins=plugins())
    _learn(first, _rows(20, seed=99))
    out = [first]
    for _ in range(n - 1):
        other = _learner(seed=17, plugins=plugins())
        other.load_state_dict(first.state_dict())
        out.append(other)
    return out


def _combine_all(learners, events, plan, start, tmp_path) -> list[dict]:
    group = Group(len(learners), str(tmp_path / "store"))

    def member(rank: int) -> dict:
        return combine(group.member(rank), learners[rank], plan=plan, events=events[rank], start=start)

    moments, errors = run_members(len(learners), member, group)
    assert not errors, errors
    return moments


def _plan(states) -> RoundPlan:
    return RoundPlan.of(states)


def _floats(learner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learner.module.state_dict().items() if v.is_floating_point()}


def test_after_combine_every_member_has_the_event_weighted_average_and_the_exact_moments(tmp_path):
    learners = _members(3)
    start = standardizer_moments(learners[0].module)
    reference = _learner(seed=17)
    reference.load_state_dict(learners[0].state_dict())
    events, rows = [30, 0, 50], [_rows(30, 1), _rows(0, 2), _rows(50, 3)]
    for learner, X in zip(learners, rows):
        _learn(learner, X)
    params = [learner.module.named_parameters() for learner in learners]
    weights = [{k: p.detach().clone() for k, p in named} for named in params]
    states = [MemberState(e, e, has_learner=True, n_classes=2, dirty=True) for e in events]

    moments = _combine_all(learners, events, _plan(states), start, tmp_path)

    reference.module.scaler.update(torch.from_numpy(np.concatenate(rows)))  # one learner that saw every row
    want = standardizer_moments(reference.module)["scaler"]
    for rank, learner in enumerate(learners):
        for name, p in learner.module.named_parameters():
            expected = (
                30 * weights[0][name] + 50 * weights[2][name]
            ) / 80  # a member without events weighs 0
            torch.testing.assert_close(p.detach(), expected, msg=f"member {rank}: {name}")
        for got, exp in zip(moments[rank]["scaler"], want):
            torch.testing.assert_close(got.double(), exp.double(), rtol=1e-6, atol=1e-6)
        assert moments[rank]["scaler"][0].item() == 20 + 80  # the start's rows and every member's, once each
    for name, value in _floats(learners[1]).items():  # ... and buffers alike: one model
        torch.testing.assert_close(value, _floats(learners[0])[name])
        torch.testing.assert_close(value, _floats(learners[2])[name])


def test_classes_grow_to_the_most_any_member_has_seen(tmp_path):
    learners = _members(2)
    start = standardizer_moments(learners[0].module)
    learners[1].grow_classes(4)
    _learn(learners[0], _rows(20, 5))
    _learn(learners[1], _rows(20, 6), classes=4)
    states = [
        MemberState(20, 20, has_learner=True, n_classes=2),
        MemberState(20, 20, has_learner=True, n_classes=4),
    ]

    _combine_all(learners, [20, 20], _plan(states), start, tmp_path)

    assert [learner.n_classes for learner in learners] == [4, 4]
    for name, value in _floats(learners[0]).items():
        torch.testing.assert_close(value, _floats(learners[1])[name])
    head = list(learners[0].module.parameters())[-1]
    assert head.shape[0] == 4  # the output layer grew on the member that had seen 2 classes


def test_when_rank_0_decided_everyone_takes_its_model_and_the_others_work_is_dropped(tmp_path):
    learners = _members(3)
    start = standardizer_moments(learners[0].module)
    for rank, learner in enumerate(learners):
        _learn(learner, _rows(10 * (rank + 1), rank))
    rank0 = _floats(learners[0])
    states = [MemberState(10 * (r + 1), 0, has_learner=True, n_classes=2, decided=r == 0) for r in range(3)]
    plan = _plan(states)
    assert plan.decided

    _combine_all(learners, [10, 20, 30], plan, start, tmp_path)

    for learner in learners:
        for name, value in _floats(learner).items():
            torch.testing.assert_close(value, rank0[name])


def test_when_rank_0_consolidated_its_ewc_anchors_and_fisher_go_to_everyone(tmp_path):
    learners = _members(2, plugins=lambda: [EWC(strength=5.0, consolidate_every=None)])
    start = standardizer_moments(learners[0].module)
    for rank, learner in enumerate(learners):
        _learn(learner, _rows(20, rank + 10))
    assert learners[0].plugins[0].consolidate()  # what rank 0's gate does on a validated version
    assert learners[1].plugins[0].state_dict()["consolidations"] == 0
    sent = learners[0].plugins[0].state_dict()
    states = [MemberState(20, 20, has_learner=True, n_classes=2, consolidated=r == 0) for r in range(2)]

    _combine_all(learners, [20, 20], _plan(states), start, tmp_path)

    got = learners[1].plugins[0].state_dict()
    assert got["consolidations"] == 1
    assert sorted(got["fisher"]) == sorted(sent["fisher"]) and sent["fisher"]
    for part in ("fisher", "anchors"):
        for name, value in sent[part].items():
            torch.testing.assert_close(got[part][name], value)


def test_without_a_consolidation_each_member_keeps_its_own_ewc_state(tmp_path):
    learners = _members(2, plugins=lambda: [EWC(strength=5.0, consolidate_every=None)])
    start = standardizer_moments(learners[0].module)
    _learn(learners[0], _rows(20, 1))
    _learn(learners[1], _rows(20, 2))
    learners[0].plugins[0].consolidate()
    states = [MemberState(20, 20, has_learner=True, n_classes=2)] * 2

    _combine_all(learners, [20, 20], _plan(states), start, tmp_path)

    assert learners[1].plugins[0].state_dict()["consolidations"] == 0
