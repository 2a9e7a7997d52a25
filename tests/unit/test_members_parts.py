"""The small parts of ``run --members``: shards, the partition split, the launcher's arguments, the refusals."""

from __future__ import annotations

import copy
import os
import subprocess
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from member_group import Group, run_members

from stream.core.errors import ConfigError, TopicNotFoundError
from stream.core.records import TopicPartition
from stream.engine.dedup import RecentIds, hash_ids
from stream.engine.ledger import LearnLedger
from stream.members.assign import IdleSource, agreed_partitions, member_partitions
from stream.members.launch import MEMBER_ENV, MemberLaunch, is_member, member_args
from stream.members.shard import RoundRecentIds, absorb_ledger, add_counters, minus_counters

pytestmark = pytest.mark.unit


# --------------------------------------------------------------------- shard
def test_counters_add_and_subtract_by_name_and_drop_zero_reasons():
    a = {"events_learned": 10, "squared_error": 2.5, "dead_letters": {"bad json": 3, "late": 1}}
    b = {"events_learned": 4, "correct": 2, "dead_letters": {"bad json": 3}}
    assert add_counters(a, b) == {
        "correct": 2,
        "dead_letters": {"bad json": 6, "late": 1},
        "events_learned": 14,
        "squared_error": 2.5,
    }
    assert minus_counters(a, b) == {
        "correct": -2,
        "dead_letters": {"late": 1},
        "events_learned": 6,
        "squared_error": 2.5,
    }
    assert minus_counters(add_counters(a, b), b) == {**a, "correct": 0}


def test_absorbing_a_ledger_keeps_repeats_counted():
    mine = LearnLedger()
    mine.record(np.array(["a", "b"], dtype=object))
    other = LearnLedger()
    other.record(np.array(["b", "c", "c"], dtype=object))
    absorb_ledger(mine, other.snapshot())
    absorb_ledger(mine, None)
    absorb_ledger(mine, LearnLedger().snapshot())
    assert (mine.count("a"), mine.count("b"), mine.count("c"), mine.total) == (1, 2, 2, 5)


def test_a_round_window_hands_over_what_it_admitted_since_the_last_round():
    recent = RoundRecentIds.of(RecentIds(capacity=1_000))
    assert recent.admit(np.array(["a", "b", "a"])).tolist() == [True, True, False]
    assert recent.admit(np.array(["b", "c"])).tolist() == [False, True]
    first = recent.take_round()
    assert sorted(first.tolist()) == sorted(hash_ids(np.array(["a", "b", "c"])).tolist())
    assert recent.take_round().tolist() == []  # handed over once
    assert recent.admit(np.array(["a"])).tolist() == [False]  # ... but still remembered here
    # Rank 0 takes them in: a member that reads them again after a restart sees repeats.
    rank0 = RecentIds(capacity=1_000)
    rank0.admit_hashes(first)
    assert rank0.contains(np.array(["a", "b", "c", "d"])).tolist() == [True, True, True, False]
    assert rank0.admit(np.array(["c", "d"])).tolist() == [False, True]


def test_a_round_window_keeps_the_memory_it_was_made_from():
    old = RecentIds(capacity=1_000)
    old.admit(np.array(["x"]))
    recent = RoundRecentIds.of(old)
    assert recent.contains(np.array(["x"])).tolist() == [True]
    assert recent.take_round().tolist() == []  # what it restored is not this round's


# -------------------------------------------------------------------- launch
@pytest.mark.parametrize("spelled", ["apart", "joined"])
def test_a_member_gets_the_run_options_without_the_launchers(spelled):
    launcher = [("--nodes", "1:3"), ("--rdzv-endpoint", "10.0.0.5:29500"), ("--rdzv-id", "job7"),
                ("--member-restarts", "5")]  # fmt: skip
    flags = [f for name, v in launcher for f in ((name, v) if spelled == "apart" else (f"{name}={v}",))]
    argv = [
        "/usr/bin/streamlearn",
        "run",
        "--topic",
        "t",
        *flags[:2],
        "--members",
        "3",
        *flags[2:],
        "--ledger",
    ]
    assert member_args(argv) == ["--topic", "t", "--members", "3", "--ledger"]


def test_member_args_keeps_values_that_only_look_like_launcher_options():
    argv = ["streamlearn", "run", "--topic", "--nodes-topic", "--checkpoint-dir=--rdzv-id"]
    assert member_args(argv) == ["--topic", "--nodes-topic", "--checkpoint-dir=--rdzv-id"]
    with pytest.raises(ConfigError):
        member_args(["streamlearn", "replay", "--members", "2"])


@pytest.mark.parametrize("torchrun_ended", [True, False], ids=["restarts-spent", "still-restarting"])
def test_the_launcher_reports_a_members_fatal_mistake_whether_or_not_torchrun_ended_first(
    torchrun_ended, tmp_path, monkeypatch
):
    from stream.members import launch

    class Torchrun:  # no process: the member notes its mistake as torchrun "starts"
        def __init__(self, cmd, env, process_group=None):
            launch.note_fatal(str(tmp_path), "the members learned different input schemas")
            self.code, self.signals = (1 if torchrun_ended else None), []

        def wait(self, timeout=None):
            if self.code is None:
                raise subprocess.TimeoutExpired("torchrun", timeout)
            return self.code

        def send_signal(self, signum):
            self.signals.append(signum)
            self.code = 1

    monkeypatch.setattr(launch.subprocess, "Popen", Torchrun)
    code, mistake = launch.launch_members(MemberLaunch(members=2), ["run", "--members", "2"], str(tmp_path))
    assert (code, mistake) == (2, "the members learned different input schemas")


def test_a_bounded_runs_verdict_keeps_its_exit_code_and_a_stop_request_is_read_back(tmp_path):
    from stream.members import launch

    launch.note_fatal(str(tmp_path), "3.0% of the records were not learned", code=1)
    assert launch._read_fatal(launch.fatal_path(str(tmp_path))) == (1, "3.0% of the records were not learned")
    assert launch.stop_requested(str(tmp_path)) is None
    os.makedirs(os.path.dirname(launch.stop_path(str(tmp_path))), exist_ok=True)
    with open(launch.stop_path(str(tmp_path)), "w") as f:
        f.write("received SIGTERM")
    assert launch.stop_requested(str(tmp_path)) == "received SIGTERM"


def test_torchrun_arguments_standalone_and_across_machines():
    one = MemberLaunch(members=3, restarts=7).torchrun_args()
    assert one[:5] == ["--standalone", "--nnodes", "1", "--nproc-per-node", "3"]
    assert one[one.index("--max-restarts") + 1] == "7" and "--monitor-interval" in one
    many = MemberLaunch(
        members=2, nodes="2:4", rdzv_endpoint="10.0.0.5:29500", rdzv_id="job7"
    ).torchrun_args()
    assert "--standalone" not in many
    assert many[many.index("--nnodes") + 1] == "2:4"
    assert many[many.index("--nproc-per-node") + 1] == "2"
    assert "10.0.0.5:29500" in " ".join(many) and "job7" in " ".join(many)
    with pytest.raises(ConfigError):
        MemberLaunch(members=0)
    with pytest.raises(ConfigError):
        MemberLaunch(members=1, restarts=-1)


def test_a_member_is_a_process_torchrun_started_with_the_member_mark(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv(MEMBER_ENV, "1")
    assert not is_member()  # the mark alone: not under torchrun
    monkeypatch.setenv("RANK", "2")
    assert is_member()
    monkeypatch.setenv(MEMBER_ENV, "0")
    assert not is_member()


# -------------------------------------------------------------------- assign
@given(
    n_partitions=st.integers(0, 40),
    world=st.integers(1, 12),
    topics=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True),
)
def test_every_partition_goes_to_exactly_one_member(n_partitions, world, topics):
    parts = [TopicPartition(t, p) for t in topics for p in range(n_partitions)]
    shuffled = parts[::-1]  # every member lists them in its own order
    split = [member_partitions(shuffled if r % 2 else parts, rank=r, world=world) for r in range(world)]
    taken = [tp for mine in split for tp in mine]
    assert sorted(taken) == sorted(parts) and len(taken) == len(set(taken))
    assert max(map(len, split)) - min(map(len, split)) <= 1  # as even as it can be


def test_one_topic_partition_p_goes_to_member_p_mod_world():
    parts = [TopicPartition("t", p) for p in range(7)]
    assert [tp.partition for tp in member_partitions(parts, rank=2, world=3)] == [2, 5]


def test_members_split_the_partitions_rank_0_listed_even_when_their_own_metadata_differs(tmp_path):
    # A topic just given 6 partitions: the metadata member 1 got still says 4.
    seen = {0: [TopicPartition("t", p) for p in range(6)], 1: [TopicPartition("t", p) for p in range(4)]}
    group = Group(2, str(tmp_path / "store"))
    split, errors = run_members(
        2,
        lambda r: member_partitions(agreed_partitions(group.member(r), lambda: seen[r]), rank=r, world=2),
        group,
    )
    assert not errors
    taken = [tp.partition for mine in split for tp in mine]
    assert sorted(taken) == list(range(6))  # each partition read by exactly one member


def test_rank_0_failing_to_list_the_partitions_fails_every_member_alike(tmp_path):
    def lister():
        raise TopicNotFoundError("topic(s) t not found")

    def member(rank):
        try:
            agreed_partitions(group.member(rank), lister)
        except TopicNotFoundError as exc:  # returned, not raised: the group's barrier stays whole
            return str(exc)

    group = Group(3, str(tmp_path / "store"))
    raised, errors = run_members(3, member, group)
    assert not errors and raised == ["topic(s) t not found"] * 3


def test_a_member_without_partitions_is_assigned_nothing_and_reads_nothing():
    class Handler:
        assigned = None

        def on_assigned(self, partitions):
            self.assigned = list(partitions)
            return {}

    handler, src = Handler(), IdleSource()
    src.open(handler)
    assert handler.assigned == []  # the idle clock starts
    assert src.poll(0, 100) == {} and src.lag() == 0


# --------------------------------------------------------------------- build
@pytest.fixture
def member_spec(tmp_path):
    """A valid ``run --members`` spec, as the CLI builds it (no broker is contacted to build it)."""
    import click

    from stream.cli.options import drift_from, learner_from
    from stream.cli.run import RUN_OPTIONS, run_spec
    from stream.cli.table import with_options

    captured = {}

    @click.command()
    @with_options(RUN_OPTIONS)
    def show(opts):
        captured["spec"] = run_spec(opts, learner=learner_from(opts), drift=drift_from(opts))

    args = ["--topic", "t", "--bootstrap", "127.0.0.1:1", "--members", "2"]
    ran = CliRunner().invoke(show, [*args, "--checkpoint-dir", str(tmp_path)])
    assert ran.exit_code == 0, ran.output
    return captured["spec"]


def _with(spec, **fields):
    """``spec`` with ``fields`` set past its own checks (a combination only check_members must refuse)."""
    out = copy.copy(spec)
    for name, value in fields.items():
        object.__setattr__(out, name, value)
    return out


def test_check_members_accepts_a_plain_topic_run_and_refuses_what_it_cannot_do(member_spec):
    from stream.members.build import check_members

    check_members(member_spec)
    refused = {
        "--labels-topic": _with(member_spec, join=object()),
        "--intake process": replace(member_spec, intake=replace(member_spec.intake, mode="process")),
        "--window": replace(member_spec, window="event:1s"),
        "--file": replace(member_spec, source=replace(member_spec.source, files=("x.jsonl",))),
    }
    for flag, spec in refused.items():
        with pytest.raises(ConfigError, match=flag.split()[0]):
            check_members(spec)

    class Scheduled:
        scheduled = True

    with pytest.raises(ConfigError, match="--retrain"):
        check_members(member_spec, retrain=Scheduled())


@pytest.mark.parametrize(
    "args",
    [
        ["--file", "x.jsonl"],
        ["--topic", "t", "--bootstrap", "127.0.0.1:1", "--partition", "t:0"],
        ["--topic", "t", "--bootstrap", "127.0.0.1:1", "--group", "g"],
        ["--topic", "t", "--bootstrap", "127.0.0.1:1", "--model", "river.linear_model.LogisticRegression"],
        ["--topic", "t", "--bootstrap", "127.0.0.1:1", "--window", "event:1s"],
        ["--topic", "t", "--bootstrap", "127.0.0.1:1", "--labels-topic", "labels"],
        ["--topic", "t", "--bootstrap", "127.0.0.1:1", "--intake", "process"],
        ["--topic", "t", "--bootstrap", "127.0.0.1:1", "--retrain-every-events", "1000"],
    ],
    ids=["file", "partition", "group", "river", "event-window", "labels", "intake", "retrain"],
)
def test_run_members_refuses_in_one_line_before_reaching_a_broker_or_starting_anything(
    args, monkeypatch, tmp_path
):
    import stream.cli.errors as errors
    import stream.members.launch as launch
    from stream.cli.main import main

    def must_not(*_a, **_k):
        raise AssertionError("contacted a broker or started a process before refusing")

    monkeypatch.setattr(errors, "require_broker", must_not)
    monkeypatch.setattr(launch, "launch_members", must_not)
    monkeypatch.setattr(launch.subprocess, "Popen", must_not)
    ran = CliRunner().invoke(main, ["run", "--members", "2", "--checkpoint-dir", str(tmp_path), *args])
    assert ran.exit_code == 2, ran.output
    lines = ran.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamlearn: error: --members"), ran.output


def test_only_a_lost_peer_becomes_the_one_line_members_lost_error():
    from stream.members.engine import MembersLostError, members_reachable

    with pytest.raises(MembersLostError, match="member 1 lost the other members"):
        with members_reachable(1):
            raise RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:20871")
    with pytest.raises(RuntimeError, match="size mismatch") as caught:
        with members_reachable(1):
            raise RuntimeError("Error(s) in loading state_dict: size mismatch for 0.weight")
    assert not isinstance(caught.value, MembersLostError)
