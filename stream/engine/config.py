"""What an engine is told (:class:`EngineConfig`) and what one run of it did (:class:`RunSummary`).

Plain, frozen data kept apart from the loop in :mod:`stream.engine.loop`, which
re-exports both names.

Examples
--------
>>> EngineConfig(checkpoint_every_batches=0)
Traceback (most recent call last):
...
stream.core.errors.ConfigError: checkpoint_every_batches must be at least 1 (None: no batch cadence)
>>> replay = EngineConfig(checkpoint_every_batches=None, checkpoint_every_seconds=None)
>>> replay.checkpoint_every_batches is None  # checkpoints only on request, revocation and at the end
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stream.core.deadletter import SinkStatus
from stream.core.errors import ConfigError
from stream.core.records import TopicPartition
from stream.engine.rejects import DeadLetterVerdict
from stream.sources.outage import OutageSummary


@dataclass(frozen=True)
class EngineConfig:
    """How the loop paces itself and when it stops.

    ``until_idle_seconds``: stop once no record has arrived for this long and
    the source's lag is known to be 0 -- never during a broker outage (the
    window residue is learned first, then checkpointed). ``max_events``:
    stop after learning at least this many events. ``late_policy``: what
    happens to events that arrive after their event-time window closed.

    ``checkpoint_every_batches`` / ``checkpoint_every_seconds``: the
    checkpoint cadences, whichever comes first; seconds are read from the
    engine's clock (:meth:`~stream.core.clock.Clock.monotonic_ms`). ``None``
    switches that cadence off; with both off the engine checkpoints only when
    asked (:meth:`~stream.engine.loop.Engine.request_checkpoint`), on a
    partition revocation and at the end -- what a replay wants.
    ``progress_every_seconds``: how often ``on_progress`` hears, on the same clock.
    """

    checkpoint_every_batches: int | None = 20
    checkpoint_every_seconds: float | None = 5.0
    poll_timeout_ms: int = 100
    max_poll_records: int = 5_000
    until_idle_seconds: float | None = None
    max_events: int | None = None
    prequential: bool = True
    late_policy: Literal["drop", "dead_letter"] = "dead_letter"
    ledger: bool = False
    #: How many recently taken-in event ids to remember, so a repeated id is
    #: never learned twice (0: off). Only ids the records carry count.
    dedup_window: int = 1_000_000
    duplicate_policy: Literal["drop", "dead_letter"] = "dead_letter"
    progress_every_seconds: float = 2.0
    #: When a learner that rehearses (:class:`~learners.base.Rehearsing`) may spend its
    #: rehearsal steps after a batch: ``caught_up`` -- only when the poll that brought the
    #: batch was not full (nothing waiting: a lagging daemon does the minimum);
    #: ``always`` -- after every batch (replay: the same steps on every run); ``never``.
    rehearse: Literal["caught_up", "always", "never"] = "caught_up"
    #: The share of records a run may fail to learn (undecodable or late) before it says so
    #: loudly (:mod:`stream.engine.rejects`); 1.0: never. Judged from ``dead_letter_min_records``
    #: records read on, so that one bad record at the start is not a rate of 100%.
    max_dead_letter_rate: float = 0.05
    dead_letter_min_records: int = 200

    def __post_init__(self) -> None:
        if self.checkpoint_every_batches is not None and self.checkpoint_every_batches < 1:
            raise ConfigError("checkpoint_every_batches must be at least 1 (None: no batch cadence)")
        if self.checkpoint_every_seconds is not None and self.checkpoint_every_seconds <= 0:
            raise ConfigError("checkpoint_every_seconds must be positive (None: no time cadence)")
        if self.late_policy not in ("drop", "dead_letter"):
            raise ConfigError("late_policy must be 'drop' or 'dead_letter'")
        if self.rehearse not in ("caught_up", "always", "never"):
            raise ConfigError("rehearse must be 'caught_up', 'always' or 'never'")
        if self.duplicate_policy not in ("drop", "dead_letter"):
            raise ConfigError("duplicate_policy must be 'drop' or 'dead_letter'")
        if self.dedup_window < 0:
            raise ConfigError("dedup_window must be 0 (off) or a number of ids")
        if self.max_poll_records < 1 or self.poll_timeout_ms < 0:
            raise ConfigError("max_poll_records must be >= 1 and poll_timeout_ms >= 0")
        if not 0.0 <= self.max_dead_letter_rate <= 1.0:
            raise ConfigError(
                f"max_dead_letter_rate must be between 0 and 1 (1: off), got {self.max_dead_letter_rate}"
            )
        if self.dead_letter_min_records < 1:
            raise ConfigError("dead_letter_min_records must be at least 1")


@dataclass(frozen=True)
class RunSummary:
    """What one :meth:`Engine.run` did (cumulative counters include restored ones)."""

    events_learned: int
    batches_learned: int
    events_read_this_run: int
    dead_letters: dict[str, int]
    late: int
    checkpoints_this_run: int
    accuracy: float | None
    elapsed_seconds: float
    stopped_because: str
    positions: dict[TopicPartition, int]
    #: The drift policy's counters (alarms, decisions by kind), ``None`` without a policy.
    drift: dict | None = None
    #: Events refused as repeats of a recently taken-in id.
    duplicates: int = 0
    #: The dead-letter destination at the end (``None`` with ``--dead-letter none``).
    dead_letter_status: SinkStatus | None = None
    #: The run's broker outages (``None`` if the broker never went away), set by :meth:`Engine.run`.
    outage: OutageSummary | None = None
    #: Fields met in records but not in the feature schema, by name (ignored or dead-lettered).
    unknown_fields: dict[str, int] | None = None
    #: This run's records not learned (undecodable or late) against ``max_dead_letter_rate``.
    dead_letter_rate: DeadLetterVerdict | None = None
