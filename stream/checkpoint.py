"""Atomic checkpoints of everything needed to resume without losing or double-learning an event.

A checkpoint holds, in ONE file written atomically (temp file, fsync, rename):
the learner state (model + optimizer), the window residue (events read but
not yet learned), the per-partition positions (next offset to read), the
codec's schema lock, counters (events learned, dead letters, late), and the
optional learn ledger. Because model and positions are written together, a
restart that restores the newest checkpoint and seeks to its positions
re-reads exactly the events the restored model has not seen.

# INVARIANT: every offset below a checkpoint's position for a partition is
# either learned by its model, pending in its window residue, or was
# dead-lettered/dropped as late (and counted).

Files are ``ckpt-<seq>.safetensors`` in the checkpoint directory; the newest
readable one wins and the last ``keep`` are kept. Nothing is unpickled.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from learners.state_io import load_state_file, save_state_file
from stream.errors import CheckpointError, OffsetRegressionError
from stream.records import TopicPartition

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{12})\.safetensors$")


@dataclass(frozen=True)
class Checkpoint:
    """One consistent snapshot of a running engine (plain data and tensors)."""

    seq: int
    positions: Mapping[TopicPartition, int]
    learner: dict | None
    window: dict
    schema: dict
    counters: dict
    ledger: dict | None = None
    created_at: float = field(default_factory=time.time)
    #: Snapshots of optional engine components by name (``"gate"``, later the
    #: drift policy); plain data, restored by the component itself.
    components: dict = field(default_factory=dict)

    def to_state(self) -> dict:
        return {
            "format": FORMAT_VERSION,
            "seq": self.seq,
            "created_at": self.created_at,
            # Lists, not a dict: JSON object keys cannot be (topic, partition) pairs.
            "positions": [[tp.topic, tp.partition, pos] for tp, pos in sorted(self.positions.items())],
            "learner": self.learner,
            "window": self.window,
            "schema": self.schema,
            "counters": self.counters,
            "ledger": self.ledger,
            "components": self.components,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Checkpoint:
        if state.get("format") != FORMAT_VERSION:
            raise CheckpointError(f"unsupported checkpoint format {state.get('format')!r}")
        return cls(
            seq=int(state["seq"]),
            positions={TopicPartition(t, int(p)): int(o) for t, p, o in state["positions"]},
            learner=state["learner"],
            window=state["window"],
            schema=state["schema"],
            counters=state["counters"],
            ledger=state.get("ledger"),
            created_at=float(state["created_at"]),
            components=state.get("components") or {},
        )


class CheckpointStore:
    """A directory of atomically written checkpoints.

    Raises
    ------
    OffsetRegressionError
        ``save`` was given a position lower than the previous checkpoint's
        for the same partition (that would re-learn events).
    CheckpointError
        The directory cannot be written.
    """

    def __init__(self, directory: str | os.PathLike[str], keep: int = 3) -> None:
        self.directory = Path(directory)
        self.keep = max(1, keep)
        self._last_positions: dict[TopicPartition, int] = {}

    def _files(self) -> list[tuple[int, Path]]:
        if not self.directory.is_dir():
            return []
        found = []
        for entry in self.directory.iterdir():
            m = _NAME.match(entry.name)
            if m:
                found.append((int(m.group(1)), entry))
        return sorted(found, reverse=True)

    def latest(self) -> Checkpoint | None:
        """The newest readable checkpoint, or ``None`` for a fresh start."""
        for seq, path in self._files():
            try:
                ckpt = Checkpoint.from_state(load_state_file(path))
            except CheckpointError as exc:
                # Renames are atomic, so this is disk damage or a foreign file;
                # an older checkpoint is still a consistent (model, offsets) pair.
                log.warning("skipping unreadable checkpoint %s: %s", path, exc)
                continue
            self._last_positions = dict(ckpt.positions)
            return ckpt
        return None

    def save(self, ckpt: Checkpoint) -> Path:
        """Write ``ckpt`` atomically, then prune old ones. Returns its path."""
        for tp, pos in ckpt.positions.items():
            before = self._last_positions.get(tp)
            if before is not None and pos < before:
                raise OffsetRegressionError(
                    f"checkpoint {ckpt.seq} would move {tp.topic}[{tp.partition}] back from {before} to {pos}"
                )
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"ckpt-{ckpt.seq:012d}.safetensors"
            save_state_file(path, ckpt.to_state())
        except OSError as exc:
            raise CheckpointError(f"cannot write checkpoint in {self.directory}: {exc}") from exc
        self._last_positions = dict(ckpt.positions)
        for _, old in self._files()[self.keep :]:
            old.unlink(missing_ok=True)
        return path
