"""Which partitions each member of a scale-out run reads: decided by the members, not by a group coordinator.

Every member lists the topics' partitions, sorts them and takes every
``world``-th one from its rank: with one topic, partition ``p`` goes to member
``p mod world``. The split is recomputed only when the members meet again
after a restart or a membership change (a new rendezvous), so it never moves
under a running round. A member with no partition (more members than
partitions) reads nothing but still takes part in every round.

Examples
--------
>>> from stream.core.records import TopicPartition as TP
>>> parts = [TP("clicks", p) for p in range(5)]
>>> [tp.partition for tp in member_partitions(parts, rank=1, world=2)]
[1, 3]
>>> member_partitions(parts, rank=5, world=6)
[]
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from typing import Callable, Mapping, Sequence

from stream.core.errors import TopicNotFoundError
from stream.core.records import TopicPartition

__all__ = ["IdleSource", "agreed_partitions", "list_partitions", "member_partitions", "owned"]


def member_partitions(partitions: Sequence[TopicPartition], *, rank: int, world: int) -> list[TopicPartition]:
    """The partitions member ``rank`` of ``world`` reads: every ``world``-th of them in sorted order."""
    return [tp for i, tp in enumerate(sorted(partitions)) if i % world == rank]


def owned(
    positions: Mapping[TopicPartition, int], mine: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    """The part of a round's positions that belongs to the partitions ``mine``."""
    keep = set(mine)
    return {tp: pos for tp, pos in positions.items() if tp in keep}


def list_partitions(
    bootstrap: str, topics: Sequence[str], client_options: Mapping | None = None
) -> list[TopicPartition]:
    """Every partition of ``topics`` as the broker's metadata lists them.

    Raises
    ------
    TopicNotFoundError
        A topic does not exist (the members cannot agree on a split of nothing).
    """
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, **dict(client_options or {}))
    try:
        out, missing = [], []
        for topic in topics:
            found = consumer.partitions_for_topic(topic)
            if not found:
                missing.append(topic)
            out += [TopicPartition(topic, p) for p in sorted(found or ())]
    finally:
        consumer.close()
    if missing:
        raise TopicNotFoundError(
            f"topic(s) {', '.join(missing)} not found on {bootstrap}; create them first or fix --topic"
        )
    return out


def agreed_partitions(
    dist, lister: Callable[[], list[TopicPartition]], *, guard: AbstractContextManager | None = None
) -> list[TopicPartition]:
    """The partitions as rank 0 lists them, on every member (one broadcast; every member calls it).

    Each member listing for itself can split differently: a topic created or
    given partitions just before the start, or a broker answering stale
    metadata, shows some members more partitions than others -- then two
    members read one partition (learned twice) or none reads it. Rank 0's
    error, if listing fails, is raised on every member alike; ``guard`` wraps
    the broadcast only (e.g. :func:`~stream.members.engine.members_reachable`).

    >>> class One:  # a group of one member: the broadcast is the object itself
    ...     rank = 0
    ...     def broadcast_object(self, obj, src=0): return obj
    >>> agreed_partitions(One(), lambda: [TopicPartition("t", 1), TopicPartition("t", 0)])
    [TopicPartition(topic='t', partition=1), TopicPartition(topic='t', partition=0)]
    """
    listed: tuple[list[TopicPartition] | None, BaseException | None] = (None, None)
    if dist.rank == 0:
        try:
            listed = (list(lister()), None)
        except Exception as exc:  # noqa: BLE001 -- every member raises it, not rank 0 alone
            listed = (None, exc)
    with guard if guard is not None else nullcontext():
        partitions, error = dist.broadcast_object(listed)
    if error is not None:
        raise error
    return partitions


class IdleSource:
    """The source of a member with no partition: every poll waits its timeout and brings nothing.

    >>> src = IdleSource(); src.open(None); len(src.poll(0, 10)), src.lag()
    (0, 0)
    """

    def open(self, handler) -> None:
        if handler is not None:
            handler.on_assigned([])  # assigned nothing, now: the quiet time of --until-idle starts

    def poll(self, timeout_ms: int, max_records: int) -> dict:
        time.sleep(timeout_ms / 1000)
        return {}

    def commit(self, positions) -> None:
        pass

    def lag(self) -> int:
        return 0

    def close(self) -> None:
        pass
