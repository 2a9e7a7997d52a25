"""The intake process's side of ``--intake process``: poll the client, decode, ship each poll to the learning process.

:func:`serve` is the child's whole life (a ``spawn`` process started by
:class:`~stream.engine.intake_process.ProcessIntake`). It owns the Kafka (or
file) client and a codec started from the learning process's restored codec
state, and never positions or checkpoints: it reads where it is told.

The conversation over the one duplex pipe, in order (one reply per request):

- learning -> intake: ``("poll", timeout_ms, max_records)`` (a few outstanding:
  the bounded prefetch), ``("commit", positions)`` (monitoring only),
  ``("stop",)``; and the answers ``("positions", {tp: offset})`` and ``("revoked_done",)``;
- intake -> learning: ``("opened",)`` once, then per poll request ``("batch",
  ShippedPoll)`` or ``("raise", error)``; between them, inside the client's
  poll, ``("assigned", partitions)`` and ``("revoked", partitions)``, each
  waiting for its answer -- so the learning process checkpoints before the
  client releases a partition, after every batch shipped before it (FIFO).

The child exits when told to stop, when the pipe closes (the learning process
died: no orphan) or when its parent is gone; a failure is shipped as
``("raise", error)`` and ends it.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.errors import BrokerOutageError
from stream.core.poll import as_columns
from stream.core.records import TopicPartition
from stream.engine.intake import decode_patiently
from stream.engine.intake_wire import ShippedPoll
from stream.sources.base import Source, source_extras

__all__ = ["ChildSpec", "main", "serve"]

log = logging.getLogger(__name__)

# How often a child waiting for a request checks that its parent still lives.
_PARENT_CHECK_S = 0.5


@dataclass(frozen=True)
class ChildSpec:
    """What the intake process starts from (picklable: it crosses the spawn boundary).

    ``source_factory`` makes the unopened source (e.g. ``functools.partial(KafkaSource, config)``);
    ``codec_state`` is the learning process's restored :meth:`JsonCodec.schema_info`;
    ``with_records``: ship keys, timestamps and headers too (the learning process may
    dead-letter a decoded event, a duplicate id).
    """

    source_factory: Callable[[], Source]
    codec_config: CodecConfig
    codec_state: Mapping[str, Any] | None
    with_records: bool
    parent_pid: int
    log_level: int = logging.WARNING


class ParentGone(Exception):
    """The learning process closed the pipe or died: the child exits."""


class ParentLink:
    """The child's end of the pipe, and the :class:`~stream.sources.base.RebalanceHandler` its source calls."""

    def __init__(self, conn, stop, parent_pid: int) -> None:
        self._conn, self._stop, self._parent_pid = conn, stop, parent_pid
        self._deferred: deque = deque()  # requests that arrived while a rebalance answer was awaited

    def send(self, message: tuple) -> None:
        try:
            self._conn.send(message)
        except (BrokenPipeError, EOFError, ConnectionError) as exc:
            raise ParentGone from exc

    def _recv(self) -> tuple:
        while not self._conn.poll(_PARENT_CHECK_S):
            if os.getppid() != self._parent_pid:
                raise ParentGone
        try:
            return self._conn.recv()
        except (EOFError, ConnectionError) as exc:
            raise ParentGone from exc

    def next_request(self) -> tuple:
        """The next request of the learning process (deferred ones first)."""
        return self._deferred.popleft() if self._deferred else self._recv()

    def _ask(self, question: tuple, answer_kind: str) -> Any:
        self.send(question)
        while True:
            message = self._recv()
            if message[0] == answer_kind:
                return message[1] if len(message) > 1 else None
            self._deferred.append(message)

    # ------------------------------------------------- RebalanceHandler API
    def on_assigned(self, partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        if self._stop.is_set():
            return {}  # closing: nothing more is shipped, so no position matters
        return self._ask(("assigned", list(partitions)), "positions")

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        # Not while closing: the learning process checkpointed before it told us to stop.
        if not self._stop.is_set():
            self._ask(("revoked", list(partitions)), "revoked_done")


def main(conn, stop, spec: ChildSpec) -> None:
    """The intake process's entry point: its signals and logging, then :func:`serve`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the learning process stops us
    logging.basicConfig(
        level=spec.log_level, format="%(asctime)s %(levelname)s [intake] %(name)s: %(message)s"
    )
    serve(conn, stop, spec)


def serve(conn, stop, spec: ChildSpec) -> None:
    """Open the source, then answer each request until stopped (see the module docstring)."""
    link = ParentLink(conn, stop, spec.parent_pid)
    source = None
    try:
        source = spec.source_factory()
        codec = JsonCodec(spec.codec_config, state=spec.codec_state)
        source.open(link)
        link.send(("opened",))
        _answer(link, source, codec, stop, spec.with_records)
    except ParentGone:
        log.info("the learning process is gone; the intake process exits")
    except BaseException as exc:  # noqa: BLE001 -- shipped to the learning process, which raises it
        try:
            link.send(("raise", _picklable(exc)))
        except ParentGone:
            pass
    finally:
        if source is not None:
            try:
                source.close()
            except Exception as exc:  # noqa: BLE001 -- exiting anyway
                log.warning("closing the source: %s", exc)


def _answer(link: ParentLink, source: Source, codec: JsonCodec, stop, with_records: bool) -> None:
    extras = source_extras(source)
    poll_columns = extras.poll_columns or (lambda t, n: as_columns(source.poll(t, n)))
    last_state = codec.schema_info()
    while True:
        request = link.next_request()
        kind = request[0]
        if kind == "stop":
            return
        if kind == "commit":
            try:
                source.commit(request[1])
            except Exception as exc:  # noqa: BLE001 -- monitoring only; the checkpoint is the truth
                log.warning("could not commit offsets to the consumer group (lag monitoring only): %s", exc)
            continue
        if kind != "poll":
            raise RuntimeError(f"the intake process got an unexpected request {kind!r}")
        if stop.is_set():
            return
        try:
            poll = poll_columns(request[1], request[2])
        except BrokerOutageError as exc:
            link.send(("raise", exc))  # the learning process backs off and asks again
            continue
        decoded = decode_patiently(codec, poll, stop.is_set)
        if decoded is None:  # stopped while the schema registry was away: nothing of this poll is shipped
            return
        state = codec.schema_info()
        changed = state if state != last_state else None
        last_state = state
        shipped = ShippedPoll.of(
            poll,
            decoded,
            with_records=with_records,
            codec_state=changed,
            lag=_lag(source),
            outage=extras.outage() if extras.outage is not None else None,
            exhausted=bool(extras.bounded and source.exhausted),
        )
        link.send(("batch", shipped))


def _lag(source: Source) -> int | None:
    try:
        return source.lag()
    except Exception:  # noqa: BLE001 -- lag is informational (and None is "unknown")
        return None


def _picklable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (a StreamlearnError does), else a RuntimeError with its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {exc}")
