"""The checkpoint lock across processes: it dies with its holder, and a second daemon is refused.

The in-process lock tests are tests/unit/test_checkpoint_lock.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from stream.core.errors import CheckpointLockedError
from stream.engine.checkpoint import LOCK_NAME, CheckpointStore


def test_the_lock_dies_with_its_process(tmp_path):
    # The holder keeps its store referenced: a collected store closes its lock file, releasing the lock.
    # It holds until killed (blocked on its stdin), not for a fixed time a slow machine could outlast.
    script = (
        "import sys; from stream.engine.checkpoint import CheckpointStore; store = CheckpointStore(sys.argv[1]); "
        "store.lock(); print('locked', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
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
