"""One engine per checkpoint directory: a second store, engine or daemon on it fails with a named error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from learners.torch_learner import TorchLearner
from stream.checkpoint import LOCK_NAME, CheckpointStore
from stream.codec import CodecConfig, JsonCodec
from stream.daemon import Engine, EngineConfig
from stream.errors import CheckpointLockedError, SchemaMismatchError
from stream.poll import as_columns
from stream.testing import ListSource, make_records
from stream.window import CountWindow


def engine_on(directory, records, n_features: int = 3) -> Engine:
    return Engine(
        source=ListSource(records, batch_size=100),
        codec=JsonCodec(CodecConfig(n_features=n_features)),
        window=CountWindow(50),
        learner_builder=lambda d: TorchLearner(n_features=d),
        store=CheckpointStore(directory),
        config=EngineConfig(until_idle_seconds=0, ledger=True),
    )


def test_a_second_store_on_a_locked_directory_is_refused_with_the_directory_and_pid(tmp_path):
    first = CheckpointStore(tmp_path / "ck")
    first.lock()
    first.lock()  # the holder may lock again (the CLI locks before the engine starts)
    with pytest.raises(
        CheckpointLockedError,
        match=rf"{tmp_path / 'ck'} is in use by pid {os.getpid()} "
        r"\(this process\).*its own --checkpoint-dir",
    ):
        CheckpointStore(tmp_path / "ck").lock()
    first.unlock()
    first.unlock()  # idempotent
    second = CheckpointStore(tmp_path / "ck")
    second.lock()
    assert second.locked and not first.locked
    second.unlock()


def test_a_second_engine_on_one_directory_fails_and_the_first_learns_everything(tmp_path):
    records = make_records(400, n_features=3)
    first = engine_on(tmp_path, records)
    first.start()
    with pytest.raises(CheckpointLockedError, match="in use by pid"):
        engine_on(tmp_path, records).run()
    # The first engine goes on, driven step by step as stream.replay drives its engines.
    while first.source.lag():
        first.feed(as_columns(first.source.poll(0, 100)))
    first.end_of_input()
    summary = first.finish("end of input")
    assert summary.events_learned == 400
    # The lock went with the first engine: a later one resumes from its checkpoint.
    again = engine_on(tmp_path, records).run()
    assert again.events_learned == 400 and again.events_read_this_run == 0
    ledger = CheckpointStore(tmp_path).latest().ledger
    assert len(ledger["ids"]) == 400 and max(ledger["counts"]) == 1


def test_an_engine_that_fails_to_start_releases_the_lock(tmp_path):
    engine_on(tmp_path, make_records(100, n_features=3)).run()
    with pytest.raises(SchemaMismatchError):
        engine_on(tmp_path, make_records(100, n_features=4), n_features=4).run()
    store = CheckpointStore(tmp_path)
    store.lock()  # nothing left holding it
    store.unlock()


def test_the_lock_dies_with_its_process(tmp_path):
    # The holder keeps its store referenced: a collected store closes its lock file, releasing the lock.
    script = (
        "import sys, time; from stream.checkpoint import CheckpointStore; store = CheckpointStore(sys.argv[1]); "
        "store.lock(); print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointLockedError, match=rf"in use by pid {holder.pid}:"):
            CheckpointStore(tmp_path).lock()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    store = CheckpointStore(tmp_path)
    store.lock()  # no stale lock after kill -9
    assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
    store.unlock()


def test_a_second_daemon_is_a_one_line_error_with_exit_code_2(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps({"id": i, "x": [i % 7, 1.0], "y": i % 2}) for i in range(300)))
    ckpt = tmp_path / "ck"
    holder = CheckpointStore(ckpt)
    holder.lock()
    try:
        ran = subprocess.run(
            [
                sys.executable,
                "-m",
                "stream.cli",
                "run",
                "--file",
                str(data),
                "--checkpoint-dir",
                str(ckpt),
                "--until-idle",
                "0.5",
                "--registry",
                "none",
                "--quiet",
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        holder.unlock()
    assert ran.returncode == 2, ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in ran.stderr, ran.stderr
    assert lines[0].startswith("streamlearn: error: checkpoint directory")
    assert str(ckpt) in lines[0] and f"pid {os.getpid()}" in lines[0] and "--checkpoint-dir" in lines[0]
    # Refused before touching the directory: no checkpoint, no dead-letter file.
    assert sorted(p.name for p in ckpt.iterdir()) == [LOCK_NAME]
