"""Dead letters: records that cannot be learned from, kept with a reason in one documented envelope.

A dead letter keeps the original bytes and where they came from, so nothing is
lost: an operator can fix and re-publish them. Every destination writes the
same **envelope**, a JSON object whose value is always present -- whatever the
record was (a tombstone, a keyless or empty record, 5 MB of garbage, JSON
nested 3,000 deep, invalid UTF-8):

===================  ====================================================
field                meaning
===================  ====================================================
``format``           ``"streamlearn.dead-letter.v1"``
``reason``           why it was not learned (``"bad json: ..."``)
``reason_kind``      the reason up to its first colon (``"bad json"``)
``topic``            source topic, ``partition``, ``offset``, ``timestamp`` (ms)
``key_b64``          source key, base64 (``null`` for a keyless record)
``value_b64``        source value, base64 (``null`` for a tombstone), cut to
                     the destination's limit when ``value_truncated``
``value_size``       length of the *whole* source value in bytes
``value_truncated``  true when ``value_b64`` holds only its first bytes
``value_sha256``     hex digest of the whole source value (to match a copy)
``value_text``       the first 2,048 characters as UTF-8 (invalid bytes
                     replaced): a convenience for humans, not the data
``headers``          source headers as ``[name, value_b64]`` pairs
``dead_lettered_at`` when the letter was written, ms since the epoch
===================  ====================================================

Destinations are at-least-once: a crash between sending a dead letter and the
next checkpoint re-decodes the same record and sends it again, while the
*counts* in the checkpoint stay exact. The Kafka destination lives in
:mod:`stream.sources.deadletter_kafka`.

Examples
--------
>>> import tempfile, os, json
>>> from stream.core.records import RawRecord
>>> path = os.path.join(tempfile.mkdtemp(), "dlq.jsonl")
>>> sink = FileDeadLetterSink(path)
>>> sink.send([DeadLetter(RawRecord("t", 0, 7, -1, None, b"{oops"), "bad json")])
>>> sink.flush(); sink.close()
>>> letter = json.loads(open(path).readline())
>>> letter["reason"], letter["offset"], letter["value_text"], letter["value_truncated"]
('bad json', 7, '{oops', False)
>>> doc = json.loads(envelope(DeadLetter(RawRecord("t", 0, 8, -1, b"k", None), "empty value: tombstone")))
>>> doc["key_b64"], doc["value_b64"], doc["value_size"]
('aw==', None, None)
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Protocol

import orjson

from stream.core.records import RawRecord

ENVELOPE_FORMAT = "streamlearn.dead-letter.v1"
_TEXT_PREVIEW_CHARS = 2048
#: The reason of an event that came after its event-time window closed.
LATE_REASON = "late: event time behind the closed window"
# A reason is a short sentence; this bound only guards against a pathological one.
_MAX_REASON_CHARS = 1000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be used, and why (a short, stable reason text)."""

    record: RawRecord
    reason: str

    @property
    def reason_kind(self) -> str:
        """The reason up to its first colon: a low-cardinality key for counters."""
        return self.reason.split(":", 1)[0]


@dataclass(frozen=True)
class SinkStatus:
    """How a dead-letter destination is doing, for progress lines, metrics and summaries.

    ``down_for_seconds`` is 0 while the destination accepts letters;
    ``spooled`` letters wait on local disk for it to come back;
    ``undeliverable`` ones were refused for good and kept in a local file.
    """

    destination: str
    down_for_seconds: float = 0.0
    last_error: str | None = None
    spooled: int = 0
    spool_bytes: int = 0
    undeliverable: int = 0

    @property
    def healthy(self) -> bool:
        return self.down_for_seconds == 0 and self.spooled == 0 and self.undeliverable == 0

    def describe(self) -> str:
        """One human line, e.g. ``dead-letter destination t.dlq down 12s (...): 40 letters spooled``."""
        parts = []
        if self.down_for_seconds:
            parts.append(
                f"dead-letter destination {self.destination} down {self.down_for_seconds:.0f}s"
                f" ({self.last_error})"
            )
        if self.spooled:
            parts.append(f"{self.spooled:,} letters spooled on disk ({self.spool_bytes / 2**20:.1f} MiB)")
        if self.undeliverable:
            parts.append(f"{self.undeliverable:,} refused by {self.destination}, kept locally")
        return ": ".join(parts) if parts else f"dead letters -> {self.destination}"


class DeadLetterSink(Protocol):
    """Where dead letters are written.

    ``flush`` makes every letter sent so far durable -- delivered, or kept on
    local disk -- and is called before each checkpoint; ``status`` reports
    the destination's health.
    """

    def send(self, letters: Iterable[DeadLetter]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def status(self) -> SinkStatus: ...


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def envelope(letter: DeadLetter, *, max_value_bytes: int | None = None) -> bytes:
    """The letter as one JSON envelope (see the module docstring); never fails on content.

    ``max_value_bytes`` cuts the kept value (the envelope says so and keeps
    the whole value's size and SHA-256), so a destination with a message-size
    limit can always take it.
    """
    rec = letter.record
    value = rec.value
    kept = value
    if value is not None and max_value_bytes is not None and len(value) > max_value_bytes:
        kept = value[:max_value_bytes]
    doc = {
        "format": ENVELOPE_FORMAT,
        "reason": letter.reason[:_MAX_REASON_CHARS],
        "reason_kind": letter.reason_kind[:_MAX_REASON_CHARS],
        "topic": rec.topic,
        "partition": rec.partition,
        "offset": rec.offset,
        "timestamp": rec.timestamp,
        "key_b64": _b64(rec.key),
        "value_b64": _b64(kept),
        "value_size": None if value is None else len(value),
        "value_truncated": kept is not value,
        "value_sha256": None if value is None else hashlib.sha256(value).hexdigest(),
        "value_text": None
        if value is None
        else value[: _TEXT_PREVIEW_CHARS * 4].decode("utf-8", "replace")[:_TEXT_PREVIEW_CHARS],
        "headers": [[str(name), _b64(val)] for name, val in (rec.headers or ())],
        "dead_lettered_at": int(time.time() * 1000),
    }
    return orjson.dumps(doc)


class FileDeadLetterSink:
    """Appends dead-letter envelopes as JSON lines to a file (created with its directory).

    ``flush`` fsyncs, so a flushed letter survives a crash of the machine.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._file = open(self.path, "ab")

    def send(self, letters: Iterable[DeadLetter]) -> None:
        for letter in letters:
            self.write_line(envelope(letter))

    def write_line(self, line: bytes) -> None:
        """Append one ready-made envelope (no newline inside it)."""
        self._file.write(line + b"\n")

    def flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()

    def status(self) -> SinkStatus:
        return SinkStatus(destination=self.path)


class CountingSink:
    """Wraps a sink and counts letters per reason kind (the counts are checkpointed)."""

    def __init__(self, inner: DeadLetterSink | None, counts: dict[str, int] | None = None) -> None:
        self.inner = inner
        self.counts: Counter[str] = Counter(counts or {})

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def send(self, letters: Iterable[DeadLetter]) -> None:
        letters = list(letters)
        if not letters:
            return
        self.counts.update(letter.reason_kind for letter in letters)
        if self.inner is not None:
            self.inner.send(letters)

    def flush(self) -> None:
        if self.inner is not None:
            self.inner.flush()

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()

    def status(self) -> SinkStatus | None:
        """The destination's status, ``None`` when letters are only counted (``--dead-letter none``)."""
        return self.inner.status() if self.inner is not None else None


def late_letters(events, reason: str = LATE_REASON) -> list[DeadLetter]:
    """Dead letters for decoded events (by default: they came after their event-time window closed).

    They keep their decoded content (id, ts, x, y) as the value: by then the
    raw bytes are gone.
    """
    letters = []
    for i in range(len(events)):
        doc = {
            "id": str(events.ids[i]),
            "ts": int(events.ts[i]),
            "x": events.X[i].tolist(),
            "y": events.y[i].item(),
        }
        rec = RawRecord(
            str(events.topic[i]),
            int(events.partition[i]),
            int(events.offset[i]),
            int(events.ts[i]),
            None,
            orjson.dumps(doc),
        )
        letters.append(DeadLetter(rec, reason))
    return letters
