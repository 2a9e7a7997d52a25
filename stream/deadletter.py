"""Dead-letter destinations: where records that cannot be learned from go, with a reason.

A dead letter keeps the original bytes and where they came from, so nothing is
lost: an operator can fix and re-publish them. Sinks are at-least-once: a crash
between sending a dead letter and the next checkpoint re-decodes the same
record and sends it again, while the *counts* in the checkpoint stay exact.

Examples
--------
>>> import tempfile, os, json
>>> from stream.records import RawRecord
>>> path = os.path.join(tempfile.mkdtemp(), "dlq.jsonl")
>>> sink = FileDeadLetterSink(path)
>>> sink.send([DeadLetter(RawRecord("t", 0, 7, -1, None, b"{oops"), "bad json")])
>>> sink.flush(); sink.close()
>>> json.loads(open(path).readline())["reason"]
'bad json'
"""

from __future__ import annotations

import base64
import os
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Protocol

import orjson

from stream.records import RawRecord


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be used, and why (a short, stable reason text)."""

    record: RawRecord
    reason: str

    @property
    def reason_kind(self) -> str:
        """The reason up to its first colon: a low-cardinality key for counters."""
        return self.reason.split(":", 1)[0]


class DeadLetterSink(Protocol):
    """Where dead letters are written; ``flush`` makes sent letters durable."""

    def send(self, letters: Iterable[DeadLetter]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _as_json_line(letter: DeadLetter) -> bytes:
    rec = letter.record
    value = rec.value
    doc = {
        "reason": letter.reason,
        "topic": rec.topic,
        "partition": rec.partition,
        "offset": rec.offset,
        "timestamp": rec.timestamp,
        # Base64 keeps arbitrary bytes; the text form is a convenience for humans.
        "value_b64": None if value is None else base64.b64encode(value).decode("ascii"),
        "value_text": None if value is None else value[:2048].decode("utf-8", "replace"),
    }
    return orjson.dumps(doc) + b"\n"


class FileDeadLetterSink:
    """Appends dead letters as JSON lines to a file (created with its directory)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._file = open(self.path, "ab")

    def send(self, letters: Iterable[DeadLetter]) -> None:
        for letter in letters:
            self._file.write(_as_json_line(letter))

    def flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()


class KafkaDeadLetterSink:
    """Publishes each dead letter to ``<source topic><suffix>`` (default ``.dlq``).

    The record value is kept byte for byte; the reason and origin travel in
    headers (``dlq.reason``, ``dlq.topic``, ``dlq.partition``, ``dlq.offset``).
    """

    def __init__(self, bootstrap: str, suffix: str = ".dlq", **producer_config) -> None:
        from kafka import KafkaProducer

        self.suffix = suffix
        producer_config.setdefault("bootstrap_timeout_ms", 10_000)
        self._producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **producer_config)

    def send(self, letters: Iterable[DeadLetter]) -> None:
        for letter in letters:
            rec = letter.record
            headers = [
                ("dlq.reason", letter.reason.encode()),
                ("dlq.topic", rec.topic.encode()),
                ("dlq.partition", str(rec.partition).encode()),
                ("dlq.offset", str(rec.offset).encode()),
            ]
            self._producer.send(rec.topic + self.suffix, value=rec.value, key=rec.key, headers=headers)

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()


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
