"""``streamlearn run --intake process`` on the embedded broker: exactly once, dead letters, a SIGKILL of either process.

The daemon polls and decodes in a child process; these tests check from the
outside what must not change: every event learned exactly once (the ledger in
the checkpoint), the poison records dead-lettered with their reasons, no
orphan child after a SIGKILL of the daemon, and a one-line stop when the child dies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import orjson
import pytest
from cli_processes import cli, embedded_bootstrap

from stream.engine.checkpoint import CheckpointStore
from stream.engine.ledger import LearnLedger

pytestmark = pytest.mark.e2e

N = 6_000
POISON = {100: b"{not json", 2_500: b'{"id": "p", "x": [1, 2, 3], "y": 0}', 5_000: b"[]"}


@pytest.fixture(scope="module")
def bootstrap():
    yield from embedded_bootstrap()


@pytest.fixture(scope="module")
def topic(bootstrap) -> str:
    """N good records with ids e0..e(N-1) over 2 partitions, and the POISON records among them."""
    from kafka import KafkaProducer

    from stream.sources.produce import ensure_topic

    name = f"intake-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, name, 2)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(N):
        if i in POISON:
            producer.send(name, POISON[i], partition=i % 2)
        producer.send(
            name,
            orjson.dumps({"id": f"e{i}", "x": [i % 7, (3 * i) % 5], "y": int(i % 7 > 3)}),
            partition=i % 2,
        )
    producer.flush()
    producer.close()
    return name


def run_args(bootstrap, topic, tmp_path, *extra) -> list[str]:
    return [
        "run", "--bootstrap", bootstrap, "--topic", topic, "--intake", "process", "--ledger",
        "--checkpoint-dir", str(tmp_path / "ck"), "--dead-letter", f"file:{tmp_path / 'dead.jsonl'}",
        "--window", "count:300", "--max-poll-records", "500", "--checkpoint-every-batches", "2",
        "--quiet", *extra,
    ]  # fmt: skip


def assert_learned_exactly_once(tmp_path) -> None:
    ckpt = CheckpointStore(tmp_path / "ck").latest()
    ledger = LearnLedger.from_snapshot(ckpt.ledger)
    assert not ledger.duplicated(), f"learned twice: {list(ledger.duplicated().items())[:5]}"
    assert ledger.ids() == {f"e{i}" for i in range(N)}
    assert ckpt.counters["events_learned"] == N
    assert sum(ckpt.positions.values()) == N + len(POISON)
    letters = [orjson.loads(line) for line in (tmp_path / "dead.jsonl").read_bytes().splitlines()]
    # Dead letters are at least once (docs/dead-letters.md): a kill after a letter was written but
    # before the checkpoint sends it again on restart. One per source record is what must hold.
    by_record = {(letter["partition"], letter["offset"]): letter for letter in letters}
    assert sorted(letter["value_text"] for letter in by_record.values()) == sorted(
        v.decode() for v in POISON.values()
    )
    assert all(letter["reason"] for letter in letters)


def children_of(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(c) for c in f.read().split()]
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def daemon(args, tmp_path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLEARN_")}
    return subprocess.Popen(
        [sys.executable, "-m", "stream.cli", *args], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def wait_for_checkpoint(tmp_path, proc, timeout=120) -> None:
    deadline = time.monotonic() + timeout
    while CheckpointStore(tmp_path / "ck").latest() is None:
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)


def test_every_event_is_learned_exactly_once_and_the_poison_is_dead_lettered(bootstrap, topic, tmp_path):
    ran = cli(
        *run_args(bootstrap, topic, tmp_path, "--until-idle", "1", "--max-dead-letter-rate", "1"),
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert "learned 6,000 events" in ran.stderr and "dead letters 3" in ran.stderr, ran.stderr
    assert_learned_exactly_once(tmp_path)


def test_a_sigkill_of_the_daemon_leaves_no_orphan_and_a_restart_is_still_exactly_once(
    bootstrap, topic, tmp_path
):
    proc = daemon(run_args(bootstrap, topic, tmp_path, "--max-dead-letter-rate", "1"), tmp_path)
    try:
        wait_for_checkpoint(tmp_path, proc)
        children = children_of(proc.pid)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert children, "the daemon started no intake process"
    deadline = time.monotonic() + 10
    while any(alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(c) for c in children), "the intake process outlived its daemon"
    learned_at_kill = CheckpointStore(tmp_path / "ck").latest().counters["events_learned"]
    assert 0 < learned_at_kill

    ran = cli(
        *run_args(bootstrap, topic, tmp_path, "--until-idle", "1", "--max-dead-letter-rate", "1"),
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert_learned_exactly_once(tmp_path)


def test_a_dead_intake_process_stops_the_daemon_in_one_line(bootstrap, topic, tmp_path):
    proc = daemon(run_args(bootstrap, topic, tmp_path, "--max-events", str(10 * N)), tmp_path)
    try:
        wait_for_checkpoint(tmp_path, proc)
        for child in children_of(proc.pid):
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"resource_tracker" not in f.read():  # multiprocessing's own helper lives too
                    os.kill(child, signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.decode()
    assert proc.returncode != 0, text
    assert "Traceback" not in text
    assert "streamlearn: error: the intake process (--intake process) was killed by signal 9" in text, text


def test_a_consumer_group_is_refused_in_one_line(bootstrap, topic, tmp_path):
    ran = cli(*run_args(bootstrap, topic, tmp_path, "--group", "g"), cwd=tmp_path)
    assert ran.returncode != 0
    assert "--intake process reads explicit partitions only" in ran.stderr.strip().splitlines()[-1]
