"""Tests for stream.window.event_time: per-partition watermarks and lateness, idleness,
resume, and property tests of the event-time invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from window_helpers import (
    PROPS,
    Op,
    Run,
    assert_conserved,
    assert_seq_contiguous,
    checkpoint_roundtrip,
    event_case,
    event_config,
    ids,
    make_events,
    positions,
)

from stream.core.clock import ManualClock
from stream.core.errors import CheckpointError
from stream.core.records import Events
from stream.window.base import WindowOutput
from stream.window.event_time import EventTimeWindow, EventTimeWindower


# ------------------------------------------------------- event-time windows
def ts_events(ts: list[int]) -> Events:
    return make_events([0] * len(ts), ts)


def partition_major(chunk: Events, partition_order: list[int] | None = None) -> Events:
    """A chunk as a Kafka poll hands it over: partition by partition, each in order."""
    rank = chunk.partition if partition_order is None else np.argsort(partition_order)[chunk.partition]
    return chunk.take(np.argsort(rank, kind="stable"))


def test_event_time_watermark_lateness_and_late_routing():
    windower = EventTimeWindow(10, allowed_lateness_ms=5).build()
    out = windower.add(ts_events([1, 12, 14]))  # watermark 9: nothing closed yet
    assert out.batches == [] and out.late is None
    assert windower.watermark == 9 and windower.closed_until == 0
    # 15 moves the watermark to 10 only after this call: 4 is not late yet.
    stream = ts_events([1, 12, 14, 3, 15, 4, 16, 7])
    windower = EventTimeWindow(10, allowed_lateness_ms=5).build()
    windower.add(stream.take(slice(0, 3)))
    out = windower.add(stream.take(slice(3, 6)))
    assert [(b.window_start, b.window_end, ids(b.events)) for b in out.batches] == [
        (0, 10, ["0:0", "0:3", "0:5"])
    ]
    assert out.late is None and windower.closed_until == 10
    out = windower.add(stream.take(slice(6, 8)))  # [0, 10) closed at the end of the last call
    assert ids(out.late) == ["0:7"] and windower.late_count == 1
    assert ids(windower.pending()) == ["0:1", "0:2", "0:4", "0:6"]


def test_event_time_reproduction_partition_major_polls_lose_nothing():
    # make_records' layout: ts = 1000 * i round-robin over 3 partitions, polled
    # 37 at a time and handed over partition by partition. A single global
    # watermark called ~38% of these late.
    n = 900
    stream = make_events([i % 3 for i in range(n)], [1_000 * i for i in range(n)])
    windower = EventTimeWindow(length_ms=20_000, allowed_lateness_ms=5_000).build()
    learned = []
    for a in range(0, n, 37):
        out = windower.add(partition_major(stream.take(slice(a, a + 37))))
        assert out.late is None
        learned += [i for b in out.batches for i in ids(b.events)]
    learned += [i for b in windower.flush() for i in ids(b.events)]
    assert windower.late_count == 0 and sorted(learned) == sorted(ids(stream))


def test_event_time_slowest_partition_holds_the_watermark():
    windower = EventTimeWindow(10).build()
    stream = make_events([0, 0, 1, 0, 1], [5, 35, 12, 50, 31])
    out = windower.add(stream.take(slice(0, 3)))  # min(35, 12) = 12 closes [0, 10), not [10, 20)
    assert [(b.window_start, ids(b.events)) for b in out.batches] == [(0, ["0:0"])]
    assert windower.watermark == 12 and windower.closed_until == 10
    assert windower.partition_max_ts == {("t", 0): 35, ("t", 1): 12}
    out = windower.add(stream.take(slice(3, 5)))  # min(50, 31) = 31 closes [10, 30); [20, 30) is empty
    assert [(b.window_start, ids(b.events)) for b in out.batches] == [(10, ["1:0"])]
    assert windower.closed_until == 30 and windower.pending().ts.tolist() == [35, 50, 31]


def test_event_time_first_batch_closes_windows_below_its_watermark():
    windower = EventTimeWindow(10).build()
    out = windower.add(ts_events([5, 35]))
    assert [(b.window_start, ids(b.events)) for b in out.batches] == [(0, ["0:0"])]
    assert out.late is None


def test_event_time_new_partition_cannot_move_the_watermark_back():
    windower = EventTimeWindow(10, allowed_lateness_ms=5).build()
    stream = make_events([0, 1, 1, 0], [40, 12, 36, 60])
    windower.add(stream.take(slice(0, 1)))  # watermark 35, closed_until 30
    out = windower.add(stream.take(slice(1, 3)))  # partition 1 appears far behind
    assert ids(out.late) == ["1:0"]  # 12 < closed_until: late, as documented
    assert windower.watermark == 35  # min(40, 36) - 5 = 31 < 35: the watermark stays
    out = windower.add(stream.take(slice(3, 4)))  # partition 1 now holds it at 36 - 5
    assert out.batches == [] and windower.watermark == 35


def test_event_time_topics_are_separate_partitions():
    windower = EventTimeWindow(10).build()
    stream = make_events([0, 0, 0], [50, 12, 60], topics=["a", "b", "a"])
    windower.add(stream.take(slice(0, 2)))
    assert windower.partition_max_ts == {("a", 0): 50, ("b", 0): 12}
    assert windower.watermark == 12
    windower.add(stream.take(slice(2, 3)))
    assert windower.watermark == 12  # topic b's partition 0 still holds it


def test_event_time_multiple_open_windows_emit_in_window_order():
    windower = EventTimeWindow(10, allowed_lateness_ms=30).build()
    windower.add(ts_events([25, 3, 17, 8, 21, 1]))
    out = windower.add(ts_events([60]))  # watermark 30 closes [0,10), [10,20), [20,30)
    got = [(b.window_start, b.ts.tolist()) for b in out.batches]
    assert got == [(0, [3, 8, 1]), (10, [17]), (20, [25, 21])]  # arrival order inside each
    assert [b.seq for b in out.batches] == [0, 1, 2]


def test_event_time_late_is_judged_by_closed_windows_not_by_data():
    # [10, 20) was empty when the watermark passed it; it is still closed.
    windower = EventTimeWindow(10).build()
    windower.add(ts_events([5]))
    windower.add(ts_events([35]))
    out = windower.add(ts_events([15, 29, 30]))
    assert out.late.ts.tolist() == [15, 29]
    assert windower.pending().ts.tolist() == [35, 30]


def test_event_time_idle_timeout_closes_the_tail():
    clock = ManualClock()
    windower = EventTimeWindow(100, allowed_lateness_ms=50, idle_timeout_ms=1_000, clock=clock).build()
    assert windower.add(ts_events([60, 120, 140])).batches == []  # watermark 90
    clock.advance(999)
    assert windower.tick().batches == []
    clock.advance(1)
    out = windower.tick()
    assert [(b.window_start, len(b)) for b in out.batches] == [(0, 1), (100, 2)]
    assert windower.watermark == 200 and windower.pending() is None
    out = windower.add(ts_events([199, 200]))  # those windows are closed now
    assert out.late.ts.tolist() == [199]


def quiet_partition_run(idle: int | None) -> tuple[EventTimeWindower, ManualClock, list, Events]:
    """Partitions 0 and 1 start together; then only partition 0 sends, one event per 20 ms."""
    clock = ManualClock()
    windower = EventTimeWindow(10, idle_timeout_ms=idle, clock=clock).build()
    stream = make_events(
        [0, 1] + [0] * 19 + [1, 1, 0], [0, 0] + [10 * k for k in range(1, 20)] + [5, 192, 260]
    )
    emitted = [(clock.now_ms(), b.window_start) for b in windower.add(stream.take(slice(0, 2))).batches]
    for k in range(1, 20):
        clock.advance(20)
        out = windower.add(stream.take(slice(k + 1, k + 2)))
        emitted += [(clock.now_ms(), b.window_start) for b in out.batches]
    return windower, clock, emitted, stream


def test_event_time_quiet_partition_stalls_every_window_without_idle_timeout():
    windower, clock, emitted, _ = quiet_partition_run(idle=None)
    # Documented: partition 1 holds the watermark at its last event until flush.
    assert emitted == [] and windower.watermark == 0
    assert windower.tick(clock.now_ms() + 10**9).batches == []
    assert [b.window_start for b in windower.flush()] == list(range(0, 200, 10))


def test_event_time_quiet_partition_stops_holding_back_after_idle_timeout():
    windower, clock, emitted, stream = quiet_partition_run(idle=100)
    # Partition 1's last event came at 0 ms; from 100 ms on it holds nothing back.
    assert min(t for t, _ in emitted) == 100
    assert [w for _, w in emitted] == list(range(0, 190, 10))  # up to partition 0's watermark 190
    assert windower.watermark == 190
    # Partition 1 speaks again: its old event is late, and from now on it
    # holds the watermark back again (at 192, not partition 0's 260).
    clock.advance(20)
    out = windower.add(stream.take(slice(21, 23)))
    assert ids(out.late) == ["1:1"] and out.batches == []
    assert windower.watermark == 190
    clock.advance(20)
    assert windower.add(stream.take(slice(23, 24))).batches == []
    assert windower.watermark == 192


def test_event_time_tick_drops_a_quiet_partition_from_the_watermark():
    clock = ManualClock()
    windower = EventTimeWindow(10, idle_timeout_ms=100, clock=clock).build()
    stream = make_events([0, 1, 0], [0, 0, 95])
    windower.add(stream.take(slice(0, 2)))
    clock.set(80)
    assert windower.add(stream.take(slice(2, 3))).batches == []  # partition 1 (0 ms) is not idle yet
    clock.set(99)
    assert windower.tick().batches == []
    clock.set(100)  # partition 1 is idle; partition 0 (80 ms) is not, so the stream is not idle
    assert [b.window_start for b in windower.tick().batches] == [0]
    assert windower.watermark == 95 and windower.pending().ts.tolist() == [95]


def test_event_time_idle_timer_pauses_while_down():
    clock = ManualClock()
    window = EventTimeWindow(100, idle_timeout_ms=1_000, clock=clock)
    windower = window.build()
    windower.add(ts_events([10]))
    clock.advance(600)
    state = windower.snapshot()
    clock.advance(60_000)  # the process was down for a minute
    resumed = window.build(resume_state=state)
    assert resumed.tick().batches == []  # downtime is not idleness
    clock.advance(399)
    assert resumed.tick().batches == []
    clock.advance(1)
    assert [len(b) for b in resumed.tick().batches] == [1]


def test_event_time_partition_idle_timers_pause_while_down():
    clock = ManualClock()
    window = EventTimeWindow(10, idle_timeout_ms=100, clock=clock)
    stream = make_events([0, 1, 0, 0], [0, 0, 50, 60])
    windower = window.build()
    windower.add(stream.take(slice(0, 2)))
    clock.advance(90)
    windower.add(stream.take(slice(2, 3)))  # partition 1 has been quiet for 90 ms
    state = windower.snapshot()
    assert [row[:3] for row in state["partitions"]] == [["t", 0, 50], ["t", 1, 0]]
    clock.advance(60_000)  # down for a minute
    resumed = window.build(resume_state=checkpoint_roundtrip(state))
    assert resumed.add(stream.take(slice(3, 4))).batches == []  # partition 1 still holds it
    clock.advance(10)  # now partition 1 has been quiet for 100 ms of up time
    assert [b.window_start for b in resumed.tick().batches] == [0, 50]
    assert resumed.watermark == 60


def test_event_time_resume_keeps_the_slow_partition_holding_the_watermark():
    window = EventTimeWindow(10)
    stream = make_events([0, 1, 0], [100, 20, 200])
    windower = window.build()
    windower.add(stream.take(slice(0, 2)))
    resumed = window.build(resume_state=checkpoint_roundtrip(windower.snapshot()))
    assert resumed.partition_max_ts == windower.partition_max_ts
    assert resumed.add(stream.take(slice(2, 3))).batches == []
    assert resumed.watermark == 20


def test_event_time_resume_from_a_snapshot_without_partitions():
    # Checkpoints written before per-partition watermarks: the watermark carries over.
    windower = EventTimeWindow(10).build()
    windower.add(ts_events([5, 25]))
    state = windower.snapshot()
    del state["partitions"]
    resumed = EventTimeWindow(10).build(resume_state=state)
    assert resumed.watermark == 25 and resumed.partition_max_ts == {}
    out = resumed.add(make_events([1, 1], [12, 40]))
    assert out.late.ts.tolist() == [12]
    assert [b.window_start for b in out.batches] == [20]


@pytest.mark.parametrize("rows", [[["t", 0]], [["t", "zero", 5, None]], 7, [None]])
def test_event_time_damaged_partitions_are_a_checkpoint_error(rows):
    state = EventTimeWindow(10).build().snapshot()
    state["partitions"] = rows
    with pytest.raises(CheckpointError, match="partitions"):
        EventTimeWindow(10).build(resume_state=state)


def test_event_time_tick_without_idle_timeout_is_a_no_op():
    windower = EventTimeWindow(10).build()
    windower.add(ts_events([1]))
    assert windower.tick(10**15).batches == []


def test_event_time_flush_closes_everything_and_later_events_are_late():
    windower = EventTimeWindow(10, allowed_lateness_ms=100).build()
    windower.add(ts_events([1, 11, 21]))
    assert [b.window_start for b in windower.flush()] == [0, 10, 20]
    assert windower.pending() is None and windower.closed_until == 30
    assert windower.add(ts_events([25])).late.ts.tolist() == [25]


def test_event_time_negative_timestamps_floor_into_windows():
    windower = EventTimeWindow(10, allowed_lateness_ms=20).build()
    windower.add(ts_events([-15, -1]))
    (a, b) = windower.flush()
    assert (a.window_start, b.window_start) == (-20, -10)


def expected_watermark(run: Run, op: Op, out: WindowOutput, lateness: int, idle: int | None) -> int | None:
    """The watermark after ``op``, by the documented rules, from the events added so far."""
    before = run.watermark_before
    added = run.stream.take(slice(0, run.pos))
    if op[0] == "add" and len(run.last_chunk) == 0 or op[0] == "tick" and (idle is None or len(added) == 0):
        return before
    now = run.clock.now_ms()
    part_max: dict[tuple[str, int], int] = {}
    seen: dict[tuple[str, int], int] = {}
    for t, p, ts, i in zip(added.topic.tolist(), added.partition.tolist(), added.ts.tolist(), ids(added)):
        part_max[t, p] = max(ts, part_max.get((t, p), ts))
        seen[t, p] = max(run.added_at[i], seen.get((t, p), run.added_at[i]))
    if op[0] == "tick" and now - max(seen.values()) >= idle:  # the whole stream is idle
        return max(before, out.batches[-1].window_end) if out.batches else before
    active = [m for k, m in part_max.items() if idle is None or now - seen[k] < idle]
    if not active:
        return before
    mark = min(active) - lateness
    return mark if before is None else max(before, mark)


def check_event_after_op(length: int, lateness: int, idle: int | None):
    def check(run: Run, op: Op, out: WindowOutput | None) -> None:
        w = run.windower
        pending = w.pending()
        if pending is not None:
            # INVARIANT: every window that the watermark has passed was emitted.
            assert w.closed_until is not None
            assert bool(np.all(pending.ts >= w.closed_until))
        if out is None:
            return
        # The watermark follows the slowest active partition, once per call.
        assert w.watermark == expected_watermark(run, op, out, lateness, idle)
        if op[0] == "add":
            # INVARIANT: late iff older than closed_until at the start of the call.
            chunk, closed = run.last_chunk, run.closed_before
            expected = [] if closed is None else ids(chunk.take(chunk.ts < closed))
            assert ids(out.late) == expected
        else:
            assert out.late is None
        # What closed: exactly the windows now below closed_until, of the
        # events that were pending or just accepted.
        closed_now = w.closed_until
        for b in out.batches:
            assert b.window_end <= closed_now

    return check


def assert_event_batches_valid(run: Run, length: int) -> None:
    pos = positions(run.stream)
    starts = []
    for _seq, start, end, batch_ids, _, watermark in run.batches:
        assert end == start + length and start % length == 0
        ts = run.stream.ts[[pos[i] for i in batch_ids]]
        # INVARIANT: no event outside its batch's window.
        assert bool(np.all((ts >= start) & (ts < end)))
        # INVARIANT: within a batch, arrival order is kept.
        assert [pos[i] for i in batch_ids] == sorted(pos[i] for i in batch_ids)
        # A window is emitted only once the watermark has reached its end.
        assert watermark is not None and watermark >= end
        starts.append(start)
    # INVARIANT: windows are emitted in increasing window order, each once.
    assert starts == sorted(set(starts))


@PROPS
@given(event_case())
def test_event_time_properties(case):
    stream, length, lateness, idle, ops, restore_at = case
    make = event_config(length, lateness, idle)
    plain = Run(make, stream)
    plain.after_op.append(check_event_after_op(length, lateness, idle))
    plain.run(ops)
    assert_conserved(plain)
    assert_seq_contiguous(plain)
    assert_event_batches_valid(plain, length)
    # INVARIANT: resume equivalence -- snapshot, build(resume_state), go on:
    # the same batches, late events and state as never stopping.
    resumed = Run(make, stream)
    resumed.after_op.append(check_event_after_op(length, lateness, idle))
    resumed.run(ops, restore_at)
    assert resumed.outcome() == plain.outcome()
    mine, theirs = resumed.windower.snapshot(), plain.windower.snapshot()
    for key in ("watermark", "closed_until", "partitions", "idle_elapsed_ms", "seq", "late_count"):
        assert mine[key] == theirs[key], key
    plain.record(WindowOutput(plain.windower.flush()))
    assert_conserved(plain, after_flush=True)
    assert_seq_contiguous(plain)
    assert_event_batches_valid(plain, length)


@st.composite
def in_order_partitions_case(draw):
    """Partitions whose events are each in event-time order, polled partition-major.

    ``globally_ordered``: the stream is in event-time order before each poll
    is regrouped by partition (what a producer writing in time order across
    partitions gives, e.g. make_records). Otherwise partitions run at
    arbitrary, different event times, and the first poll holds every one.
    """
    n_parts = draw(st.integers(1, 4))
    n = draw(st.integers(0, 150))
    globally_ordered = draw(st.booleans())
    if draw(st.booleans()):
        partitions = [i % n_parts for i in range(n)]
    else:
        partitions = draw(st.lists(st.integers(0, n_parts - 1), min_size=n, max_size=n))
    steps = draw(st.lists(st.integers(0, 2_000), min_size=n, max_size=n))
    if globally_ordered:
        ts = np.cumsum(steps).tolist()
    else:
        start = draw(st.lists(st.integers(-50_000, 50_000), min_size=n_parts, max_size=n_parts))
        clock = list(start)
        ts = []
        for p, step in zip(partitions, steps):
            clock[p] += step
            ts.append(clock[p])
    sizes = draw(st.lists(st.integers(1, 60), min_size=1, max_size=40))
    if not globally_ordered:
        everyone = max((partitions.index(p) for p in set(partitions)), default=0) + 1
        sizes[0] = max(sizes[0], everyone)
    orders = draw(st.lists(st.permutations(range(n_parts)), min_size=len(sizes), max_size=len(sizes)))
    length = draw(st.sampled_from([1, 10, 1_000, 20_000]))
    lateness = draw(st.sampled_from([0, 1, 500, 5_000]))
    return make_events(partitions, ts), sizes, orders, length, lateness


@PROPS
@given(in_order_partitions_case())
def test_event_time_in_order_partitions_polled_partition_major_lose_nothing(case):
    stream, sizes, orders, length, lateness = case
    windower = EventTimeWindow(length, allowed_lateness_ms=lateness).build()
    pos, k, learned = 0, 0, []
    while pos < len(stream):
        size, order = sizes[k % len(sizes)], orders[k % len(orders)]
        out = windower.add(partition_major(stream.take(slice(pos, pos + size)), order))
        # INVARIANT: nothing is late, however the polls cut the stream.
        assert out.late is None
        learned += [i for b in out.batches for i in ids(b.events)]
        pos, k = pos + size, k + 1
    learned += [i for b in windower.flush() for i in ids(b.events)]
    assert windower.late_count == 0
    assert sorted(learned) == sorted(ids(stream))
    assert_partition_offsets_increase_per_window(stream, learned)


def assert_partition_offsets_increase_per_window(stream: Events, learned: list[str]) -> None:
    """Within each (topic, partition), events are learned in offset order when their
    event times are in order (windows are emitted in order, arrival order within each)."""
    pos = positions(stream)
    last: dict[int, int] = {}
    for i in learned:
        k = pos[i]
        p = int(stream.partition[k])
        assert last.get(p, -1) < int(stream.offset[k])
        last[p] = int(stream.offset[k])
