"""A bounded on-disk spool of dead-letter envelopes waiting for their destination to come back.

The spool is a JSON-lines file of envelopes (the :mod:`stream.core.deadletter`
format) beside the checkpoints. The engine flushes dead letters before every
checkpoint; a letter the destination has not acknowledged by then is appended
here and fsynced, so the checkpoint that moves past its record never makes it
the only copy in a memory buffer. A restart opens the same file and drains it.

# INVARIANT: a letter whose record lies below a checkpoint's position is
# delivered or in the spool (fsynced). A torn last line can only come from a
# crash before the checkpoint that would have covered it, so its record is
# re-read and re-lettered after the restart: dropping that line loses nothing.

Examples
--------
>>> import tempfile, os
>>> spool = DeadLetterSpool(os.path.join(tempfile.mkdtemp(), "spool.jsonl"))
>>> spool.append(b'{"a": 1}'); spool.append(b'{"a": 2}'); spool.sync()
>>> len(spool), spool.read(limit=1)
(2, [b'{"a": 1}'])
>>> spool.drop_first(1); len(spool), spool.read()
(1, [b'{"a": 2}'])
>>> len(DeadLetterSpool(spool.path))   # a restart finds what is left
1
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class DeadLetterSpool:
    """Append-only JSON lines with a count and a size; the front is dropped once delivered."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._cut_torn_tail()
        lines = self._load()
        self._count = len(lines)
        self._file = open(self.path, "ab")
        self._size = self._file.tell()
        if self._count:
            log.warning(
                "dead-letter spool %s holds %d letters from an earlier run: they are sent first",
                self.path,
                self._count,
            )

    def __len__(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        """Bytes on disk (known after ``close`` too)."""
        return self._size

    def append(self, line: bytes) -> None:
        """Queue one envelope (a JSON document without a newline)."""
        self._file.write(line + b"\n")
        self._count += 1
        self._size += len(line) + 1

    def sync(self) -> None:
        """Make every appended line durable (flush + fsync)."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def read(self, limit: int | None = None) -> list[bytes]:
        """The oldest ``limit`` envelopes (all by default), oldest first."""
        self._file.flush()
        lines = self._load()
        return lines if limit is None else lines[:limit]

    def drop_first(self, n: int) -> None:
        """Forget the ``n`` oldest envelopes (delivered); the rest is rewritten atomically."""
        if n <= 0:
            return
        rest = self.read()[n:]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as out:
            out.write(b"".join(line + b"\n" for line in rest))
            out.flush()
            os.fsync(out.fileno())
        self._file.close()
        os.replace(tmp, self.path)
        self._file = open(self.path, "ab")
        self._count = len(rest)
        self._size = self._file.tell()

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()

    def _load(self) -> list[bytes]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        return [line for line in data.split(b"\n") if line]

    def _cut_torn_tail(self) -> None:
        """Truncate a last line that a crash left without its newline (see the INVARIANT)."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            log.warning(
                "dropping a torn line at the end of the dead-letter spool %s (its record is re-read)",
                self.path,
            )
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
