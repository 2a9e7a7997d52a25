"""A bounded, read-only Kafka source for replays: an offset/time range, merged in timestamp order.

:class:`KafkaRangeSource` assigns the partitions of the replayed topics
directly (no consumer group: nothing is committed, no group is joined),
resolves ``--from``/``--to`` (:mod:`stream.sources.bounds`) to an offset range
per partition when it opens, and hands out the records of those ranges
merged across partitions in record-timestamp order. The merge only emits a
record when every partition that is not finished has a record buffered, so
the order -- and with it every micro-batch of a backtest -- is the same on
every run, whatever the fetch timing. Ties break by topic, then partition.

Range resolution checks the broker's answers, because not every
Kafka-protocol broker gives correct ones (tansu 0.x answers ListOffsets
"latest" with the last batch's base offset + 1 and ignores the timestamp of
a time lookup): the end of a partition is read from a fetch's high
watermark, and a time lookup is verified against the records around it and
otherwise found by binary search over fetched record timestamps (timestamps
non-decreasing within a partition, as Kafka's own lookup assumes).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Mapping

from stream.core.errors import BrokerUnavailableError, ConfigError, TopicNotFoundError
from stream.core.poll import PollColumns
from stream.core.records import TopicPartition
from stream.sources.base import PollBatch, RebalanceHandler
from stream.sources.bounds import RangeBound, resolve_bound
from stream.sources.kafka import KafkaSourceConfig, kafka_python_settings

log = logging.getLogger(__name__)

# Back-pressure: a partition far ahead in time is paused instead of buffered whole.
_PAUSE_ABOVE = 50_000
_RESUME_BELOW = 10_000
_PROBE_TIMEOUT_S = 10.0


class _Probe:
    """Single-record fetches from one partition at a time (a separate consumer, never in a group)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from kafka import KafkaConsumer

        self._consumer = KafkaConsumer(
            **{**settings, "group_id": None, "max_partition_fetch_bytes": 256 << 10}
        )
        self._assigned = None

    def _assign(self, tp: TopicPartition):
        from kafka import TopicPartition as KafkaTP

        ktp = KafkaTP(tp.topic, tp.partition)
        if self._assigned != ktp:
            self._consumer.assign([ktp])
            self._assigned = ktp
        return ktp

    def record_at(self, tp: TopicPartition, offset: int, end: int):
        """The first record at or after ``offset`` and before ``end``, or ``None``."""
        if offset >= end:
            return None
        ktp = self._assign(tp)
        self._consumer.seek(ktp, offset)
        deadline = time.monotonic() + _PROBE_TIMEOUT_S
        while time.monotonic() < deadline:
            for rec in self._consumer.poll(timeout_ms=200, max_records=1).get(ktp, ()):
                return rec if rec.offset < end else None
            if self._consumer.position(ktp) >= end:
                return None
        raise BrokerUnavailableError(
            f"no record arrived from {tp.topic}:{tp.partition} at offset {offset} "
            f"within {_PROBE_TIMEOUT_S:g}s"
        )

    def end_offset(self, tp: TopicPartition, begin: int, listed_end: int) -> int:
        """The partition's end as the high watermark of a fetch (``listed_end`` is a lower bound)."""
        ktp = self._assign(tp)
        self._consumer.seek(ktp, max(begin, listed_end - 1))
        deadline = time.monotonic() + _PROBE_TIMEOUT_S
        while time.monotonic() < deadline:
            self._consumer.poll(timeout_ms=100, max_records=1)
            high = self._consumer.highwater(ktp)
            if high is not None:
                return max(int(high), listed_end)
        return listed_end

    def close(self) -> None:
        self._consumer.close(autocommit=False)


class KafkaRangeSource:
    """Records of ``[start, end)`` per partition, merged in timestamp order; see the module docstring.

    ``ranges`` (per partition ``(start, end)``) and ``total`` are known once
    :meth:`open` returns; ``exhausted`` turns true after the last record was
    handed out. ``now_ms`` pins "now" for relative time bounds (tests).

    Raises
    ------
    BrokerUnavailableError, TopicNotFoundError
        On :meth:`open`, like :class:`~stream.sources.kafka.KafkaSource`.
    """

    def __init__(self, config: KafkaSourceConfig, start: RangeBound, end: RangeBound) -> None:
        if config.group_id:
            raise ConfigError("a replay reads without a consumer group (it commits nothing): drop the group")
        self.config = config
        self.start, self.end = start, end
        self.ranges: dict[TopicPartition, tuple[int, int]] = {}
        self.total = 0
        self.emitted = 0
        self._consumer = None
        self._buffers: dict[TopicPartition, deque] = {}
        self._complete: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()

    # ------------------------------------------------------------------ open
    def open(self, handler: RebalanceHandler) -> None:
        from kafka import KafkaConsumer
        from kafka import TopicPartition as KafkaTP
        from kafka.errors import KafkaConnectionError, KafkaTimeoutError

        cfg = self.config
        settings = kafka_python_settings(cfg)
        try:
            self._consumer = KafkaConsumer(**settings)
        except (KafkaTimeoutError, KafkaConnectionError):
            raise BrokerUnavailableError(
                f"no Kafka broker answered at {cfg.bootstrap!r}: check --bootstrap and that the broker is up"
            ) from None
        topics = sorted(set(cfg.topics) | {tp.topic for tp in cfg.partitions})
        missing = [t for t in topics if not self._consumer.partitions_for_topic(t)]
        if missing:
            self.close()
            raise TopicNotFoundError(
                f"topic(s) {', '.join(missing)} not found on {cfg.bootstrap}; fix --topic"
            )
        partitions = sorted(cfg.partitions) or [
            TopicPartition(t, p) for t in topics for p in sorted(self._consumer.partitions_for_topic(t))
        ]
        self.ranges = self._resolve(partitions, settings)
        positions = handler.on_assigned(partitions)  # a resumed backtest continues where it stopped
        active = []
        for tp, (start, end) in self.ranges.items():
            start = max(start, positions.get(tp, start))
            self.ranges[tp] = (start, end)
            if start < end:
                active.append(tp)
                self._buffers[tp] = deque()
            self.total += max(0, end - start)
        self._consumer.assign([KafkaTP(tp.topic, tp.partition) for tp in active])
        for tp in active:
            self._consumer.seek(KafkaTP(tp.topic, tp.partition), self.ranges[tp][0])
        log.info(
            "replaying %s records: %s",
            f"{self.total:,}",
            ", ".join(f"{tp.topic}:{tp.partition}[{s},{e})" for tp, (s, e) in self.ranges.items()),
        )

    def _resolve(
        self, partitions: list[TopicPartition], settings: dict
    ) -> dict[TopicPartition, tuple[int, int]]:
        from kafka import TopicPartition as KafkaTP

        ktps = [KafkaTP(tp.topic, tp.partition) for tp in partitions]
        begins = self._consumer.beginning_offsets(ktps)
        listed_ends = self._consumer.end_offsets(ktps)
        probe = _Probe(settings)
        try:
            ranges = {}
            for tp, ktp in zip(partitions, ktps):
                begin = int(begins[ktp])
                end = probe.end_offset(tp, begin, int(listed_ends[ktp]))

                def offset_for_time(tp_: TopicPartition, ts_ms: int, begin=begin, end=end) -> int:
                    return self._offset_for_time(probe, tp_, ts_ms, begin, end)

                start = resolve_bound(self.start, tp, begin=begin, end=end, offset_for_time=offset_for_time)
                stop = resolve_bound(self.end, tp, begin=begin, end=end, offset_for_time=offset_for_time)
                ranges[tp] = (start, max(start, stop))
            return ranges
        finally:
            probe.close()

    def _offset_for_time(self, probe: _Probe, tp: TopicPartition, ts_ms: int, begin: int, end: int) -> int:
        """The first offset whose record timestamp is >= ``ts_ms`` (``end`` if none); see the module docstring."""
        from kafka import TopicPartition as KafkaTP

        ktp = KafkaTP(tp.topic, tp.partition)
        answer = self._consumer.offsets_for_times({ktp: ts_ms}).get(ktp)
        candidate = end if answer is None else min(max(int(answer.offset), begin), end)
        if self._first_at_or_after(probe, tp, ts_ms, candidate, begin, end):
            return candidate
        lo, hi = begin, end  # the broker's answer was wrong: search the records themselves
        while lo < hi:
            mid = (lo + hi) // 2
            rec = probe.record_at(tp, mid, end)
            if rec is None or rec.timestamp >= ts_ms:
                hi = mid
            else:
                lo = rec.offset + 1
        log.info(
            "%s:%d: the broker's time lookup was off; found offset %d for %d by search",
            tp.topic,
            tp.partition,
            lo,
            ts_ms,
        )
        return lo

    @staticmethod
    def _first_at_or_after(
        probe: _Probe, tp: TopicPartition, ts_ms: int, candidate: int, begin: int, end: int
    ) -> bool:
        at = probe.record_at(tp, candidate, end)
        if at is not None and at.timestamp < ts_ms:
            return False
        if candidate == begin:
            return True
        # The record before the candidate must be older than ts_ms: search back to the previous record.
        before = probe.record_at(tp, max(begin, candidate - 1), end)
        return before is None or before.offset >= candidate or before.timestamp < ts_ms

    # ------------------------------------------------------------------ read
    #: Kafka records carry timestamps (the replay's clock and time bounds read them).
    record_timestamps = True

    def partitions(self) -> list[TopicPartition]:
        """The replayed partitions (known once :meth:`open` resolved the range)."""
        return list(self.ranges)

    def count_records(self) -> int:
        """Records in the resolved range (offset gaps from compaction count too)."""
        return self.total

    @property
    def exhausted(self) -> bool:
        return all(tp in self._complete and not buf for tp, buf in self._buffers.items())

    def poll_columns(self, timeout_ms: int, max_records: int) -> PollColumns:
        """Up to ``max_records`` records in merged order; waits up to ``timeout_ms`` for the merge to advance."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            self._fill(deadline)
            out = self._merge(max_records)
            if out or self.exhausted or time.monotonic() >= deadline:
                self.emitted += len(out)
                return PollColumns.from_records(out)

    def poll(self, timeout_ms: int, max_records: int) -> PollBatch:
        """The :class:`~stream.sources.base.Source` shape (partition-major); the engine uses :meth:`poll_columns`."""
        return self.poll_columns(timeout_ms, max_records).to_mapping()

    def _waiting(self) -> list[TopicPartition]:
        return [tp for tp, buf in self._buffers.items() if not buf and tp not in self._complete]

    def _fill(self, deadline: float) -> None:
        from kafka import TopicPartition as KafkaTP

        while self._waiting():
            fetched = self._consumer.poll(
                timeout_ms=max(0, min(100, int((deadline - time.monotonic()) * 1000))), max_records=20_000
            )
            for ktp, recs in fetched.items():
                tp = TopicPartition(ktp.topic, ktp.partition)
                if tp in self._complete:
                    continue
                end = self.ranges[tp][1]
                buf = self._buffers[tp]
                for rec in recs:
                    if rec.offset >= end:
                        break
                    buf.append(rec)
                if recs and recs[-1].offset >= end - 1:
                    self._finish(tp)
            if not fetched:
                for tp in self._waiting():  # e.g. the range ends on a gap (compaction, transaction markers)
                    if self._consumer.position(KafkaTP(tp.topic, tp.partition)) >= self.ranges[tp][1]:
                        self._finish(tp)
            self._pace()
            if time.monotonic() >= deadline:
                return

    def _finish(self, tp: TopicPartition) -> None:
        from kafka import TopicPartition as KafkaTP

        self._complete.add(tp)
        self._consumer.pause(KafkaTP(tp.topic, tp.partition))

    def _pace(self) -> None:
        from kafka import TopicPartition as KafkaTP

        for tp, buf in self._buffers.items():
            if tp in self._complete:
                continue
            ktp = KafkaTP(tp.topic, tp.partition)
            if tp not in self._paused and len(buf) > _PAUSE_ABOVE:
                self._consumer.pause(ktp)
                self._paused.add(tp)
            elif tp in self._paused and len(buf) < _RESUME_BELOW:
                self._consumer.resume(ktp)
                self._paused.discard(tp)

    def _merge(self, max_records: int) -> list:
        """Pop records in (timestamp, topic, partition) order while every unfinished partition has a head."""
        out: list = []
        buffers = self._buffers
        while len(out) < max_records:
            heads = []
            for tp, buf in buffers.items():
                if buf:
                    heads.append((buf[0].timestamp, tp))
                elif tp not in self._complete:
                    return out  # this partition's next record may come first: wait for it
            if not heads:
                return out
            heads.sort()
            _, tp = heads[0]
            bound = heads[1] if len(heads) > 1 else None
            buf = buffers[tp]
            take = max_records - len(out)
            while buf and take:
                if bound is not None and (buf[0].timestamp, tp) > bound:
                    break
                out.append(buf.popleft())
                take -= 1
            if not buf and tp not in self._complete:
                return out
        return out

    # ------------------------------------------------------------- Source API
    def commit(self, positions: Mapping[TopicPartition, int]) -> None:
        """A replay commits nothing: the topic's consumer groups never see it."""

    def lag(self) -> int | None:
        return max(0, self.total - self.emitted)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
            self._consumer = None
