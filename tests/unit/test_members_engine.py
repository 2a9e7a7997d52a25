"""MemberEngine, members as threads: every event learned exactly once across members, through crashes and restarts.

Each member reads its own partitions from an in-memory source; rank 0 writes
every round's checkpoint into the shared directory. A crash is a source that
raises at a chosen poll: that member's thread fails, its failure breaks the
others' next collective (``member_group``), and every member is started again
from the last committed round -- what torchrun's agent does with processes.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from member_group import Group, run_members

from learners.neural.learner import TorchLearner
from learners.neural.round_average import standardizer_moments
from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.records import TopicPartition
from stream.engine.checkpoint import CheckpointStore
from stream.engine.config import EngineConfig
from stream.engine.gate import GateConfig, ValidationGate
from stream.engine.oversight import Oversight
from stream.members.assign import IdleSource, member_partitions
from stream.members.engine import MemberEngine, MemberRole
from stream.testing.doubles import Abort, ListSource, make_records
from stream.window.count import CountWindow

pytestmark = pytest.mark.unit

N_FEATURES = 4
PARTITIONS = 5


def make_member(
    rank, group, records, ckpt_dir, *, abort_at_poll=None, max_events=None, partitions=None, gate=None
):
    parts = sorted({TopicPartition(r.topic, r.partition) for r in records} | set(partitions or ()))
    mine = member_partitions(parts, rank=rank, world=group.world)
    own = [r for r in records if TopicPartition(r.topic, r.partition) in set(mine)]
    source = ListSource(own, batch_size=23, abort_at_poll=abort_at_poll) if mine else IdleSource()
    directory = ckpt_dir if rank == 0 else ckpt_dir / "members" / f"rank-{rank}"
    dist = group.member(rank)
    return MemberEngine(
        member=MemberRole(dist, mine, until_idle=0, max_events=max_events, gated=gate is not None),
        oversight=Oversight(gate=gate if rank == 0 else None),
        source=source,
        codec=JsonCodec(CodecConfig(n_features=N_FEATURES)),
        window=CountWindow(20),
        learner_builder=lambda d: TorchLearner(n_features=d, device="cpu", seed=1, lr=0.05),
        store=CheckpointStore(directory),
        config=EngineConfig(
            until_idle_seconds=None,
            ledger=True,
            checkpoint_every_batches=2,
            checkpoint_every_seconds=None,
            poll_timeout_ms=0,
        ),  # fmt: skip
    )


def start(world, records, ckpt_dir, tmp_path, n, *, crash=None, engines=None, **member):
    """One start of every member; ``crash=(rank, poll)`` makes that member's source raise there."""
    group = Group(world, str(tmp_path / f"store-{n}"), start=n)
    engines = {} if engines is None else engines

    def run(rank):
        abort = crash[1] if crash is not None and crash[0] == rank else None
        engines[rank] = make_member(rank, group, records, ckpt_dir, abort_at_poll=abort, **member)
        return engines[rank].run()

    return run_members(world, run, group)


def committed(ckpt_dir):
    ckpt = CheckpointStore(ckpt_dir).latest()
    counts = dict(zip(ckpt.ledger["ids"], np.asarray(ckpt.ledger["counts"]).tolist()))
    return ckpt, counts


def assert_exactly_once(ckpt_dir, records):
    ckpt, counts = committed(ckpt_dir)
    expected = {f"e{i}" for i in range(len(records))}
    assert set(counts) == expected, f"lost: {sorted(expected - set(counts))[:5]}"
    assert max(counts.values()) == 1, f"learned twice: {[i for i, c in counts.items() if c > 1][:5]}"
    ends = {}
    for r in records:
        ends[TopicPartition(r.topic, r.partition)] = r.offset + 1
    assert ckpt.positions == ends  # every member's partitions, each at its end
    assert ckpt.counters["events_learned"] == len(records)
    return ckpt


@pytest.mark.parametrize("world", [2, 3])
def test_members_learn_every_event_once_and_rank_0_commits_it_all(world, tmp_path):
    records = make_records(600, n_features=N_FEATURES, partitions=PARTITIONS, seed=world)
    summaries, errors = start(world, records, tmp_path / "ckpt", tmp_path, 0)
    assert not errors, errors
    assert_exactly_once(tmp_path / "ckpt", records)
    assert {s.stopped_because for s in summaries} == {"every member idle"}  # they stopped together
    assert summaries[0].events_learned == len(records)  # rank 0 counts the whole model's events
    assert not list((tmp_path / "ckpt" / "members").glob("rank-*/*.ckpt*"))  # only rank 0 writes checkpoints


def assert_one_model(engines, events):
    """Every member ends with the same standardiser moments, which count every event once."""
    moments = {
        rank: standardizer_moments(engine.learner.module)["scaler"] for rank, engine in engines.items()
    }
    for rank, (count, mean, m2) in moments.items():
        assert count.item() == events, f"member {rank} counted {count.item():g} events, not {events}"
        torch.testing.assert_close(mean, moments[0][1])
        torch.testing.assert_close(m2, moments[0][2])


def test_more_members_than_partitions_the_idle_one_adopts_the_model_and_adds_nothing(tmp_path):
    records = make_records(200, n_features=N_FEATURES, partitions=2)
    engines = {}
    summaries, errors = start(3, records, tmp_path / "ckpt", tmp_path, 0, engines=engines)
    assert not errors, errors
    assert_exactly_once(tmp_path / "ckpt", records)
    assert_one_model(engines, len(records))


def test_rank_0_without_events_adopts_and_commits_moments_that_count_every_event_once(tmp_path):
    # Rank 0 owns the empty partition 0: member 1 builds the learner, rank 0 adopts it at the first round.
    records = [r for r in make_records(300, n_features=N_FEATURES, partitions=2) if r.partition == 1]
    engines = {}
    summaries, errors = start(
        2, records, tmp_path / "ckpt", tmp_path, 0, engines=engines, partitions=[TopicPartition("test", 0)]
    )
    assert not errors, errors
    assert engines[0].member.partitions == [TopicPartition("test", 0)]
    ckpt, counts = committed(tmp_path / "ckpt")
    assert len(counts) == len(records) and max(counts.values()) == 1
    assert_one_model(engines, len(records))
    saved = TorchLearner(n_features=N_FEATURES, device="cpu")
    saved.load_state_dict(ckpt.learner)
    assert standardizer_moments(saved.module)["scaler"][0].item() == len(records)  # what rank 0 publishes


def test_max_events_in_all_stops_every_member_after_the_same_round(tmp_path):
    records = make_records(600, n_features=N_FEATURES, partitions=PARTITIONS)
    summaries, errors = start(2, records, tmp_path / "ckpt", tmp_path, 0, max_events=200)
    assert not errors, errors
    ckpt, counts = committed(tmp_path / "ckpt")
    assert {s.stopped_because for s in summaries} == {summaries[0].stopped_because}
    assert "max_events" in summaries[0].stopped_because
    assert 200 <= ckpt.counters["events_learned"] == sum(counts.values()) < len(records)
    assert max(counts.values()) == 1


@pytest.mark.parametrize("seed", range(4))
def test_crashes_of_any_member_then_restarts_learn_every_event_exactly_once(seed, tmp_path):
    rng = random.Random(seed)
    world = rng.choice([2, 3])
    records = make_records(700, n_features=N_FEATURES, partitions=PARTITIONS, seed=seed)
    ckpt_dir = tmp_path / "ckpt"
    crashes = 0
    for n in range(3):
        crash = (rng.randrange(world), rng.randint(1, 8))
        _, errors = start(world, records, ckpt_dir, tmp_path, n, crash=crash)
        if errors:
            crashes += 1
            assert isinstance(errors[crash[0]], Abort), errors  # the others failed at a collective
    summaries, errors = start(world, records, ckpt_dir, tmp_path, 3)
    assert not errors, errors
    assert crashes >= 1
    assert_exactly_once(ckpt_dir, records)
    assert summaries[0].events_learned == len(records)


def test_rank_0s_gate_judges_each_rounds_model_on_every_members_first_batch_after_it(tmp_path):
    """Each member's holdout (one window, 20 events) is below the gate's minimum of 50: only the members'
    holdouts together are evidence enough, so every published version was judged on several members' events."""
    from serving.registry.file_backend import FileRegistry

    records = make_records(1200, n_features=N_FEATURES, partitions=PARTITIONS)
    registry = FileRegistry(str(tmp_path / "registry"))
    gate = ValidationGate(registry, GateConfig(every_batches=1, holdout_min_events=50, background=False))
    start(3, records, tmp_path / "ckpt", tmp_path, 0, gate=gate)
    assert_exactly_once(tmp_path / "ckpt", records)
    assert gate.counts["published"] >= 2, gate.counts
    versions = registry.history()
    owners = [{int(key.rsplit(":", 1)[1]) % 3 for key in v.holdout} for v in versions]
    assert all(len(members) >= 3 for members in owners), owners  # partitions of every member, not rank 0's
    assert any(v.status == "validated" for v in versions)
