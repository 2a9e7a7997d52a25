"""The engine loop: poll -> decode -> window -> predict, then learn -> checkpoint.

One :class:`Engine` drives one learner from one source. Each micro-batch is
first scored (prequential, test-then-train) and then learned. Every
``checkpoint_every_batches`` batches or ``checkpoint_every_seconds`` seconds
of its clock (either ``None``: off), when asked (:meth:`Engine.request_checkpoint`)
and at the end, the engine takes one commit step (:meth:`Engine.checkpoint`), in this order:

1. flush the dead-letter sink, so no record's only copy is in a buffer;
2. write the checkpoint -- learner, window residue, positions, counters,
   ledger -- atomically (the commit point);
3. commit the positions to the consumer group (monitoring only; a failure is
   logged, never fatal, because the checkpoint already holds the truth).

On start it restores the newest checkpoint and the source seeks to its
positions, so a crash at any instant neither loses nor double-learns an event.
Each micro-batch goes through the stages of :mod:`stream.engine.stages`
(score, observe, drift, reconcile, gate, consolidate, learn), chosen once at
start from the parts configured. A reconciler (see
:mod:`stream.engine.reconcile_port`) runs full retrains beside the loop and may
swap in a caught-up retrain at a batch boundary. Cadences (checkpoint and
progress every N seconds) read the injected clock's
:meth:`~stream.core.clock.Clock.monotonic_ms` (:mod:`stream.engine.cadence`).
A stop request (SIGTERM/SIGINT) finishes the current batch, checkpoints,
commits and closes. Partition revocation checkpoints before the release.

:meth:`Engine.run` polls the engine's own source (:mod:`stream.engine.polling`):
a broker outage neither stops nor crashes it, and ``until_idle_seconds``
stops it only when the source is quiet *and* its lag is known to be 0
(:mod:`stream.engine.idle`) -- an outage is never taken for an idle topic.

Examples
--------
>>> import tempfile
>>> from stream.testing.doubles import ListSource, make_records
>>> from stream.codec.json_codec import CodecConfig
>>> from stream.window.count import CountWindow
>>> from learners.neural.learner import TorchLearner
>>> engine = Engine(
...     source=ListSource(make_records(200, n_features=3)),
...     codec=JsonCodec(CodecConfig(n_features=3)),
...     window=CountWindow(50),
...     learner_builder=lambda d: TorchLearner(n_features=d),
...     store=CheckpointStore(tempfile.mkdtemp()),
...     config=EngineConfig(until_idle_seconds=0),
... )
>>> engine.run().events_learned
200
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from learners.base import Learner
from stream.codec.json_codec import JsonCodec
from stream.core.clock import Clock, SystemClock
from stream.core.deadletter import LATE_REASON, CountingSink, DeadLetterSink, late_letters
from stream.core.errors import SchemaMismatchError
from stream.core.poll import PollColumns
from stream.core.records import Events, MicroBatch, TopicPartition
from stream.engine.batch_context import BatchContext, LiveModel
from stream.engine.cadence import CheckpointCadence
from stream.engine.checkpoint import Checkpoint, CheckpointStore
from stream.engine.config import EngineConfig, RunSummary
from stream.engine.dedup import RecentIds
from stream.engine.intake import decode_patiently, without_repeats
from stream.engine.intake_wire import DecodedPoll
from stream.engine.learner_shape import LearnerShape
from stream.engine.ledger import LearnLedger
from stream.engine.oversight import Oversight
from stream.engine.polling import poll_until_done
from stream.engine.progress import RunStats
from stream.engine.rejects import HINT, RejectTracker
from stream.engine.stages import batch_stages
from stream.sources.base import Source
from stream.sources.outage import OutageWatch
from stream.window.base import WindowOutput

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

__all__ = ["Engine", "EngineConfig", "LearnerBuilder", "RunSummary"]

LearnerBuilder = Callable[[int], Learner]


class Engine:
    """Runs prequential learning over a source; see the module docstring."""

    def __init__(
        self,
        *,
        source: Source,
        codec: JsonCodec,
        window,
        learner_builder: LearnerBuilder,
        store: CheckpointStore,
        dead_letters: DeadLetterSink | None = None,
        config: EngineConfig | None = None,
        clock: Clock | None = None,
        on_progress: Callable[[RunStats], None] | None = None,
        oversight: Oversight | None = None,
    ) -> None:
        self.source = source
        self.codec = codec
        self.window_config = window
        self.learner_builder = learner_builder
        self.store = store
        self.config = config or EngineConfig()
        self.clock = clock or SystemClock()
        self.on_progress = on_progress
        self.oversight = oversight or Oversight()
        self.gate = self.oversight.gate
        self.policy = self.oversight.policy
        self.observer = self.oversight.observer
        self.reconciler = self.oversight.reconciler
        self.feedback = self.oversight.feedback
        self._sink = CountingSink(dead_letters)
        self._shape = LearnerShape(codec)
        self._live = LiveModel()
        self._stages: tuple = ()  # the batch step's stage runners, chosen with the first batch
        self._windower = None
        self._positions: dict[TopicPartition, int] = {}
        self._stats = RunStats()
        # Per run, not checkpointed: the question is whether *this* run's input fits its configuration.
        self._rejects = RejectTracker(self.config.max_dead_letter_rate, self.config.dead_letter_min_records)
        self._recent: RecentIds | None = None
        self._ckpt_seq = 0
        self._cadence = CheckpointCadence(
            every_batches=self.config.checkpoint_every_batches,
            every_seconds=self.config.checkpoint_every_seconds,
            clock=self.clock,
        )
        self._dirty = False
        self._caught_up = True  # the last poll was not full: time to spare for rehearsal
        self._stop_reason: str | None = None
        self._assigned_at: float | None = None
        self._closed = False
        self._started = time.monotonic()
        self._at_start = (0, 0)

    # --------------------------------------------------------------- access
    # The EngineView a reconciler sees is this section (see stream.engine.reconcile_port).
    @property
    def learner(self) -> Learner | None:
        return self._live.learner

    @property
    def stats(self) -> RunStats:
        return self._stats

    @property
    def events_learned(self) -> int:
        return self._stats.events_learned

    @property
    def ledger(self) -> LearnLedger | None:
        return self._live.ledger

    @property
    def keeps_ledger(self) -> bool:
        return self._live.ledger is not None

    @property
    def codec_state(self) -> dict:
        return self.codec.schema_info()

    @property
    def positions(self) -> dict[TopicPartition, int]:
        """Per partition, the next offset to read (a copy)."""
        return dict(self._positions)

    def pending(self) -> Events | None:
        """Events read but not learned yet: the open window's residue."""
        return self._windower.pending() if self._windower is not None else None

    def new_learner(self, n_features: int) -> Learner:
        """A fresh learner as this engine builds them (the reconciler loads a retrain into one)."""
        return self._shape.build(self.learner_builder, n_features)

    def decode_events(self, poll: PollColumns) -> Events:
        """``poll`` decoded as this engine decodes, without dead-lettering (a re-read of handled records)."""
        return self.codec.decode(poll).events

    def request_checkpoint(self) -> None:
        """Make the current state durable at the end of this loop turn (a part changed the learner)."""
        self._cadence.request()

    @property
    def stop_requested(self) -> bool:
        return self._stop_reason is not None

    @property
    def stop_reason(self) -> str | None:
        return self._stop_reason

    @property
    def assigned_at(self) -> float | None:
        """When partitions were last assigned (:func:`time.monotonic`), ``None`` before."""
        return self._assigned_at

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the loop to finish its current batch, checkpoint and return (signal-safe)."""
        self._stop_reason = reason

    # -------------------------------------------------------------- restore
    def _restore(self) -> None:
        ckpt = self.store.latest()
        window = self.config.dedup_window
        if ckpt is None:
            self._windower = self.window_config.build()
            self._live.ledger = LearnLedger() if self.config.ledger else None
            self._recent = RecentIds(window) if window else None
            return
        configured = self.codec.n_features
        restored = ckpt.schema.get("n_features")
        if configured is not None and restored is not None and configured != restored:
            raise SchemaMismatchError(
                f"checkpoint in {self.store.directory} was made with {restored} features, "
                f"but {configured} are configured; use a new --checkpoint-dir or fix --n-features"
            )
        if restored is not None:
            self.codec = JsonCodec(self.codec.config, state=ckpt.schema)
            self._shape = LearnerShape(self.codec)
        self._positions = dict(ckpt.positions)
        self._stats = RunStats.from_counters(ckpt.counters)
        self._sink.counts.update(ckpt.counters.get("dead_letters", {}))
        self._windower = self.window_config.build(resume_state=ckpt.window)
        if ckpt.learner is not None:
            self._live.learner = self._shape.build(self.learner_builder, restored, saved=ckpt.learner)
            self._live.learner.load_state_dict(ckpt.learner)
        if self.config.ledger:
            self._live.ledger = LearnLedger.from_snapshot(ckpt.ledger) if ckpt.ledger else LearnLedger()
        if self.gate is not None:
            self.gate.restore(ckpt.components.get("gate"))
        if self.policy is not None:
            self.policy.restore(ckpt.components.get("drift"))
        recent = ckpt.components.get("dedup")
        if window:
            self._recent = RecentIds.from_snapshot(recent, window) if recent else RecentIds(window)
        if self.feedback is not None:
            self.feedback.restore(ckpt.components.get("feedback"))
        self._ckpt_seq = ckpt.seq
        log.info(
            "restored checkpoint %d: %d events learned, positions %s",
            ckpt.seq,
            self._stats.events_learned,
            self._positions,
        )

    # ------------------------------------------------- RebalanceHandler API
    def on_assigned(self, partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        self._assigned_at = time.monotonic()
        if self.feedback is not None:
            self.feedback.join.assigned(
                [(tp.topic, tp.partition) for tp in partitions], self.clock.monotonic_ms()
            )
        return {tp: self._positions[tp] for tp in partitions if tp in self._positions}

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        # Called from inside source.poll(), i.e. between batches: state is consistent.
        # Not while closing: a normal stop checkpointed already, and a failing
        # one must not write state its error may have left half-done.
        if self._dirty and not self._closed:
            self.checkpoint()

    # ---------------------------------------------------------------- loop
    def run(self, *, outage_watch: OutageWatch | None = None) -> RunSummary:
        """Run until idle, the end of a bounded source, ``max_events`` or a stop request; checkpoint on the way out.

        Parameters
        ----------
        outage_watch : OutageWatch, optional
            Reports broker outages and spaces the retries of a poll that
            raised (tests inject backoffs and a sleep); a default one otherwise.

        Returns
        -------
        RunSummary
            With ``outage`` set when the broker went away during the run.

        Notes
        -----
        Idle needs a lag known to be 0 and no outage (:mod:`stream.engine.idle`);
        the loop itself is :func:`stream.engine.polling.poll_until_done`.
        """
        return poll_until_done(self, outage_watch if outage_watch is not None else OutageWatch())

    # The loop in steps: run() is start, feed per poll, end_of_input, finish.
    # A driver that reads once for several engines (stream.replay.driver) calls
    # them itself, so every engine takes exactly the path run() takes.
    def start(self) -> None:
        """Lock the checkpoint directory, restore its newest checkpoint and open the source (it seeks there).

        Raises
        ------
        CheckpointLockedError
            Another engine already uses the checkpoint directory.
        UnreadableCheckpointError
            Every checkpoint there is unreadable and the store refuses a fresh start.
        """
        self._started = time.monotonic()
        # One writer per directory, held until close(): two engines would each
        # checkpoint the part of the stream they read and one would lose the other's.
        self.store.lock()
        try:
            self._restore()
            self.source.open(self)
        except BaseException:
            self.store.unlock()  # run() closes only an engine that started
            raise
        self._at_start = (self._stats.events_read, self._stats.checkpoints)
        self._cadence.start(batches_learned=self._stats.batches_learned)
        self._stages = ()  # chosen with the first batch: they depend on the learner (chunked or not)

    def _choose_stages(self) -> tuple:
        stages = batch_stages(
            self._live,
            self._stats,
            prequential=self.config.prequential,
            oversight=self.oversight,
            view=self,
            request_checkpoint=self.request_checkpoint,
            schema=self._schema,
            spare_time=self._spare_time(),
        )
        return tuple(stage.run for stage in stages)

    def _spare_time(self) -> Callable[[], bool] | None:
        """When the learner may rehearse after a batch (``EngineConfig.rehearse``); ``None``: never."""
        mode = self.config.rehearse
        if mode == "never":
            return None
        return (lambda: True) if mode == "always" else (lambda: self._caught_up)

    def feed(self, poll: PollColumns) -> None:
        """One loop turn: learn the batches ``poll`` (possibly empty) and the clock close; checkpoint when due."""
        if self.reconciler is not None:
            self.reconciler.at_boundary(self)  # between batches: the only time a retrain may be caught up
        self._caught_up = len(poll) < self.config.max_poll_records
        if len(poll):
            self._handle(self._ingest(poll))
        self._handle(self._windower.tick(self.clock.now_ms()))
        if self._rejects.newly_exceeded():
            # Once per run, and the run goes on: a daemon must not die on a bad producer.
            log.warning("records are not being learned: %s; %s", self._rejects.verdict().describe(), HINT)
        if self._dirty and self._cadence.due(batches_learned=self._stats.batches_learned):
            self.checkpoint()
            self._cadence.timer_restarted()

    def end_of_input(self) -> None:
        """No more records will come: learn the window residue (it is checkpointed by :meth:`finish`)."""
        self._learn_all(self._windower.flush())

    def finish(self, reason: str) -> RunSummary:
        """Make the last batches durable, report, close the source; the run's summary."""
        try:
            if self.gate is not None:
                self.gate.drain()  # the last judged version written before the final checkpoint
            if self._dirty:
                self.checkpoint()
            if self.on_progress is not None:
                self.report_progress()
        finally:
            self.close()
        read_at_start, ckpts_at_start = self._at_start
        return RunSummary(
            events_learned=self._stats.events_learned,
            batches_learned=self._stats.batches_learned,
            events_read_this_run=self._stats.events_read - read_at_start,
            dead_letters=dict(self._sink.counts),
            late=self._stats.late,
            checkpoints_this_run=self._stats.checkpoints - ckpts_at_start,
            accuracy=self._stats.accuracy,
            elapsed_seconds=time.monotonic() - self._started,
            stopped_because=reason,
            positions=dict(self._positions),
            drift=dict(self.policy.counts) if self.policy is not None else None,
            duplicates=self._stats.duplicates,
            dead_letter_status=self._sink.status(),
            unknown_fields=dict(self.codec.unknown_fields) or None,
            dead_letter_rate=self._rejects.verdict(),
        )

    def close(self) -> None:
        """Close the source and the dead-letter sink, then unlock the checkpoint directory (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.gate is not None:
                self.gate.close()  # stops the background publisher once its write is done
            if self.reconciler is not None:
                self.reconciler.close()
            self.source.close()
        finally:
            try:
                self._sink.close()
            finally:
                self.store.unlock()  # last: the final checkpoint and dead letters are written

    def _ingest(self, read: PollColumns) -> WindowOutput:
        poll, joining, refused = read, [], []
        if self.feedback is not None:
            # Both topics in, the joined training records out: what follows sees only those.
            poll, joining, refused = self.feedback.take(read, self.clock.monotonic_ms())
            self._sink.send(joining)
        decoded = self._decoded(poll)
        if decoded is None:  # stopped while the schema registry was away: the poll stays unread
            # (never with a join: joined records are JSON, and the spec refuses a registry format with one)
            return WindowOutput([])
        self._sink.send(decoded.dead_letters)
        self._rejects.observe(len(read), (letter.reason for letter in [*refused, *decoded.dead_letters]))
        events = decoded.events
        if self._recent is not None and len(events):
            dead_letter = self.config.duplicate_policy == "dead_letter"
            events, letters = without_repeats(decoded, poll, self._recent, dead_letter=dead_letter)
            self._stats.duplicates += len(decoded.events) - len(events)
            self._sink.send(letters)
        # INVARIANT: positions only move forward, one past the last record handed on.
        self._positions.update(read.next_positions())
        self._stats.events_read += len(read)
        self._dirty = True
        return self._windower.add(events)

    def _decoded(self, poll: PollColumns):
        """``poll`` decoded here, or already by the intake process (``--intake process``), whose codec state is adopted."""
        if isinstance(poll, DecodedPoll):
            # What the intake's codec produced up to this poll: checkpointed and published with it.
            if poll.codec_state is not None:
                self.codec = JsonCodec(self.codec.config, state=poll.codec_state)
                self._shape = LearnerShape(self.codec)
            return poll.decoded
        return decode_patiently(self.codec, poll, lambda: self.stop_requested)

    def _handle(self, out: WindowOutput) -> None:
        if out.late is not None and len(out.late):
            self._stats.late += len(out.late)
            self._rejects.add(LATE_REASON, len(out.late))  # dropped or dead-lettered: not learned
            if self.config.late_policy == "dead_letter":
                self._sink.send(late_letters(out.late))
            self._dirty = True
        self._learn_all(out.batches)

    def _learn_all(self, batches: list[MicroBatch]) -> None:
        for batch in batches:
            if len(batch):
                self._learn(batch)

    def _learn(self, batch: MicroBatch) -> None:
        """The batch step: run the stages chosen in :meth:`start` over one batch's context."""
        if self._live.learner is None:
            self._live.learner = self._shape.build(self.learner_builder, batch.X.shape[1])
        batch, letters = self._shape.fit(self._live.learner, batch)
        if letters:
            self._sink.send(letters)
            if not len(batch):
                return
        ctx = BatchContext(batch, time.perf_counter())
        if not self._stages:
            self._stages = self._choose_stages()
        for run_stage in self._stages:
            run_stage(ctx)
        self._dirty = True

    # ----------------------------------------------------------- checkpoint
    def checkpoint(self) -> None:
        """The commit step (see the module docstring for its three ordered steps)."""
        self._sink.flush()
        self._ckpt_seq += 1
        self._stats.dead_letters = dict(self._sink.counts)
        self.store.save(
            Checkpoint(
                seq=self._ckpt_seq,
                positions=dict(self._positions),
                learner=self._live.learner.state_dict() if self._live.learner is not None else None,
                window=self._windower.snapshot(),
                schema=self._schema(),
                counters=self._stats.counters(),
                ledger=self._live.ledger.snapshot() if self._live.ledger is not None else None,
                components=self._components(),
            )
        )
        self._stats.checkpoints += 1
        self._cadence.checkpointed(batches_learned=self._stats.batches_learned)
        self._dirty = False
        if self.feedback is not None:
            self.feedback.report()  # after the save: the registry shows committed figures only
        try:
            self.source.commit(self._positions)
        except Exception as exc:  # noqa: BLE001 -- monitoring only; the checkpoint is the truth
            log.warning("could not commit offsets to the consumer group (lag monitoring only): %s", exc)

    def _components(self) -> dict:
        components = {}
        if self.gate is not None:
            components["gate"] = self.gate.snapshot()
        if self.policy is not None:
            components["drift"] = self.policy.snapshot()
        if self._recent is not None:
            components["dedup"] = self._recent.snapshot()
        if self.feedback is not None:
            components["feedback"] = self.feedback.snapshot()
        return components

    def _schema(self) -> dict:
        """What a prediction needs to know about the input (stored in checkpoints and versions)."""
        return self.codec.schema_info()

    def report_progress(self) -> None:
        """Hand the run's statistics, brought up to date, to ``on_progress``."""
        stats = self._stats
        stats.dead_letters = dict(self._sink.counts)
        stats.dead_letter_status = self._sink.status()
        stats.dead_letter_rate = self._rejects.verdict()
        stats.join = self.feedback.join.report() if self.feedback is not None else None
        try:
            stats.lag = self.source.lag()
        except Exception:  # noqa: BLE001 -- lag is informational
            stats.lag = None
        if stats.last_loss is not None and not isinstance(stats.last_loss, float):
            stats.last_loss = float(stats.last_loss)  # the one host sync, at report time only
        self.on_progress(stats)
