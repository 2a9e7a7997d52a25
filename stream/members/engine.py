"""One member of a scale-out run: an :class:`~stream.engine.loop.Engine` whose checkpoint is a round.

``streamlearn run --members N`` starts N of these under torchrun (see
:mod:`stream.members.launch`). Each reads its own partitions
(:func:`stream.members.assign.member_partitions`) and learns as a single
daemon does; where a single daemon would checkpoint, the members meet in a
*round* (:meth:`MemberEngine.checkpoint`):

1. each learns its window's residue (a round leaves no event half-read, so
   the partitions can change hands at any round) and flushes its dead letters;
2. they gather one another's :class:`~stream.members.sync.MemberState` and
   each derives the same :class:`~stream.members.sync.RoundPlan`;
3. their learners become one model (:func:`stream.members.sync.combine`);
4. each sends rank 0 its :class:`~stream.members.shard.MemberShard`
   (positions, counters, learned and admitted ids of the round), and rank 0
   writes the round's checkpoint -- the combined model and everything every
   member read -- in one atomic file: the commit record.

A round starts when a member has learned ``--checkpoint-every-batches``
batches since the last one (the count keeps backtests deterministic), when
``--checkpoint-every-seconds`` passed (a slow member bounds nobody's wait),
after an empty poll (an idle member never holds a round up) and when a member
stops. On start, rank 0 reads the newest checkpoint and every member takes the
model and its partitions' positions from it: after any crash or membership
change the last committed round is where everyone resumes, and what was
learned since is redone -- never lost, never counted twice.

Only rank 0 publishes, gates and runs the drift policy: its gate judges only
the freshly combined model, on the first batch it reads after a round, and a
drift decision (rollback, reset) makes rank 0's model everyone's at the next
round.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Callable

from learners.neural.round_average import standardizer_moments
from stream.core.errors import ConfigError, StreamlearnError
from stream.core.poll import PollColumns
from stream.engine.checkpoint import Checkpoint, CheckpointStore
from stream.engine.config import RunSummary
from stream.engine.idle import IdleRule
from stream.engine.ledger import LearnLedger
from stream.engine.loop import Engine
from stream.engine.polling import poll_until_done
from stream.engine.progress import RunStats
from stream.engine.rejects import HINT
from stream.members.assign import owned
from stream.members.holdout import RoundGate, holdout_of
from stream.members.shard import (
    MemberShard,
    RoundRecentIds,
    absorb_ledger,
    add_counters,
    minus_counters,
)
from stream.members.sync import (
    MemberState,
    RoundPlan,
    check_schemas,
    combine,
    reset_moments,
    schema_fingerprint,
)
from stream.reconcile.distributed import DistContext
from stream.sources.outage import OutageWatch

log = logging.getLogger(__name__)

__all__ = ["MemberEngine", "MemberRole", "MembersLostError", "RoundStore", "members_reachable"]


class MembersLostError(StreamlearnError):
    """This member lost the others in a round (one died, or the network parted them): torchrun restarts them all."""


@contextmanager
def members_reachable(rank: int):
    """Turn the transport's error when another member is gone into one :class:`MembersLostError` line."""
    try:
        yield
    except RuntimeError as exc:
        if not _lost_peer(exc):
            raise  # e.g. a model that does not fit its checkpoint: a bug or a mistake, not a lost member
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MembersLostError(
            f"member {rank} lost the other members in a round ({first[:160]}); torchrun restarts every "
            "member, and each resumes the last committed round"
        ) from exc


#: What gloo, NCCL and the c10d store say when a peer is gone or unreachable.
_TRANSPORT_WORDS = (
    "connection",
    "connect",
    "closed",
    "timed out",
    "timeout",
    "reset by peer",
    "gloo",
    "nccl",
)


def _lost_peer(exc: RuntimeError) -> bool:
    import torch.distributed as dist

    text = str(exc).lower()
    return isinstance(exc, dist.DistError) or any(word in text for word in _TRANSPORT_WORDS)


class MemberRole:
    """This member's place: the process group, its partitions, and the stop rules the members decide together."""

    def __init__(
        self,
        dist: DistContext,
        partitions: list,
        *,
        until_idle: float | None = None,
        max_events: int | None = None,
        stop_note: Callable[[], str | None] = lambda: None,
        gated: bool = False,
    ) -> None:
        self.dist, self.partitions = dist, list(partitions)
        #: The run has a validation gate (on rank 0): every member sends it a holdout at each round.
        self.gated = gated
        self.until_idle, self.max_events = until_idle, max_events
        #: The launcher's stop request, read at every round: a member that was (re)starting when the
        #: signal came, with no handler yet, still stops (:func:`stream.members.launch.stop_requested`).
        self.stop_note = stop_note

    @property
    def rank(self) -> int:
        return self.dist.rank


class RoundStore:
    """Rank 0's checkpoint store as every member sees it: rank 0 reads and writes, the others get what it read.

    ``local`` is the member's own directory on ranks other than 0 (locked, for
    its dead-letter spool; no checkpoint is ever written there).
    """

    def __init__(self, dist: DistContext, local: CheckpointStore) -> None:
        self.dist, self.local = dist, local
        self.directory = local.directory

    def lock(self) -> None:
        self.local.lock()

    def unlock(self) -> None:
        self.local.unlock()

    def latest(self) -> Checkpoint | None:
        found = self.local.latest() if self.dist.rank == 0 else None
        return self.dist.broadcast_object(found)

    def save(self, checkpoint: Checkpoint) -> None:
        if self.dist.rank == 0:
            self.local.save(checkpoint)


class MemberEngine(Engine):
    """An engine that checkpoints in rounds with the other members; see the module docstring."""

    def __init__(self, *, member: MemberRole, **engine_args) -> None:
        super().__init__(**engine_args)
        self.member = member
        self.dist = member.dist
        self.store = RoundStore(member.dist, self.store)
        if self.feedback is not None or self.reconciler is not None:
            raise ConfigError("--members learns one topic; it takes neither --labels-topic nor --retrain-*")
        self._start_moments: dict | None = None
        self._round_events = 0  # events_learned when the round began
        self._round_counters: dict = {}  # counters when the round began (ranks other than 0)
        self._round_dead: dict = {}
        self._seen_decisions = 0
        self._seen_consolidations = 0
        self._fresh = True  # no batch learned since the learner became the round's model
        self._idle_now = False
        self._stopped_by_round = False
        self._idle: IdleRule | None = None
        self._watch: OutageWatch | None = None
        # Rank 0 judges each round's model on every member's first batch after it (stream.members.holdout).
        self._round_gate = RoundGate(self.gate) if self.gate is not None else None
        self._holdout = None  # this member's first batch after the last round (for rank 0's gate)

    # ----------------------------------------------------------------- run
    def run(self, *, outage_watch: OutageWatch | None = None) -> RunSummary:
        """Run until the members stop together (a signal to any, all idle, ``max_events`` in all)."""
        self._watch = outage_watch if outage_watch is not None else OutageWatch()
        return poll_until_done(self, self._watch)

    def start(self) -> None:
        super().start()
        if self.member.until_idle is not None:
            self._idle = IdleRule(self.member.until_idle, self.source, now=time.monotonic())

    def _restore(self) -> None:
        with members_reachable(self.dist.rank):
            super()._restore()  # every member gets rank 0's newest checkpoint (RoundStore.latest)
        if self.dist.rank != 0:
            # Rank 0 keeps the whole round's counters, ledger and positions; the others count a round at a time.
            self._positions = owned(self._positions, self.member.partitions)
            self._stats = RunStats()
            self._sink.counts.clear()
            if self._live.ledger is not None:
                self._live.ledger = LearnLedger()
            self._windower = self.window_config.build()
        if self._recent is not None:
            self._recent = RoundRecentIds.of(self._recent)
        learner = self._live.learner
        self._start_moments = standardizer_moments(learner.module) if learner is not None else None
        self._begin_round()

    # ---------------------------------------------------------------- feed
    def feed(self, poll: PollColumns) -> None:
        """One loop turn: learn what ``poll`` brings; meet the others in a round when one is due."""
        self._caught_up = len(poll) < self.config.max_poll_records
        now = time.monotonic()
        if len(poll):
            self._handle(self._ingest(poll))
            if self._idle is not None:
                self._idle.data_arrived(now)
        self._handle(self._windower.tick(self.clock.now_ms()))
        if self._rejects.newly_exceeded():
            log.warning("records are not being learned: %s; %s", self._rejects.verdict().describe(), HINT)
        self._idle_now = (
            not len(poll)
            and self._idle is not None
            and self._idle.idle(now, assigned_at=self.assigned_at, watch=self._watch or OutageWatch())
        )
        if not len(poll) or self._cadence.due(batches_learned=self._stats.batches_learned):
            self.checkpoint()
            self._cadence.timer_restarted()

    def _learn(self, batch) -> None:
        if self._fresh and self.member.gated:
            self._holdout = holdout_of(batch)  # unseen by the round's model: the gate's evidence
        super()._learn(batch)
        self._fresh = False

    def finish(self, reason: str) -> RunSummary:
        if not self._stopped_by_round:
            self.checkpoint()  # the others stop after this round too (its plan says so)
        self._dirty = False
        return super().finish(self._stop_reason or reason)

    # --------------------------------------------------------------- round
    def checkpoint(self) -> None:
        """A round with the other members (see the module docstring); rank 0 writes its checkpoint."""
        with members_reachable(self.dist.rank):
            self._round()

    def _round(self) -> None:
        self._learn_all(self._windower.flush())
        self._sink.flush()
        validated = self._judge_last_round()
        states = self.dist.gather_objects(self._state(validated))
        plan = RoundPlan.of(states, max_events=self.member.max_events)
        check_schemas(states)
        self._combine(plan)
        if plan.commit:
            self._commit(plan)
        if plan.stop is not None:
            self._stop_reason = plan.stop
            self._stopped_by_round = True
        self._fresh = True
        self._begin_round()

    def _judge_last_round(self) -> bool:
        """Rank 0's gate judges the last round's model on every member's holdout; whether it was validated."""
        if not self.member.gated:
            return False
        holdouts = self.dist.gather_to_root(self._holdout)
        self._holdout = None
        if self._round_gate is None:
            return False
        return self._round_gate.judge(holdouts, self._candidate_learner)

    def _candidate_learner(self, state: dict, schema: dict):
        learner = self._shape.build(self.learner_builder, schema.get("n_features"), saved=state)
        learner.load_state_dict(state)
        return learner

    def _state(self, validated: bool = False) -> MemberState:
        learner = self._live.learner
        return MemberState(
            events=self._stats.events_learned - self._round_events,
            total=self._stats.events_learned,
            stop=self._stop_reason or self.member.stop_note(),
            idle=self._idle_now,
            decided=self._decisions() > self._seen_decisions,
            consolidated=self._consolidations() > self._seen_consolidations,
            validated=validated,
            has_learner=learner is not None,
            n_classes=int(getattr(learner, "n_classes", 0) or 0) if learner is not None else 0,
            schema=schema_fingerprint(self._schema()) if learner is not None else "",
            dirty=self._dirty,
        )

    def _combine(self, plan: RoundPlan) -> None:
        if plan.adopt_from is None:
            return  # nobody has learned anything yet
        if plan.needs_learner:
            self._adopt(plan.adopt_from, needs=self.dist.rank in plan.needs_learner)
        learner = self._live.learner
        if not hasattr(learner, "module"):
            raise ConfigError(f"--members averages torch models; {type(learner).__name__} cannot be averaged")
        events = self._stats.events_learned - self._round_events
        self._start_moments = combine(self.dist, learner, plan=plan, events=events, start=self._start_moments)
        if self._round_gate is not None and (
            plan.events or plan.decided or plan.anchor or self._round_gate.empty
        ):
            # A snapshot only when the model changed: idle rounds come at every empty poll.
            self._round_gate.remember(learner.state_dict(), self._schema())

    def _adopt(self, src: int, *, needs: bool) -> None:
        """Members without a learner yet take rank ``src``'s, and its schema."""
        from stream.codec.json_codec import JsonCodec
        from stream.engine.learner_shape import LearnerShape

        mine = None
        if self.dist.rank == src:
            start = {name: tuple(t.cpu() for t in m) for name, m in (self._start_moments or {}).items()}
            mine = (self._live.learner.state_dict(), self._schema(), start)
        state, schema, start = self.dist.broadcast_object(mine, src=src)
        if not needs:
            return
        self.codec = JsonCodec(self.codec.config, state=schema)
        self._shape = LearnerShape(self.codec)
        learner = self._shape.build(self.learner_builder, schema.get("n_features"), saved=state)
        learner.load_state_dict(state)
        self._live.learner = learner
        # The round is combined from where ``src`` started it: the adopter's standardisers go back there,
        # so it adds nothing to the moments (with ``src``'s own, its events would be counted twice).
        self._start_moments = start
        reset_moments(learner.module, start)

    def _commit(self, plan: RoundPlan) -> None:
        self._share_admitted()
        shard = self._shard() if self.dist.rank != 0 else None
        shards = self.dist.gather_to_root(shard)
        if self.dist.rank != 0:
            self._stats.checkpoints += 1
            self._cadence.checkpointed(batches_learned=self._stats.batches_learned)
            self._dirty = False
            return
        for other in shards[1:]:
            self._absorb(other)
        if plan.stop is not None and self.gate is not None:
            self.gate.drain()  # the last judged version is written before the last round's checkpoint
        super().checkpoint()

    def _shard(self) -> MemberShard:
        counters = self._stats.counters()
        dead = dict(self._sink.counts)
        shard = MemberShard(
            positions=dict(self._positions),
            counters=minus_counters({**counters, "dead_letters": {}}, self._round_counters),
            dead_letters=minus_counters(dead, self._round_dead),
            ledger=self._live.ledger.snapshot() if self._live.ledger is not None else None,
        )
        if self._live.ledger is not None:
            self._live.ledger = LearnLedger()
        self._round_counters, self._round_dead = {**counters, "dead_letters": {}}, dead
        return shard

    def _absorb(self, shard: MemberShard) -> None:
        """Rank 0 adds another member's round to the state its checkpoint holds."""
        self._positions.update(shard.positions)
        if self._round_gate is not None:
            self._round_gate.count(int(shard.counters.get("batches_learned", 0)))
        stats = self._stats
        for name, value in add_counters(shard.counters, {}).items():
            if name != "dead_letters" and hasattr(stats, name):
                setattr(stats, name, type(getattr(stats, name))(getattr(stats, name) + value))
        self._sink.counts.update(shard.dead_letters)
        if self._live.ledger is not None:
            absorb_ledger(self._live.ledger, shard.ledger)

    def _share_admitted(self) -> None:
        """Every member remembers the ids every member took in this round: a repeat is caught on any partition."""
        if self._recent is None:
            return
        everyone = self.dist.gather_objects(self._recent.take_round())
        for rank, hashes in enumerate(everyone):
            if rank != self.dist.rank and len(hashes):
                self._recent.admit_hashes(hashes)
        self._recent.take_round()  # the others' ids are theirs to report, not this member's

    def _components(self) -> dict:
        return {**super()._components(), "members": {"world": self.dist.world}}

    def _begin_round(self) -> None:
        self._round_events = self._stats.events_learned
        self._seen_decisions = self._decisions()
        self._seen_consolidations = self._consolidations()

    def _decisions(self) -> int:
        counts = self.policy.counts if self.policy is not None else {}
        return int(counts.get("rollback", 0)) + int(counts.get("adapt", 0))

    def _consolidations(self) -> int:
        learner = self._live.learner
        return sum(int(getattr(p, "consolidations", 0)) for p in getattr(learner, "plugins", ()) or ())
