"""What the SIGKILL tests share: kill a daemon at a random instant while it learns, as often as asked.

Imported by the test modules beside it (pytest puts this directory on ``sys.path``).
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

from stream.engine.checkpoint import CheckpointStore


def newest_checkpoint_seq(ckpt_dir: Path) -> int:
    """The sequence number of the newest checkpoint file in ``ckpt_dir`` (0: none yet)."""
    seqs = [
        int(m.group(1))
        for p in Path(ckpt_dir).glob("ckpt-*.safetensors")
        if (m := re.match(r"ckpt-(\d+)\.safetensors", p.name))
    ]
    return max(seqs, default=0)


def kill_while_learning(
    start: Callable[[], subprocess.Popen],
    ckpt_dir: Path,
    rng: random.Random,
    *,
    kills: int,
    max_delay_s: float = 0.25,
    deadline_s: float = 600,
    go_on: Callable[[], bool] = lambda: True,
) -> list[int]:
    """Start a daemon, wait until it is learning (a new checkpoint), SIGKILL it after a random delay; repeat.

    The delay keeps the instant unaligned to checkpoint writes. Stops after
    ``kills`` kills, at the deadline, or when ``go_on()`` turns false; returns
    the events learned per the newest checkpoint at each kill.
    """
    learned: list[int] = []
    deadline = time.monotonic() + deadline_s  # generous: each incarnation starts, reads, learns
    while len(learned) < kills and time.monotonic() < deadline and go_on():
        before = newest_checkpoint_seq(ckpt_dir)
        proc = start()
        try:
            while (
                newest_checkpoint_seq(ckpt_dir) <= before
                and proc.poll() is None
                and time.monotonic() < deadline
            ):
                time.sleep(0.01)
            assert proc.poll() is None, f"daemon exited early:\n{proc.stdout.read().decode()}"
            time.sleep(rng.uniform(0.0, max_delay_s))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        learned.append(CheckpointStore(ckpt_dir).latest().counters["events_learned"])
    return learned
