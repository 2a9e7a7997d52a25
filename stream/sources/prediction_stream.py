"""The loop of ``streamlearn predict``: features topic in, one logged prediction per record out, at least once.

Each poll is read and predicted as one batch by the model the
:class:`~serving.api.hot_swap.ModelSlot` holds at that moment (the
:class:`~serving.api.hot_swap.HotSwapper` keeps it on the registry's
validated version, so a swap shows in the next poll's records); the work per
poll is :mod:`serving.stream_predict`. Then, in this order:

1. every prediction is produced to the output topic, and the producer flushed
   (a failed send stops the loop before anything is committed);
2. the rejected records go to the dead-letter sink, which is flushed;
3. the positions are committed: to the consumer group, or (no group) to a
   small positions file (:class:`PositionsFile`) that a restart resumes from.

A crash between 1 and 3 predicts the same records again after a restart:
at-least-once, never a gap. With a transactional producer (``exactly_once``,
needs a group) steps 1 and 3 are one Kafka transaction: the poll's
predictions and its consumer offsets are committed together, and a reader
with ``isolation_level=read_committed`` sees each prediction once.

Examples
--------
>>> import tempfile
>>> from learners.neural.learner import TorchLearner
>>> from serving.api.hot_swap import ModelSlot
>>> from serving.api.model import ServedModel
>>> from serving.registry.versions import Version
>>> from stream.core.records import RawRecord
>>> from stream.testing.doubles import ListSource
>>> slot = ModelSlot()
>>> _ = slot.swap(ServedModel.from_state(Version(number=3), TorchLearner(n_features=2, device="cpu").state_dict()), 0)
>>> recs = [RawRecord("f", 0, i, 0, None, b'{"id": "%d", "x": [1, %d]}' % (i, i)) for i in range(5)]
>>> producer = MemoryProducer()
>>> loop = PredictionStream(ListSource(recs, batch_size=2), producer, slot,
...                         PredictionStreamConfig(output_topic="preds", until_idle_s=0.0),
...                         positions=PositionsFile(tempfile.mkdtemp(), "preds"))
>>> summary = loop.run()
>>> summary.predicted, summary.stopped_because, [key for _, key, _ in producer.sent]
(5, 'idle', [b'0', b'1', b'2', b'3', b'4'])
>>> loop.positions.load()
{TopicPartition(topic='f', partition=0): 5}
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from serving.api.hot_swap import ModelSlot
from serving.api.model import ServedModel
from serving.stream_predict import output_record, predict_rows, read_features
from stream.core.deadletter import CountingSink
from stream.core.errors import BrokerOutageError, StreamlearnError
from stream.core.records import RawRecord, TopicPartition
from stream.sources.base import Source, source_extras

log = logging.getLogger(__name__)

__all__ = [
    "MemoryProducer",
    "PositionsFile",
    "PredictionStream",
    "PredictionStreamConfig",
    "PredictSummary",
    "ProduceError",
]


class ProduceError(StreamlearnError):
    """The output topic did not take a poll's predictions; nothing of that poll was committed."""


class Producer(Protocol):
    """What the loop needs of a Kafka producer (kafka-python's ``KafkaProducer`` has it)."""

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...


class MemoryProducer:
    """A :class:`Producer` that keeps what it was sent as ``(topic, key, value)`` (tests, doctests)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.sent.append((topic, key, value))

    def flush(self, timeout: float | None = None) -> None:
        return None

    def close(self, timeout: float | None = None) -> None:
        return None


class PositionsFile:
    """Where a group-less ``predict`` keeps its positions: ``positions-<output topic>.json`` in a directory.

    Written whole to a temporary file, fsynced, then renamed over the old
    one, so a crash leaves the old positions or the new ones, never a torn
    file. One file per output topic: predicting into another topic starts
    over. Also the loop's :class:`~stream.sources.base.RebalanceHandler`.
    """

    def __init__(self, directory: str | os.PathLike[str], output_topic: str) -> None:
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, f"positions-{output_topic}.json")

    def load(self) -> dict[TopicPartition, int]:
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StreamlearnError(
                f"cannot read the positions file {self.path}: {exc}; delete it to start over "
                "(from --from), or restore it"
            ) from None
        out = {}
        for name, offset in doc.get("positions", {}).items():
            topic, _, part = name.rpartition(":")
            out[TopicPartition(topic, int(part))] = int(offset)
        return out

    def save(self, positions: Mapping[TopicPartition, int]) -> None:
        merged = {**self.load(), **positions}
        doc = {"positions": {f"{tp.topic}:{tp.partition}": pos for tp, pos in sorted(merged.items())}}
        os.makedirs(self.directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".positions-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    # RebalanceHandler: the saved positions of the partitions assigned; the others start at --from.
    def on_assigned(self, partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        saved = self.load()
        return {tp: saved[tp] for tp in partitions if tp in saved}

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        return None  # every poll is committed before the next one: nothing is pending here


class _GroupPositions:
    """With a consumer group the group's committed offsets are the positions: Kafka seeks to them."""

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        return {}

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        return None


@dataclass(frozen=True)
class PredictionStreamConfig:
    """How the loop runs: the output topic, when it stops, how it polls and reports."""

    output_topic: str
    #: Stop once no record came for this long and the lag is known to be 0 (``None``: never).
    until_idle_s: float | None = None
    poll_timeout_ms: int = 200
    max_poll_records: int = 5000
    #: Seconds to wait for the output topic's acknowledgements per poll.
    flush_timeout_s: float = 30.0
    progress_every_s: float = 5.0
    #: The consumer group whose offsets a transaction commits (exactly once only).
    transactional_group: str | None = None


@dataclass
class PredictSummary:
    """What one run did: records read, predictions produced (by version), dead letters by reason kind."""

    read: int = 0
    predicted: int = 0
    polls: int = 0
    by_version: Counter = field(default_factory=Counter)
    dead_letters: dict[str, int] = field(default_factory=dict)
    lag: int | None = None
    version: int | None = None
    stopped_because: str = ""
    elapsed_seconds: float = 0.0


class PredictionStream:
    """Features in, predictions out (see the module docstring); ``run()`` until stopped or idle.

    ``positions`` is the :class:`PositionsFile` of a group-less run
    (``None``: the source commits to its consumer group). ``dead_letters``
    counts the rejected records and sends them on (a
    :class:`~stream.core.deadletter.CountingSink`; none: counted only).
    ``on_progress`` hears the summary every ``progress_every_s``.
    """

    def __init__(
        self,
        source: Source,
        producer: Producer,
        slot: ModelSlot,
        config: PredictionStreamConfig,
        *,
        positions: PositionsFile | None = None,
        dead_letters: CountingSink | None = None,
        on_progress: Callable[[PredictSummary], None] | None = None,
    ) -> None:
        self.source = source
        self.producer = producer
        self.slot = slot
        self.config = config
        self.positions = positions
        self.dead_letters = dead_letters or CountingSink(None)
        self.on_progress = on_progress
        self.summary = PredictSummary()
        self._stop_reason: str | None = None
        self._transactional = config.transactional_group is not None

    # Stoppable (stream.engine.signals): SIGTERM/SIGINT finish the poll in hand, then stop.
    @property
    def stop_requested(self) -> bool:
        return self._stop_reason is not None

    def request_stop(self, reason: str = "stop requested") -> None:
        if self._stop_reason is None:
            self._stop_reason = reason

    def run(self) -> PredictSummary:
        cfg = self.config
        started = last_data = last_report = time.monotonic()
        outage = source_extras(self.source).outage
        while self.slot.model is None and self._stop_reason is None:
            time.sleep(0.05)  # no validated version yet: the hot swapper fills the slot when one comes
        if self._stop_reason is not None:
            self.summary.stopped_because = self._stop_reason
            self.summary.elapsed_seconds = time.monotonic() - started
            return self.summary
        self.source.open(self.positions or _GroupPositions())
        try:
            while self._stop_reason is None:
                batch = self.source.poll(cfg.poll_timeout_ms, cfg.max_poll_records)
                now = time.monotonic()
                records = [rec for recs in batch.values() for rec in recs]
                if records:
                    self._handle(records)
                    last_data = now
                elif cfg.until_idle_s is not None and now - last_data >= cfg.until_idle_s:
                    down = outage() if outage is not None else None
                    if down is None and self.source.lag() == 0:
                        self.request_stop("idle")
                if self.on_progress is not None and now - last_report >= cfg.progress_every_s:
                    last_report = now
                    self._report(started)
        finally:
            self.summary.stopped_because = self._stop_reason or "error"
            self.summary.elapsed_seconds = time.monotonic() - started
            self.source.close()
        return self.summary

    def _report(self, started: float) -> None:
        self.summary.lag = self.source.lag()
        self.summary.elapsed_seconds = time.monotonic() - started
        self.summary.dead_letters = dict(self.dead_letters.counts)
        self.on_progress(self.summary)

    def _handle(self, records: list[RawRecord]) -> None:
        """One poll: predict, produce and flush, dead-letter, then commit (see the module docstring)."""
        model: ServedModel = self.slot.model  # one model for the whole poll, even if a swap lands meanwhile
        rows, letters = read_features(records)
        outcome = predict_rows(model, rows)
        letters.extend(outcome.rejected)
        positions: dict[TopicPartition, int] = {}
        for rec in records:
            tp = TopicPartition(rec.topic, rec.partition)
            positions[tp] = max(positions.get(tp, 0), rec.offset + 1)
        if self._transactional:
            self.producer.begin_transaction()
        try:
            futures = [
                self.producer.send(self.config.output_topic, value=value, key=key)
                for key, value in (output_record(row, p) for row, p in outcome.answered)
            ]
            self._flush(futures)
            # Dead letters before any commit, in both modes: a crash after the commit must not lose them
            # (at least once: a crash before it reads the poll again and sends them again).
            self.dead_letters.send(letters)
            self.dead_letters.flush()
            if self._transactional:
                self._commit_transaction(positions)
        except BaseException:
            if self._transactional:
                self._abort()
            raise
        if not self._transactional:
            self._commit(positions)
        summary = self.summary
        summary.read += len(records)
        summary.polls += 1
        summary.predicted += len(outcome.answered)
        summary.version = model.version.number
        summary.by_version[model.version.number] += len(outcome.answered)
        summary.dead_letters = dict(self.dead_letters.counts)

    def _flush(self, futures: list) -> None:
        self.producer.flush(timeout=self.config.flush_timeout_s)
        for future in futures:
            if future is None:  # MemoryProducer
                continue
            if not future.is_done:
                raise ProduceError(
                    f"the output topic {self.config.output_topic!r} did not acknowledge the predictions "
                    f"within {self.config.flush_timeout_s:g}s; nothing was committed, a restart predicts "
                    "these records again"
                )
            if future.failed():
                raise ProduceError(
                    f"the output topic {self.config.output_topic!r} refused a prediction "
                    f"({future.exception}); nothing was committed, a restart predicts these records again"
                )

    def _commit(self, positions: Mapping[TopicPartition, int]) -> None:
        if self.positions is not None:
            self.positions.save(positions)
            return
        try:
            self.source.commit(positions)
        except BrokerOutageError as exc:
            # Produced but not committed: a restart predicts these records again (at-least-once).
            log.warning("offsets not committed: %s", exc)

    def _commit_transaction(self, positions: Mapping[TopicPartition, int]) -> None:
        from kafka import TopicPartition as KafkaTP
        from kafka.structs import OffsetAndMetadata

        offsets = {
            KafkaTP(tp.topic, tp.partition): OffsetAndMetadata(pos, "", -1) for tp, pos in positions.items()
        }
        self.producer.send_offsets_to_transaction(offsets, self.config.transactional_group)
        self.producer.commit_transaction()

    def _abort(self) -> None:
        try:
            self.producer.abort_transaction()
        except Exception as exc:  # noqa: BLE001 -- the first error is the one to report
            log.warning("could not abort the transaction: %s", exc)
