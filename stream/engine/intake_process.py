"""``--intake process``: the client and the decoding in a second process, so they overlap with learning.

Inline (the default), one thread polls the Kafka client, decodes and learns:
their costs add up, and kafka-python parses records in Python under the same
GIL. :class:`ProcessIntake` moves polling and decoding into a ``spawn`` child
(:mod:`stream.engine.intake_child`) and hands the engine each poll already
decoded (:class:`~stream.engine.intake_wire.DecodedPoll`); to the engine it is
just its source.

What stays with the learning process, so exactly-once is unchanged:

- positions and checkpoints. Offsets travel with each batch; the child only
  reads, from where the engine's :class:`~stream.sources.base.RebalanceHandler`
  says -- every assignment and revocation inside the child's client is asked
  of the engine synchronously, after every batch shipped before it (FIFO), so
  the engine checkpoints before a partition is released;
- the codec's state. The child starts from the engine's restored state and
  ships its state with a batch whenever it changed: what the engine
  checkpoints and publishes is what the child's codec had produced up to the
  batch learned;
- dead letters and repeated ids. Records the child's codec refused travel with
  their batch and go through the engine's sink; the duplicate-id memory is the
  engine's.

At most ``prefetch`` polls are in flight (memory bounded, a stop prompt). If
the child dies, the next poll raises :class:`~stream.core.errors.IntakeProcessError`
(one line; the engine stops, and a restart resumes from its last checkpoint);
if the learning process dies, the child sees its pipe close and exits.

Examples
--------
The child's source is made from a picklable factory, in the child (tests/e2e/test_intake_process.py
runs it)::

    intake = ProcessIntake(functools.partial(KafkaSource, config), codec_config, with_records=True)
    intake.open(engine)                 # the child seeks where the engine's checkpoint says
    poll = intake.poll_columns(100, 5000)  # a DecodedPoll: poll.decoded, poll.next_positions()

>>> ProcessIntake(dict, None, with_records=False, prefetch=0)
Traceback (most recent call last):
...
stream.core.errors.ConfigError: the intake prefetch must be at least 1 poll, got 0
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from typing import Any, Callable, Mapping, Protocol

from stream.codec.json_codec import CodecConfig
from stream.core.errors import ConfigError, IntakeProcessError
from stream.core.records import TopicPartition
from stream.engine.intake_child import ChildSpec, main
from stream.engine.intake_wire import DecodedPoll
from stream.sources.base import Outage, RebalanceHandler, Source

__all__ = ["BoundedProcessIntake", "IntakeOwner", "ProcessIntake"]

log = logging.getLogger(__name__)

# How often a wait for the child checks that it still lives.
_LIVENESS_CHECK_S = 0.5
# How long a stop waits for the child to close its client before it is terminated.
_CLOSE_TIMEOUT_S = 15.0


class IntakeOwner(RebalanceHandler, Protocol):
    """The engine as the intake process needs it: positions on assignment, a checkpoint on revocation, its codec state."""

    @property
    def codec_state(self) -> dict | None: ...


class ProcessIntake:
    """A :class:`~stream.sources.base.Source` whose polling and decoding run in a child process (module docstring).

    Parameters
    ----------
    source_factory : callable
        Makes the real, unopened source in the child; it must pickle
        (``functools.partial(KafkaSource, config)``, ``functools.partial(FileSource, paths)``).
    codec_config : CodecConfig
        The engine's codec configuration.
    with_records : bool
        Ship keys, timestamps and headers with each poll (needed when the engine
        dead-letters duplicate ids).
    prefetch : int
        Polls in flight at most (requested ahead of the engine).
    """

    def __init__(
        self,
        source_factory: Callable[[], Source],
        codec_config: CodecConfig,
        *,
        with_records: bool,
        prefetch: int = 2,
    ) -> None:
        if prefetch < 1:
            raise ConfigError(f"the intake prefetch must be at least 1 poll, got {prefetch}")
        self.source_factory = source_factory
        self.codec_config = codec_config
        self.with_records = with_records
        self.prefetch = prefetch
        self._handler: IntakeOwner | None = None
        self._proc = None
        self._conn = None
        self._stop = None
        self._outstanding = 0
        self._lag: int | None = None
        self._outage: Outage | None = None
        self._exhausted = False

    # ------------------------------------------------------------ Source API
    def open(self, handler: IntakeOwner) -> None:
        """Start the intake process from ``handler``'s codec state; return once its source is open (positions asked of ``handler``).

        Raises
        ------
        StreamlearnError
            What the child's source raised on opening (an unknown topic, no broker), as it raised it.
        IntakeProcessError
            The child died while opening.
        """
        ctx = multiprocessing.get_context("spawn")  # never fork a process that holds torch and client threads
        self._conn, child_conn = ctx.Pipe(duplex=True)
        self._stop = ctx.Event()
        self._handler = handler
        spec = ChildSpec(
            source_factory=self.source_factory,
            codec_config=self.codec_config,
            codec_state=handler.codec_state,
            with_records=self.with_records,
            parent_pid=os.getpid(),
            log_level=logging.getLogger().getEffectiveLevel(),
        )
        self._proc = ctx.Process(
            target=main, args=(child_conn, self._stop, spec), name="streamlearn-intake", daemon=True
        )
        self._proc.start()
        child_conn.close()  # only the child holds its end: its death closes the pipe
        try:
            self._receive(until="opened")
        except BaseException:
            self.close()
            raise

    def poll_columns(self, timeout_ms: int, max_records: int) -> DecodedPoll:
        """The next poll the child shipped, decoded; up to ``prefetch`` requests are kept in flight.

        Raises
        ------
        BrokerOutageError
            The child's source could not poll (the engine backs off and asks again).
        IntakeProcessError
            The intake process died or failed.
        """
        while self._outstanding < self.prefetch:
            self._send(("poll", timeout_ms, max_records))
            self._outstanding += 1
        shipped = self._receive(until="batch")
        self._lag, self._outage, self._exhausted = shipped.lag, shipped.outage, shipped.exhausted
        return shipped.columns()

    def poll(self, timeout_ms: int, max_records: int) -> dict:
        """The same poll as a mapping (the engine asks for columns; decoding is lost here)."""
        return self.poll_columns(timeout_ms, max_records).to_mapping()

    def commit(self, positions: Mapping[TopicPartition, int]) -> None:
        """Ask the child to commit ``positions`` to the group (monitoring only; it logs a failure)."""
        if self._conn is not None:
            self._send(("commit", dict(positions)))

    def lag(self) -> int | None:
        """The child's source's lag right after the last poll the engine took (exact: nothing taken since)."""
        return self._lag

    def outage(self) -> Outage | None:
        return self._outage

    def close(self) -> None:
        """Stop the child (it closes its client), draining what it still sends; terminate it if it hangs."""
        proc, conn = self._proc, self._conn
        if proc is None:
            return
        self._proc = None
        self._stop.set()
        try:
            conn.send(("stop",))
        except OSError:
            pass
        deadline = time.monotonic() + _CLOSE_TIMEOUT_S
        try:
            while proc.is_alive() and time.monotonic() < deadline:
                if conn.poll(0.05):
                    conn.recv()  # polls nobody will learn: dropped, their offsets were never taken
        except (EOFError, OSError):
            pass
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            log.warning("the intake process did not stop within %.0fs; terminating it", _CLOSE_TIMEOUT_S)
            proc.terminate()
            proc.join(5)
        conn.close()
        self._conn = None

    # -------------------------------------------------------------- the pipe
    def _send(self, message: tuple) -> None:
        try:
            self._conn.send(message)
        except OSError:
            raise self._died() from None

    def _receive(self, *, until: str) -> Any:
        """Messages until one of kind ``until`` (its payload); rebalance questions are answered on the way."""
        while True:
            kind, *payload = self._next_message()
            if kind in ("batch", "raise"):
                self._outstanding -= 1
            if kind == until:
                return payload[0] if payload else None
            if kind == "raise":
                raise payload[0]
            if kind == "assigned":
                positions = self._handler.on_assigned(payload[0])
                self._send(("positions", dict(positions)))
            elif kind == "revoked":
                self._handler.on_revoked(payload[0])  # the engine checkpoints here, before the release
                self._send(("revoked_done",))
            else:
                raise IntakeProcessError(f"the intake process sent an unexpected {kind!r} message")

    def _next_message(self) -> tuple:
        while True:
            try:
                if self._conn.poll(_LIVENESS_CHECK_S):
                    return self._conn.recv()
            except (EOFError, OSError):
                raise self._died() from None
            if not self._proc.is_alive():
                raise self._died()

    def _died(self) -> IntakeProcessError:
        proc = self._proc
        if proc is not None:
            proc.join(1)
        code = proc.exitcode if proc is not None else None
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        return IntakeProcessError(
            f"the intake process (--intake process) {how}; stopping: a restart resumes from the last checkpoint"
        )


class BoundedProcessIntake(ProcessIntake):
    """A :class:`ProcessIntake` over a bounded source (files): it ends when the child's source is exhausted."""

    record_timestamps = False

    @property
    def exhausted(self) -> bool:
        return self._exhausted

    def partitions(self) -> list[TopicPartition]:
        return self.source_factory().partitions()

    def count_records(self) -> int:
        return self.source_factory().count_records()
