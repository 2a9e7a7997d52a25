"""How a full retrain splits its data range into shards, and which rank reads which.

A retrain's result must not depend on how many processes ran it, so the data
is cut into a fixed number of *shards* (``--shards``, default 8) that do not
change with the world size. Shard ``k`` is a contiguous slice of the range's
offsets: the partitions' ``[start, end)`` ranges are laid end to end (topic,
then partition order) and cut into ``n_shards`` nearly equal slices, so a
shard is one or more *pieces* ``(partition, lo, hi)``. Rank ``r`` of ``w``
reads the shards ``k`` with ``k % w == r`` straight from Kafka; every step of
the training loop takes the same rows of every shard whatever rank holds it
(see :mod:`stream.reconcile.worker`).

Examples
--------
>>> from stream.core.records import TopicPartition as TP
>>> shards = plan_shards({TP("t", 0): (0, 10), TP("t", 1): (100, 106)}, 4)
>>> [[(p.partition.partition, p.lo, p.hi) for p in s.pieces] for s in shards]
[[(0, 0, 4)], [(0, 4, 8)], [(0, 8, 10), (1, 100, 102)], [(1, 102, 106)]]
>>> [s.index for s in owned(shards, rank=1, world=2)]
[1, 3]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from stream.core.errors import ConfigError
from stream.core.records import TopicPartition

__all__ = ["Piece", "Shard", "owned", "plan_shards"]


@dataclass(frozen=True)
class Piece:
    """The offsets ``[lo, hi)`` of one partition."""

    partition: TopicPartition
    lo: int
    hi: int

    def __len__(self) -> int:
        return self.hi - self.lo


@dataclass(frozen=True)
class Shard:
    """Shard ``index``: the pieces it reads, in order."""

    index: int
    pieces: tuple[Piece, ...]

    @property
    def offsets(self) -> int:
        """Offsets covered (an upper bound on the records: compaction and dead letters make fewer)."""
        return sum(len(p) for p in self.pieces)


def plan_shards(ranges: Mapping[TopicPartition, tuple[int, int]], n_shards: int) -> list[Shard]:
    """Cut ``ranges`` (per partition ``(start, end)``, half-open) into ``n_shards`` contiguous shards.

    Raises
    ------
    ConfigError
        ``n_shards`` is not positive.
    """
    if n_shards < 1:
        raise ConfigError(f"the number of shards must be at least 1, got {n_shards}")
    spans = [(tp, lo, hi) for tp, (lo, hi) in sorted(ranges.items()) if hi > lo]
    total = sum(hi - lo for _, lo, hi in spans)
    # Shard k covers global positions [k*total//n, (k+1)*total//n): sizes differ by at most one.
    bounds = [k * total // n_shards for k in range(n_shards + 1)]
    shards = []
    for k in range(n_shards):
        want_lo, want_hi = bounds[k], bounds[k + 1]
        pieces, base = [], 0
        for tp, lo, hi in spans:
            size = hi - lo
            a, b = max(want_lo, base), min(want_hi, base + size)
            if a < b:
                pieces.append(Piece(tp, lo + a - base, lo + b - base))
            base += size
        shards.append(Shard(k, tuple(pieces)))
    return shards


def owned(shards: list[Shard], *, rank: int, world: int) -> list[Shard]:
    """The shards rank ``rank`` of ``world`` reads (round robin)."""
    return [s for s in shards if s.index % world == rank]
