"""The prediction log: every answered row written to a Kafka topic, asynchronously, never in a request's way.

A predict request hands what it answered (:class:`~serving.api.predict.Answered`)
to :meth:`PredictionLog.offer`, which only appends it to a bounded in-memory
queue (a lock and a deque: about a microsecond). A background thread drains
the queue in batches: it scores the batch's rows with the shadow versions
(:mod:`serving.api.shadow`), writes one
:func:`~stream.core.feedback.encode_prediction` record per row keyed by its
id, and hands them to a ``KafkaProducer`` (``acks=1``, ``linger_ms=20``: a
logged row is worth one training example, not a leader-and-replicas wait).

A slow or absent broker costs rows, never requests: when the queue holds
``capacity_rows`` rows, further rows are dropped and counted; the thread
stops draining while ``capacity_rows`` rows are in flight (sent, not yet
acknowledged), so an outage fills the queue instead of the producer's buffer.
Shadow scoring is skipped (and counted) for a batch taken while more than
``shadow_skip_rows`` rows still wait behind it. Counters: :meth:`stats`
(``/health``) and the ``streamlearn_prediction_log_*`` series (``/metrics``).

Examples
--------
A log driven by hand (no thread), into a producer that keeps what it is sent:

>>> import numpy as np
>>> from learners.neural.learner import TorchLearner
>>> from serving.api.model import ServedModel
>>> from serving.api.predict import Answered
>>> from serving.registry.versions import Version
>>> from stream.core.feedback import decode_prediction
>>> class Kept:
...     def __init__(self): self.sent = []
...     def send(self, topic, value=None, key=None): self.sent.append((topic, key, value))
...     def flush(self, timeout=None): pass
...     def close(self, timeout=None): pass
>>> producer = Kept()
>>> model = ServedModel.from_state(Version(number=3), TorchLearner(n_features=2, device="cpu").state_dict())
>>> plog = PredictionLog("predictions", lambda: producer, capacity_rows=2)
>>> answered = Answered(("r1",), ([0.5, 1.0],), model, np.array([1]), np.array([[0.3, 0.7]]), 1000)
>>> plog.offer(answered); plog.offer(answered); plog.offer(answered)  # the third does not fit
>>> plog.drain_once(), plog.stats()["dropped"]
(2, 1)
>>> topic, key, value = producer.sent[0]
>>> topic, key, decode_prediction(value).prediction, decode_prediction(value).probabilities
('predictions', b'r1', 1, [0.3, 0.7])
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from serving.api.model import ServedModel
from serving.api.predict import Answered
from serving.api.producer import Producer, ProducerFactory
from serving.api.shadow import score_shadows
from stream.core.feedback import LoggedPrediction, ShadowAnswer, encode_prediction

log = logging.getLogger(__name__)

__all__ = ["PredictionLog"]

#: Retry a producer that could not be made after this long, doubling up to the second figure.
RETRY_S = (0.5, 30.0)


def _no_shadows() -> list[ServedModel]:
    return []


class PredictionLog:
    """A bounded queue of answered rows and the thread that writes them to ``topic``.

    Parameters
    ----------
    topic
        Where the records go.
    producer_factory
        Makes the producer (:func:`~serving.api.producer.kafka_producer_factory`);
        called in the log's thread, again after a failure.
    capacity_rows
        Rows the queue holds; more are dropped (and counted) until it drains.
        Also the most rows in flight at once.
    batch_rows
        Rows taken from the queue at a time (shadow-scored together).
    shadows
        The shadow versions loaded now (:class:`~serving.api.shadow.ShadowModels`).
    shadow_skip_rows
        Skip shadow scoring of a batch while more rows than this wait behind it
        (default: half the capacity).
    """

    def __init__(
        self,
        topic: str,
        producer_factory: ProducerFactory,
        *,
        capacity_rows: int = 10_000,
        batch_rows: int = 500,
        shadows: Callable[[], Sequence[ServedModel]] = _no_shadows,
        shadow_skip_rows: int | None = None,
    ) -> None:
        self.topic, self.producer_factory = topic, producer_factory
        self.capacity_rows, self.batch_rows, self.shadows = capacity_rows, batch_rows, shadows
        self.shadow_skip_rows = capacity_rows // 2 if shadow_skip_rows is None else shadow_skip_rows
        self._queue: deque[Answered] = deque()
        self._queued_rows = 0
        self._lock = threading.Lock()  # the queue and every counter
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer: Producer | None = None
        self._next_attempt, self._retry_s = 0.0, RETRY_S[0]
        self._failing = False
        self.last_error: str | None = None
        self.logged = self.dropped = self.send_errors = self.in_flight = 0
        self.shadow_scored = self.shadow_skipped = self.shadow_errors = 0

    # ------------------------------------------------------------ request path
    def offer(self, answered: Answered) -> None:
        """Queue a request's rows for the log, or drop and count them when the queue is full. Never blocks."""
        n = len(answered.ids)
        with self._lock:
            if self._queued_rows + n > self.capacity_rows:
                self.dropped += n
                return
            was_empty = not self._queue
            self._queue.append(answered)
            self._queued_rows += n
        if was_empty:
            self._wake.set()

    # ------------------------------------------------------------ the thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            if self.drain_once() == 0:
                self._wake.wait(self._idle_wait())

    def _idle_wait(self) -> float:
        if self._producer is None:
            return max(0.01, self._next_attempt - time.monotonic())
        return 0.01 if self.in_flight >= self.capacity_rows else 1.0

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread, write what is queued and wait for the broker, all within about ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        while self._queue and time.monotonic() < deadline and self.drain_once():
            pass
        if self._producer is not None:
            try:
                self._producer.flush(timeout=max(0.0, deadline - time.monotonic()))
            except Exception as exc:  # noqa: BLE001 -- shutting down: say so, lose what is unsent
                log.warning("prediction log: %d rows not flushed at shutdown: %s", self.in_flight, exc)
            try:
                self._producer.close(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001,S110 -- closing: nothing left to do about it
                pass
        if self._queued_rows:
            log.warning("prediction log: %d queued rows not written at shutdown", self._queued_rows)

    def drain_once(self) -> int:
        """Write one batch from the queue; the rows taken (0: nothing queued, no producer, or too many in flight)."""
        producer = self._producer_or_none()
        if producer is None or self.in_flight >= self.capacity_rows:
            return 0
        with self._lock:
            batch, rows = [], 0
            while self._queue and rows < self.batch_rows:
                answered = self._queue.popleft()
                batch.append(answered)
                rows += len(answered.ids)
            self._queued_rows -= rows
            behind = self._queued_rows > self.shadow_skip_rows
        if batch:
            self._send(producer, self._records(batch, rows, behind), rows)
        return rows

    def _producer_or_none(self) -> Producer | None:
        if self._producer is not None or time.monotonic() < self._next_attempt:
            return self._producer
        try:
            self._producer = self.producer_factory()
            self._retry_s = RETRY_S[0]
        except Exception as exc:  # noqa: BLE001 -- no broker, bad address: try again later
            self._next_attempt = time.monotonic() + self._retry_s
            self._retry_s = min(self._retry_s * 2, RETRY_S[1])
            self._fail(
                exc, f"cannot reach the broker (next try in {self._next_attempt - time.monotonic():.1f}s)"
            )
        return self._producer

    def _records(self, batch: list[Answered], rows: int, behind: bool) -> Iterator[tuple[bytes, bytes]]:
        """Each row's key and value, with the shadow versions' answers unless the log is behind."""
        shadows = self.shadows() if not behind else ()
        shadow_answers: Sequence[dict[int, ShadowAnswer]] = ()
        if shadows:
            shadow_answers, failed = score_shadows([row for a in batch for row in a.rows], shadows)
            with self._lock:
                self.shadow_scored += rows
                self.shadow_errors += failed
        elif behind and self.shadows():
            with self._lock:
                self.shadow_skipped += rows
        i = 0
        for answered in batch:
            for record in _logged(
                answered, shadow_answers[i : i + len(answered.ids)] if shadow_answers else ()
            ):
                yield record.id.encode(), encode_prediction(record)
            i += len(answered.ids)

    def _send(self, producer: Producer, records: Iterator[tuple[bytes, bytes]], rows: int) -> None:
        sent = 0
        try:
            for key, value in records:
                future = producer.send(self.topic, value=value, key=key)
                sent += 1
                with self._lock:
                    self.in_flight += 1
                if future is None:  # a producer without futures (a test's): taken as acknowledged
                    self._delivered(None)
                else:
                    future.add_callback(self._delivered)
                    future.add_errback(self._undelivered)
        except Exception as exc:  # noqa: BLE001 -- the batch's rest is lost; never the thread
            with self._lock:
                self.send_errors += rows - sent
            self._fail(exc, f"{rows - sent} rows not sent")

    def _delivered(self, _metadata: Any) -> None:
        with self._lock:
            self.logged += 1
            self.in_flight -= 1
            self._failing = False

    def _undelivered(self, exc: BaseException) -> None:
        with self._lock:
            self.send_errors += 1
            self.in_flight -= 1
        self._fail(exc, "a row was not delivered")

    def _fail(self, exc: BaseException, what: str) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if not self._failing or error != self.last_error:
            log.warning("prediction log to %r: %s: %s", self.topic, what, error)
        self._failing, self.last_error = True, error

    # ------------------------------------------------------------ reporting
    def stats(self) -> dict[str, Any]:
        """``/health``'s ``prediction_log``: ``degraded`` while the broker fails or the queue is full."""
        with self._lock:
            full = self._queued_rows >= self.capacity_rows
            return {
                "status": "degraded" if self._failing or self._producer is None or full else "ok",
                "topic": self.topic,
                "logged": self.logged,
                "dropped": self.dropped,
                "send_errors": self.send_errors,
                "queue_depth": self._queued_rows,
                "queue_capacity": self.capacity_rows,
                "in_flight": self.in_flight,
                "shadow_scored": self.shadow_scored,
                "shadow_skipped": self.shadow_skipped,
                "shadow_errors": self.shadow_errors,
                "last_error": self.last_error,
            }

    def collect(self) -> Iterator[Any]:
        """The ``streamlearn_prediction_log_*`` series (a prometheus_client collector)."""
        s = self.stats()
        for name, help_text in (
            ("logged", "Rows the broker acknowledged on the prediction log"),
            ("dropped", "Rows not logged because the prediction log's queue was full"),
            ("send_errors", "Rows the producer failed to send or deliver"),
            ("shadow_skipped", "Rows not shadow-scored because the prediction log was behind"),
        ):
            yield CounterMetricFamily(f"streamlearn_prediction_log_{name}", help_text, value=s[name])
        yield GaugeMetricFamily(
            "streamlearn_prediction_log_queue_depth",
            "Rows waiting in the prediction log's queue",
            value=s["queue_depth"],
        )
        yield GaugeMetricFamily(
            "streamlearn_prediction_log_up",
            "1 unless the prediction log is degraded",
            value=s["status"] == "ok",
        )


def _logged(answered: Answered, shadow: Sequence[dict[int, ShadowAnswer]]) -> Iterator[LoggedPrediction]:
    """The logged records of one answered request: the same predictions its answer gave."""
    model = answered.model
    version = model.version.number
    predictions, probabilities, classes = model.answers(answered.labels, answered.probabilities)
    if probabilities is None:
        probabilities = [None] * len(predictions)
    for i, (ident, row) in enumerate(zip(answered.ids, answered.rows)):
        yield LoggedPrediction(
            id=ident,
            x=row,
            version=version,
            prediction=predictions[i],
            probabilities=probabilities[i],
            classes=classes,
            ts=answered.ts,
            shadow=shadow[i] if shadow else {},
        )
