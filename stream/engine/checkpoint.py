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
A directory where checkpoints exist but none is readable is refused (or, by
choice, set aside for a fresh start), never silently treated as empty.

One engine at a time writes a directory: :meth:`CheckpointStore.lock` takes an
exclusive ``flock`` on ``ckpt-dir.lock`` inside it. Two writers would each
checkpoint the events they happened to read under one sequence of names, and
whichever wrote last would silently drop the other's share of the stream.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Mapping

from learners.state_io import load_state_file, save_state_file
from stream.core.errors import (
    CheckpointError,
    CheckpointLockedError,
    ConfigError,
    OffsetRegressionError,
    UnreadableCheckpointError,
)
from stream.core.records import TopicPartition

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{12})\.safetensors$")
#: The lock file's name; ``ckpt-`` like everything the store writes, so
#: nothing else in the directory is mistaken for the store's own.
LOCK_NAME = "ckpt-dir.lock"
#: Suffix given to unreadable checkpoints set aside for a fresh start.
SET_ASIDE_SUFFIX = ".unreadable"
UnreadablePolicy = Literal["refuse", "fresh"]


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

    Parameters
    ----------
    directory
        Where the checkpoints live (created on the first write or lock).
    keep
        How many of the newest checkpoints are kept.
    on_unreadable
        What :meth:`latest` does when checkpoint files exist but none can be
        read: ``"refuse"`` (raise :class:`UnreadableCheckpointError`) or
        ``"fresh"`` (set them aside as ``*.unreadable`` and start from scratch).

    Raises
    ------
    OffsetRegressionError
        ``save`` was given a position lower than the previous checkpoint's
        for the same partition (that would re-learn events).
    CheckpointLockedError
        ``lock``: another engine already writes this directory.
    UnreadableCheckpointError
        ``latest``: every checkpoint file is unreadable and ``on_unreadable``
        is ``"refuse"``.
    CheckpointError
        The directory cannot be written.
    ConfigError
        ``on_unreadable`` is neither ``"refuse"`` nor ``"fresh"``.

    Examples
    --------
    >>> import tempfile
    >>> store = CheckpointStore(tempfile.mkdtemp())
    >>> store.lock()
    >>> CheckpointStore(store.directory).lock()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stream.core.errors.CheckpointLockedError: checkpoint directory ... is in use by pid ... (this process): ...
    >>> store.unlock()
    """

    def __init__(
        self, directory: str | os.PathLike[str], keep: int = 3, *, on_unreadable: UnreadablePolicy = "refuse"
    ) -> None:
        if on_unreadable not in ("refuse", "fresh"):
            raise ConfigError(f"on_unreadable must be 'refuse' or 'fresh', not {on_unreadable!r}")
        self.directory = Path(directory)
        self.keep = max(1, keep)
        self.on_unreadable = on_unreadable
        self._last_positions: dict[TopicPartition, int] = {}
        self._lock_file: IO[bytes] | None = None

    # ---------------------------------------------------------------- lock
    def lock(self) -> None:
        """Take the directory's exclusive lock for this store, or fail at once (a no-op if it holds it).

        A non-blocking ``flock`` on ``ckpt-dir.lock``. ``flock`` locks belong
        to an open file, so a second store in the same process is refused
        like another process; the kernel drops the lock when the file is
        closed -- :meth:`unlock`, garbage collection, or the process's death,
        ``kill -9`` included -- so a crash never leaves a stale lock behind.
        The file holds the owner's pid, only to name it in the error.

        Raises
        ------
        CheckpointLockedError
            Another store holds the lock (the message names the pid).
        CheckpointError
            The directory or the lock file cannot be created, or the file
            system refuses locks.
        """
        if self._lock_file is not None:
            return  # the builder locks before the engine starts (build_engine does)
        path = self.directory / LOCK_NAME
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # Append mode: opening never truncates the pid a holder wrote.
            handle = open(path, "a+b", buffering=0)  # noqa: SIM115 -- held open until unlock()
        except OSError as exc:
            raise CheckpointError(f"cannot create the lock file {path}: {exc}") from exc
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            handle.close()
            raise CheckpointLockedError(
                f"checkpoint directory {self.directory} is in use by {holder}: two engines on one directory would "
                "each checkpoint part of the stream and one would lose the other's; stop that process, or give "
                "this one its own --checkpoint-dir"
            ) from None
        except OSError as exc:
            handle.close()
            raise CheckpointError(
                f"cannot lock {path} (does this file system support flock?): {exc}"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n".encode())
        self._lock_file = handle

    def unlock(self) -> None:
        """Release the lock taken by :meth:`lock` (idempotent; a no-op if this store holds none).

        The lock file stays: deleting it would let a newcomer lock a fresh
        file while an older opener still waits on the deleted one.
        """
        handle, self._lock_file = self._lock_file, None
        if handle is not None:
            handle.close()  # closing the file releases the flock

    @property
    def locked(self) -> bool:
        """Whether this store holds the directory's lock."""
        return self._lock_file is not None

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
        """The newest readable checkpoint, or ``None`` for a fresh start.

        A damaged newest file is skipped, with a warning, for an older
        readable one. If files exist but *none* is readable, a fresh start
        would silently re-learn the whole stream, so that is refused unless
        ``on_unreadable="fresh"``.

        Raises
        ------
        UnreadableCheckpointError
            Every checkpoint file is unreadable and ``on_unreadable`` is ``"refuse"``.
        CheckpointError
            ``on_unreadable="fresh"`` and an unreadable file cannot be set aside.
        """
        unreadable: list[tuple[Path, CheckpointError]] = []
        for _seq, path in self._files():
            try:
                ckpt = Checkpoint.from_state(load_state_file(path))
            except CheckpointError as exc:
                unreadable.append((path, exc))
                continue
            # Renames are atomic, so an unreadable file is disk damage or a
            # foreign file; an older checkpoint is still a consistent (model,
            # offsets) pair. Warned here only: a refusal says it all in one error.
            for bad, exc in unreadable:
                log.warning("skipping unreadable checkpoint %s: %s", bad, exc)
            self._last_positions = dict(ckpt.positions)
            return ckpt
        if unreadable:
            self._none_readable(unreadable)
        return None

    def _none_readable(self, unreadable: list[tuple[Path, CheckpointError]]) -> None:
        _, exc = unreadable[0]  # its message names the file
        if self.on_unreadable == "refuse":
            raise UnreadableCheckpointError(
                f"none of the {len(unreadable)} checkpoint file(s) in {self.directory} can be read (the newest: "
                f"{exc}); starting over would re-learn every event. Restore the directory from a "
                "backup, or run with --on-unreadable-checkpoint fresh to set them aside and learn from scratch"
            )
        # Out of the rotation, not deleted: they keep the higher sequence
        # numbers, so save() would prune the fresh run's checkpoints first.
        for path, exc in unreadable:
            log.warning("setting aside unreadable checkpoint %s: %s", path, exc)
            try:
                os.replace(path, path.with_name(path.name + SET_ASIDE_SUFFIX))
            except OSError as err:
                raise CheckpointError(f"cannot set aside the unreadable checkpoint {path}: {err}") from err
        log.warning(
            "starting from scratch as asked: %d unreadable checkpoint(s) in %s renamed *%s",
            len(unreadable),
            self.directory,
            SET_ASIDE_SUFFIX,
        )

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


def _holder(handle: IO[bytes]) -> str:
    """Who holds a lock, from the pid its holder wrote into the lock file."""
    handle.seek(0)
    text = handle.read(32).decode("ascii", "replace").strip()
    if not text.isdigit():
        return "another engine (pid unknown)"
    pid = int(text)
    return f"pid {pid} (this process)" if pid == os.getpid() else f"pid {pid}"
