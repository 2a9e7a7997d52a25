"""The Kafka dead-letter destination: ``<source topic>.dlq``, which can fail without stopping learning.

Each dead letter is published as its JSON envelope (:func:`stream.core.deadletter.envelope`),
keyed by the source record's key when it has one, with the reason and origin
also in headers (``dlq.reason``, ``dlq.topic``, ``dlq.partition``,
``dlq.offset``). The envelope always has a value and is cut to
``max_value_bytes`` of source payload, so tombstones, keyless records and
records larger than the broker's message limit are all publishable.

Sends are asynchronous; :meth:`KafkaDeadLetterSink.flush` (called before every
checkpoint) checks each delivery. A letter not acknowledged by then goes to
the on-disk :class:`~stream.sources.deadletter_spool.DeadLetterSpool`, the destination
is marked down, and later flushes try it again with backoff
(:class:`~stream.core.retry.RetryTimer`) -- learning never waits for it. When it
answers again the spool is sent, oldest first. A letter the broker refuses for
good (not retriable, e.g. an authorisation error) is kept in a local
``*.undeliverable.jsonl`` file and reported; it is never retried in a loop.

The daemon stops -- one clear error, :class:`DeadLetterUnavailableError` --
only when the spool would grow past ``max_spool_bytes`` (256 MiB by default):
at that point the destination has been down long enough that a person must
look. The stop happens before the checkpoint that would cover the newest
letters, so a restart re-reads their records: nothing is lost.
"""

from __future__ import annotations

import logging
import os
from typing import Iterable

from stream.core.deadletter import DeadLetter, SinkStatus, envelope
from stream.core.errors import ConfigError, StreamlearnError
from stream.core.retry import RetryTimer
from stream.sources.deadletter_spool import DeadLetterSpool

log = logging.getLogger(__name__)

#: Source payload kept in an envelope: base64 makes it 4/3 larger, so an
#: envelope stays well under Kafka's default 1 MiB message limit.
DEFAULT_MAX_VALUE_BYTES = 256 * 1024
DEFAULT_MAX_SPOOL_BYTES = 256 * 2**20
_DRAIN_CHUNK = 1000


class DeadLetterUnavailableError(StreamlearnError):
    """The dead-letter destination stayed down until the local spool reached its limit."""


class KafkaDeadLetterSink:
    """Publishes dead letters to ``<topic><suffix>``; see the module docstring.

    Parameters
    ----------
    bootstrap : str
        Kafka bootstrap servers.
    spool_path : path
        The spool file (the CLI puts it in the checkpoint directory, so a
        restart finds it).
    suffix : str
        Appended to the source topic to name the destination.
    max_value_bytes, max_spool_bytes : int
        Source payload kept per envelope; spool size at which the daemon stops.
    flush_timeout_s : float
        How long a flush waits for acknowledgements while the destination is up.
    retry : RetryTimer, optional
        Backoff between attempts while the destination is down.
    producer_config : dict
        Extra ``KafkaProducer`` settings (security, client id, ...).
    """

    def __init__(
        self,
        bootstrap: str,
        spool_path: str | os.PathLike[str],
        *,
        suffix: str = ".dlq",
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        max_spool_bytes: int = DEFAULT_MAX_SPOOL_BYTES,
        flush_timeout_s: float = 5.0,
        retry: RetryTimer | None = None,
        producer_config: dict | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.suffix = suffix
        self.max_value_bytes = max_value_bytes
        self.max_spool_bytes = max_spool_bytes
        self.flush_timeout_s = flush_timeout_s
        self.producer_config = dict(producer_config or {})
        self._retry = retry or RetryTimer()
        self._spool = DeadLetterSpool(spool_path)
        self._undeliverable_path = os.fspath(spool_path).removesuffix(".jsonl") + ".undeliverable.jsonl"
        self._undeliverable = 0
        self._producer = None
        self._in_flight: list[tuple[object, bytes]] = []

    # ------------------------------------------------------------- sending
    def send(self, letters: Iterable[DeadLetter]) -> None:
        for letter in letters:
            line = envelope(letter, max_value_bytes=self.max_value_bytes)
            # Down, or older letters still wait: queue behind them.
            if len(self._spool) or not self._retry.ready() or not self._send(line, letter):
                self._spool.append(line)

    def _send(self, line: bytes, letter: DeadLetter | None = None) -> bool:
        """Hand one envelope to the producer; False when it cannot take it now (the destination is down).

        A letter refused for good is kept in the undeliverable file (True: it is dealt with).
        """
        producer = self._producer_or_none()
        if producer is None:
            return False
        topic, key, headers = _route(line, letter, self.suffix)
        try:
            self._in_flight.append((producer.send(topic, value=line, key=key, headers=headers), line))
        except Exception as exc:  # noqa: BLE001 -- any refusal is the letter's problem, never the loop's
            if _retriable(exc):
                self._mark_down(exc)
                return False
            self._keep_undeliverable(line, exc)
        return True

    def _producer_or_none(self):
        """The producer, created on first use; ``None`` (destination down) while it cannot connect."""
        if self._producer is not None:
            return self._producer
        from kafka import KafkaProducer

        try:
            # Never block the learning loop for long: a send that cannot get
            # metadata or buffer space fails and its letter is spooled.
            config = {
                "acks": "all",
                "linger_ms": 5,
                "max_block_ms": 2_000,
                "bootstrap_timeout_ms": 5_000,
                **self.producer_config,
            }
            self._producer = KafkaProducer(bootstrap_servers=self.bootstrap, **config)
        except Exception as exc:  # noqa: BLE001 -- no broker, bad address: the destination is down
            self._mark_down(exc)
            return None
        return self._producer

    def _mark_down(self, exc: BaseException) -> None:
        """One failed attempt (not one per letter: the backoff counts attempts)."""
        first = not self._retry.down
        self._retry.failed(f"{type(exc).__name__}: {exc}")
        if first:
            log.warning(
                "dead-letter destination (%s*%s) is unavailable: %s; letters are spooled in %s and "
                "retried with backoff",
                self.bootstrap,
                self.suffix,
                self._retry.last_error,
                self._spool.path,
            )

    def _keep_undeliverable(self, line: bytes, exc: BaseException) -> None:
        with open(self._undeliverable_path, "ab") as f:
            f.write(line + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self._undeliverable += 1
        log.error(
            "the broker refused a dead letter for good (%s: %s); kept in %s",
            type(exc).__name__,
            exc,
            self._undeliverable_path,
        )

    # ------------------------------------------------------------ flushing
    def flush(self) -> None:
        """Make every letter so far delivered or spooled (fsync); send the spool when due.

        Raises
        ------
        DeadLetterUnavailableError
            The spool has grown past ``max_spool_bytes``.
        """
        if self._in_flight:
            unacknowledged, error = self._await(self.flush_timeout_s if not self._retry.down else 0.0)
            for line in unacknowledged:
                # The producer may still deliver it later, which makes this
                # letter a duplicate, never a loss.
                self._spool.append(line)
            self._attempted(error)
        if len(self._spool) and self._retry.ready():
            self._drain()
        self._spool.sync()
        if self._spool.size_bytes > self.max_spool_bytes:
            raise DeadLetterUnavailableError(
                f"the dead-letter destination {self.bootstrap} (*{self.suffix}) has been unavailable for "
                f"{self._retry.down_for():.0f}s ({self._retry.last_error}) and its spool {self._spool.path} "
                f"passed its limit of {self.max_spool_bytes / 2**20:.0f} MiB ({len(self._spool):,} letters): "
                "learning stopped before the last checkpoint so nothing is lost; bring the destination back, "
                "or raise STREAMLEARN_DEAD_LETTER_SPOOL_MB, or use --dead-letter file:PATH, then restart"
            )

    def _await(self, timeout_s: float) -> tuple[list[bytes], BaseException | None]:
        """Wait up to ``timeout_s`` for the in-flight letters: those not delivered, and the first error.

        Letters refused for good go to the undeliverable file and count as dealt with.
        """
        from kafka.errors import KafkaError

        in_flight, self._in_flight = self._in_flight, []
        if timeout_s > 0:
            try:
                self._producer.flush(timeout=timeout_s)
            except KafkaError:  # a timeout: the futures say which letters made it
                pass
        unacknowledged: list[bytes] = []
        error: BaseException | None = None
        for future, line in in_flight:
            if future.is_done and future.succeeded():
                continue
            exc = (
                future.exception
                if future.is_done
                else TimeoutError(f"not acknowledged within {timeout_s:g}s")
            )
            if future.is_done and not _retriable(exc):
                self._keep_undeliverable(line, exc)
                continue
            unacknowledged.append(line)
            error = error or exc
        return unacknowledged, error

    def _attempted(self, error: BaseException | None) -> None:
        if error is None:
            self._retry.succeeded()
        else:
            self._mark_down(error)

    def _drain(self) -> None:
        """Send the spool oldest first; on the first failure keep the rest for the next attempt."""
        lines = self._spool.read()
        # While down, probe with one letter rather than a whole chunk.
        chunk = 1 if self._retry.down else _DRAIN_CHUNK
        delivered = 0
        log.info("sending %d spooled dead letters", len(lines))
        while delivered < len(lines):
            batch = lines[delivered : delivered + chunk]
            if not all(self._send(line) for line in batch):
                self._in_flight = []  # still in the spool; a late delivery is a duplicate, never a loss
                break
            unacknowledged, error = self._await(self.flush_timeout_s)
            self._attempted(error)
            if unacknowledged:
                break
            delivered += len(batch)
            chunk = _DRAIN_CHUNK
        self._spool.drop_first(delivered)
        if delivered:
            log.warning("sent %d spooled dead letters; %d still spooled", delivered, len(self._spool))

    # ---------------------------------------------------------- reporting
    def status(self) -> SinkStatus:
        return SinkStatus(
            destination=f"<topic>{self.suffix}",
            down_for_seconds=self._retry.down_for(),
            last_error=self._retry.last_error,
            spooled=len(self._spool),
            spool_bytes=self._spool.size_bytes,
            undeliverable=self._undeliverable,
        )

    def close(self) -> None:
        """Flush what can be (never raising for a full spool: the letters are on disk), then close."""
        try:
            self.flush()
        except DeadLetterUnavailableError:
            pass
        finally:
            self._spool.close()
            if self._producer is not None:
                self._producer.close(timeout=5)


def _retriable(exc: BaseException | None) -> bool:
    """Whether trying again later may succeed (timeouts and connection errors do; size or auth errors never).

    Errors that are not Kafka's (a ``ValueError`` for an invalid topic name)
    will not go away by waiting either.
    """
    from kafka.errors import KafkaError, KafkaTimeoutError

    if isinstance(exc, (TimeoutError, KafkaTimeoutError)):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


def _route(line: bytes, letter: DeadLetter | None, suffix: str) -> tuple[str, bytes | None, list]:
    """Destination topic, key and headers of one envelope (read back from it for spooled letters)."""
    import base64

    import orjson

    if letter is not None:
        rec = letter.record
        topic, partition, offset, key, reason = rec.topic, rec.partition, rec.offset, rec.key, letter.reason
    else:
        doc = orjson.loads(line)
        topic, partition, offset, reason = doc["topic"], doc["partition"], doc["offset"], doc["reason"]
        key = None if doc["key_b64"] is None else base64.b64decode(doc["key_b64"])
    headers = [
        ("dlq.reason", reason[:200].encode("utf-8", "replace")),
        ("dlq.topic", topic.encode()),
        ("dlq.partition", str(partition).encode()),
        ("dlq.offset", str(offset).encode()),
    ]
    return topic + suffix, key, headers


def open_dead_letter_sink(
    spec: str, bootstrap: str | None, checkpoint_dir: str, kafka_options: dict | None = None
):
    """The sink ``--dead-letter SPEC`` names: ``kafka``, ``file:PATH`` (``file:`` = in the checkpoint dir) or ``none``.

    Raises
    ------
    ConfigError
        An unknown spec, or ``kafka`` without a Kafka source.
    """
    from stream.core.deadletter import FileDeadLetterSink
    from stream.core.settings import DeadLetterSettings

    if spec == "none":
        return None
    if spec == "kafka":
        if not bootstrap:
            raise ConfigError("--dead-letter kafka needs a Kafka source; use --dead-letter file:PATH")
        settings = DeadLetterSettings()
        # The spool sits beside the checkpoints: a restart finds the letters it holds.
        return KafkaDeadLetterSink(
            settings.bootstrap or bootstrap,
            os.path.join(checkpoint_dir, "dead-letters.spool.jsonl"),
            suffix=settings.suffix,
            max_value_bytes=settings.max_value_kb * 1024,
            max_spool_bytes=int(settings.spool_mb * 2**20),
            producer_config=kafka_options,
        )
    if spec.startswith("file:"):
        return FileDeadLetterSink(spec[5:] or os.path.join(checkpoint_dir, "dead-letters.jsonl"))
    raise ConfigError(f"--dead-letter {spec!r}: use kafka, file:PATH or none")
