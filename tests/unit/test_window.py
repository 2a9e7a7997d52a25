"""Tests for stream.window.windows: examples, config validation, parsing and property tests
of the windowing invariants (no loss / no duplicate, order, resume equivalence,
per-partition event-time watermarks and lateness, idleness, processing-time
closing)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.core.clock import Clock, ManualClock, SystemClock
from stream.core.errors import CheckpointError, ConfigError, SchemaMismatchError
from stream.core.records import Events
from stream.window.windows import (
    CountWindow,
    EventTimeWindow,
    EventTimeWindower,
    ProcessingTimeWindow,
    WindowConfig,
    Windower,
    WindowOutput,
    parse_window,
)

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------ helpers
def make_events(
    partitions: list[int],
    ts: list[int] | None = None,
    *,
    n_features: int = 2,
    seed: int = 0,
    topics: list[str] | None = None,
) -> Events:
    """A stream in arrival order: offsets increase per partition, ids are "p:o"
    (or "topic:p:o" when ``topics`` is given)."""
    n = len(partitions)
    topic_of = topics if topics is not None else ["t"] * n
    next_offset: dict[tuple[str, int], int] = {}
    offsets = []
    for t, p in zip(topic_of, partitions):
        offsets.append(next_offset.get((t, p), 0))
        next_offset[t, p] = offsets[-1] + 1
    rng = np.random.default_rng(seed)
    if topics is None:
        names = [f"{p}:{o}" for p, o in zip(partitions, offsets)]
    else:
        names = [f"{t}:{p}:{o}" for t, p, o in zip(topics, partitions, offsets)]
    return Events(
        X=rng.normal(size=(n, n_features)).astype(np.float32),
        y=rng.integers(0, 2, size=n).astype(np.int64),
        ts=np.asarray(ts if ts is not None else np.arange(n), dtype=np.int64),
        ids=np.array(names, dtype=str),
        topic=np.array(topic_of, dtype=str),
        partition=np.asarray(partitions, dtype=np.int32),
        offset=np.asarray(offsets, dtype=np.int64),
    )


def random_events(n: int, seed: int = 0, ts: list[int] | None = None) -> Events:
    rng = np.random.default_rng(seed)
    return make_events(rng.integers(0, 3, size=n).tolist(), ts, seed=seed)


def ids(events: Events | None) -> list[str]:
    return [] if events is None else events.ids.tolist()


def checkpoint_roundtrip(state: dict) -> dict:
    """What a checkpoint does to a snapshot: arrays copied out, plain data rebuilt."""
    return copy.deepcopy(state)


def assert_plain(value: object) -> None:
    """Snapshots hold only plain data and numpy arrays (no live objects, nothing to pickle)."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str)
            assert_plain(v)
    elif isinstance(value, list):
        for v in value:
            assert_plain(v)
    else:
        assert value is None or isinstance(value, (int, str, np.ndarray)), type(value)


# Ops of a script: ("add", k) adds the next k events of the stream;
# ("advance", ms) moves the manual clock; ("tick",) calls tick().
Op = tuple


class Run:
    """Drives one windower through a script and records everything it emits."""

    def __init__(self, make_config: Callable[[Clock], WindowConfig], stream: Events) -> None:
        self.clock = ManualClock(start_ms=0)
        self.config = make_config(self.clock)
        self.windower: Windower = self.config.build()
        self.stream = stream
        self.pos = 0
        self.batches: list = []  # (seq, start, end, ids, emitted_at, watermark_at_emit)
        self.late: list[str] = []
        self.added_at: dict[str, int] = {}
        self.after_op: list[Callable[[Run, Op, WindowOutput | None], None]] = []

    def record(self, out: WindowOutput) -> None:
        wm = getattr(self.windower, "watermark", None)
        for b in out.batches:
            self.batches.append(
                (b.seq, b.window_start, b.window_end, tuple(ids(b.events)), self.clock.now_ms(), wm)
            )
        self.late.extend(ids(out.late))

    def step(self, op: Op) -> None:
        out = None
        # What checks need to know about the windower as the op began.
        self.watermark_before = getattr(self.windower, "watermark", None)
        self.closed_before = getattr(self.windower, "closed_until", None)
        self.pending_before = ids(self.windower.pending())
        self.last_chunk = None
        if op[0] == "add":
            chunk = self.stream.take(slice(self.pos, self.pos + op[1]))
            self.last_chunk = chunk
            self.pos += len(chunk)
            for i in ids(chunk):
                self.added_at[i] = self.clock.now_ms()
            out = self.windower.add(chunk)
        elif op[0] == "advance":
            self.clock.advance(op[1])
        elif op[0] == "tick":
            out = self.windower.tick()
        else:  # pragma: no cover
            raise AssertionError(op)
        if out is not None:
            assert isinstance(out, WindowOutput)
            self.record(out)
        for check in self.after_op:
            check(self, op, out)

    def restore(self) -> None:
        state = self.windower.snapshot()
        assert_plain(state)
        self.windower = self.config.build(resume_state=checkpoint_roundtrip(state))

    def run(self, ops: list[Op], restore_at: int | None = None) -> Run:
        for i, op in enumerate(ops):
            if i == restore_at:
                self.restore()
            self.step(op)
        if restore_at is not None and restore_at >= len(ops):
            self.restore()
        return self

    def outcome(self) -> tuple:
        """Everything observable, for comparing two runs."""
        emitted = [b[:4] for b in self.batches]
        return (
            emitted,
            self.late,
            ids(self.windower.pending()),
            self.windower.late_count,
            self.windower.batches_emitted,
        )


def assert_conserved(run: Run, after_flush: bool = False) -> None:
    """INVARIANT: every added event is in exactly one batch, or late, or pending."""
    added = ids(run.stream.take(slice(0, run.pos)))
    in_batches = [i for b in run.batches for i in b[3]]
    pending = ids(run.windower.pending())
    everything = in_batches + run.late + pending
    assert sorted(everything) == sorted(added)
    assert len(set(everything)) == len(everything)
    if after_flush:
        assert pending == []
    assert run.windower.late_count == len(run.late)


def assert_seq_contiguous(run: Run) -> None:
    assert [b[0] for b in run.batches] == list(range(len(run.batches)))
    assert run.windower.batches_emitted == len(run.batches)
    assert all(len(b[3]) > 0 for b in run.batches), "empty windows must emit nothing"


def positions(stream: Events) -> dict[str, int]:
    return {i: k for k, i in enumerate(ids(stream))}


def assert_arrival_order_kept(run: Run) -> None:
    """Count/processing windows: batches then pending are the arrival order, in one piece.

    This implies offsets within each (topic, partition) increase inside each
    batch and across consecutive batches.
    """
    flat = [i for b in run.batches for i in b[3]] + ids(run.windower.pending())
    assert flat == ids(run.stream)[: run.pos]


def assert_partition_offsets_increase(stream: Events, batches: list) -> None:
    pos = positions(stream)
    last: dict[tuple[str, int], int] = {}
    for b in batches:
        for i in b[3]:
            k = pos[i]
            key = (str(stream.topic[k]), int(stream.partition[k]))
            assert last.get(key, -1) < int(stream.offset[k])
            last[key] = int(stream.offset[k])


# --------------------------------------------------------------- strategies
def chunk_sizes(n: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, max(n, 1)), min_size=1, max_size=12)


@st.composite
def count_case(draw):
    n = draw(st.integers(0, 80))
    partitions = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    size = draw(st.integers(1, 12))
    sizes = draw(chunk_sizes(n))
    ops = [("add", k) for k in sizes] + [("add", n)]  # the last add takes the rest
    restore_at = draw(st.integers(0, len(ops)))
    return make_events(partitions), size, ops, restore_at


@st.composite
def processing_case(draw):
    n = draw(st.integers(0, 60))
    partitions = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    length = draw(st.sampled_from([1, 7, 10, 100]))
    op = st.one_of(
        st.tuples(st.just("add"), st.integers(0, 10)),
        st.tuples(st.just("advance"), st.integers(0, 250)),
        st.tuples(st.just("tick")),
    )
    ops = draw(st.lists(op, max_size=30)) + [("add", n)]
    restore_at = draw(st.integers(0, len(ops)))
    return make_events(partitions), length, ops, restore_at


@st.composite
def event_case(draw, with_time_ops: bool = True):
    n = draw(st.integers(0, 60))
    partitions = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    # Sometimes partition 2 goes quiet part-way (exercises per-partition idleness).
    quiet_after = draw(st.sampled_from([None, None, 0.2, 0.5]))
    if quiet_after is not None:
        partitions = [p if p < 2 or k < quiet_after * n else k % 2 for k, p in enumerate(partitions)]
    # Mostly increasing event time with jitter, plus the odd straggler.
    base = draw(st.lists(st.integers(0, 15), min_size=n, max_size=n))
    jitter = draw(st.lists(st.integers(-40, 20), min_size=n, max_size=n))
    # Partitions may run at different event times (one far behind the others).
    skew = draw(st.lists(st.sampled_from([0, 0, 30, 200]), min_size=3, max_size=3))
    ts = (
        (np.cumsum(base) + np.array(jitter, dtype=np.int64) + np.array(skew)[partitions]).tolist()
        if n
        else []
    )
    length = draw(st.sampled_from([1, 5, 10, 25]))
    lateness = draw(st.sampled_from([0, 3, 10, 30]))
    idle = draw(st.sampled_from([None, 50])) if with_time_ops else None
    if with_time_ops:
        op = st.one_of(
            st.tuples(st.just("add"), st.integers(0, 10)),
            st.tuples(st.just("advance"), st.integers(0, 60)),
            st.tuples(st.just("tick")),
        )
        ops = draw(st.lists(op, max_size=30)) + [("add", n)]
    else:
        ops = [("add", k) for k in draw(chunk_sizes(n))] + [("add", n)]
    restore_at = draw(st.integers(0, len(ops)))
    return make_events(partitions, ts), length, lateness, idle, ops, restore_at


def event_config(length: int, lateness: int, idle: int | None) -> Callable[[Clock], WindowConfig]:
    return lambda clock: EventTimeWindow(
        length, allowed_lateness_ms=lateness, idle_timeout_ms=idle, clock=clock
    )


# ------------------------------------------------------------ count windows
def test_count_window_three_over_seven_events():
    stream = random_events(7)
    windower = CountWindow(3).build()
    out = windower.add(stream)
    assert [len(b) for b in out.batches] == [3, 3]
    assert [b.seq for b in out.batches] == [0, 1]
    assert all(b.window_start is None and b.window_end is None for b in out.batches)
    assert out.late is None
    assert ids(windower.pending()) == ids(stream)[6:]
    flushed = windower.flush()
    assert [(b.seq, len(b)) for b in flushed] == [(2, 1)]
    assert windower.pending() is None


def test_count_window_batches_straddle_add_calls():
    stream = random_events(10)
    windower = CountWindow(4).build()
    sizes = []
    for a, b in [(0, 1), (1, 3), (3, 9), (9, 10)]:
        sizes += [len(x) for x in windower.add(stream.take(slice(a, b))).batches]
    assert sizes == [4, 4]
    assert ids(windower.pending()) == ids(stream)[8:]


def test_count_window_tick_does_nothing():
    windower = CountWindow(2).build()
    windower.add(random_events(1))
    assert windower.tick(10**12).batches == []
    assert len(windower.pending()) == 1


def test_count_window_restored_with_smaller_size_emits_on_next_add():
    stream = random_events(9)
    first = CountWindow(10).build()
    first.add(stream.take(slice(0, 7)))
    resumed = CountWindow(3).build(resume_state=first.snapshot())
    out = resumed.add(stream.take(slice(7, 9)))
    assert [len(b) for b in out.batches] == [3, 3, 3]
    assert [i for b in out.batches for i in ids(b.events)] == ids(stream)
    assert resumed.pending() is None


@PROPS
@given(count_case())
def test_count_window_properties(case):
    stream, size, ops, restore_at = case
    make = lambda clock: CountWindow(size)  # noqa: E731
    plain = Run(make, stream).run(ops)
    assert_conserved(plain)
    assert_seq_contiguous(plain)
    assert_arrival_order_kept(plain)
    assert_partition_offsets_increase(stream, plain.batches)
    assert all(len(b[3]) == size for b in plain.batches)
    assert len(ids(plain.windower.pending())) == len(stream) % size
    # INVARIANT: resume equivalence.
    resumed = Run(make, stream).run(ops, restore_at)
    assert resumed.outcome() == plain.outcome()
    # After flush nothing is pending and nothing was lost.
    plain.record(WindowOutput(plain.windower.flush()))
    assert_conserved(plain, after_flush=True)
    assert_seq_contiguous(plain)


# ------------------------------------------------------- processing windows
def test_processing_window_closes_when_clock_passes_end():
    clock = ManualClock(start_ms=1_234)
    windower = ProcessingTimeWindow(1_000, clock=clock).build()
    stream = random_events(5)
    assert windower.add(stream.take(slice(0, 2))).batches == []
    clock.set(1_999)
    assert windower.add(stream.take(slice(2, 4))).batches == []
    assert windower.tick().batches == []
    clock.set(2_000)
    (batch,) = windower.tick().batches
    assert (batch.seq, batch.window_start, batch.window_end) == (0, 1_000, 2_000)
    assert ids(batch.events) == ids(stream)[:4]
    assert windower.pending() is None
    # The next event opens the window it arrives in; an add past its end closes it.
    windower.add(stream.take(slice(4, 5)))
    clock.set(3_000)
    (batch,) = windower.add(Events.empty(2)).batches
    assert (batch.seq, batch.window_start, batch.window_end) == (1, 2_000, 3_000)


def test_processing_window_tick_with_explicit_time_and_empty_windows():
    clock = ManualClock()
    windower = ProcessingTimeWindow(10, clock=clock).build()
    for now in range(0, 1_000, 7):
        assert windower.tick(now).batches == []
    assert windower.batches_emitted == 0
    windower.add(random_events(3))
    assert windower.tick(9).batches == []
    assert [b.seq for b in windower.tick(10).batches] == [0]


def test_processing_window_clock_step_back_joins_open_window():
    clock = ManualClock(start_ms=500)
    windower = ProcessingTimeWindow(100, clock=clock).build()
    stream = random_events(2)
    windower.add(stream.take(slice(0, 1)))
    clock.set(100)  # wall clock stepped back
    windower.add(stream.take(slice(1, 2)))
    clock.set(600)
    (batch,) = windower.tick().batches
    assert (batch.window_start, len(batch)) == (500, 2)


def test_processing_window_flush_emits_open_window():
    clock = ManualClock(start_ms=42)
    windower = ProcessingTimeWindow(10, clock=clock).build()
    windower.add(random_events(3))
    (batch,) = windower.flush()
    assert (batch.window_start, batch.window_end, len(batch)) == (40, 50, 3)
    assert windower.pending() is None and windower.flush() == []


def check_processing_after_op(length: int):
    def check(run: Run, op: Op, out: WindowOutput | None) -> None:
        if out is None:
            return
        now = run.clock.now_ms()
        # INVARIANT: a processing-time window closes as soon as the clock passes its end.
        start = run.windower.window_start
        if start is not None:
            assert start <= now < start + length
        for b in out.batches:
            assert b.window_end == b.window_start + length and b.window_start % length == 0
            assert b.window_end <= now
            assert all(b.window_start <= run.added_at[i] < b.window_end for i in ids(b.events))

    return check


@PROPS
@given(processing_case())
def test_processing_window_properties(case):
    stream, length, ops, restore_at = case
    make = lambda clock: ProcessingTimeWindow(length, clock=clock)  # noqa: E731
    plain = Run(make, stream)
    plain.after_op.append(check_processing_after_op(length))
    plain.run(ops)
    assert_conserved(plain)
    assert_seq_contiguous(plain)
    assert_arrival_order_kept(plain)
    assert_partition_offsets_increase(stream, plain.batches)
    resumed = Run(make, stream)
    resumed.after_op.append(check_processing_after_op(length))
    resumed.run(ops, restore_at)
    assert resumed.outcome() == plain.outcome()
    plain.record(WindowOutput(plain.windower.flush()))
    assert_conserved(plain, after_flush=True)
    assert_seq_contiguous(plain)


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


# ----------------------------------------------------- snapshots and restore
@pytest.mark.parametrize(
    "config",
    [
        CountWindow(4),
        ProcessingTimeWindow(10, clock=ManualClock()),
        EventTimeWindow(10, idle_timeout_ms=5, clock=ManualClock()),
    ],
    ids=["count", "processing", "event"],
)
def test_snapshot_is_plain_and_round_trips(config):
    windower = config.build()
    windower.add(random_events(6, ts=[1, 2, 3, 14, 15, 16]))
    state = windower.snapshot()
    assert_plain(state)
    restored = config.build(resume_state=checkpoint_roundtrip(state))
    again = restored.snapshot()
    assert again.keys() == state.keys()
    for key, value in state.items():
        if key == "pending":
            assert ids(Events.from_plain(again[key])) == ids(Events.from_plain(value))
            np.testing.assert_array_equal(again[key]["X"], value["X"])
        else:
            assert again[key] == value, key
    assert isinstance(windower, Windower) and isinstance(restored, Windower)


def test_snapshot_does_not_share_memory_with_added_events():
    stream = random_events(3)
    windower = CountWindow(10).build()
    windower.add(stream)
    state = windower.snapshot()
    assert not np.shares_memory(state["pending"]["X"], stream.X)


def test_resume_with_another_window_kind_is_a_config_error():
    state = CountWindow(3).build().snapshot()
    with pytest.raises(ConfigError, match="'count' window"):
        EventTimeWindow(10).build(resume_state=state)


def test_resume_event_time_with_another_length_is_a_config_error():
    state = EventTimeWindow(10).build().snapshot()
    with pytest.raises(ConfigError, match="length"):
        EventTimeWindow(20).build(resume_state=state)


@pytest.mark.parametrize("damage", ["drop_seq", "bad_format", "not_a_dict"])
def test_damaged_resume_state_is_a_checkpoint_error(damage):
    state = CountWindow(3).build().snapshot()
    if damage == "drop_seq":
        del state["seq"]
    elif damage == "bad_format":
        state["format"] = 99
    else:
        state = [state]
    with pytest.raises(CheckpointError):
        CountWindow(3).build(resume_state=state)


def test_feature_dimension_change_is_a_schema_mismatch():
    windower = CountWindow(10).build()
    windower.add(make_events([0], n_features=2))
    with pytest.raises(SchemaMismatchError):
        windower.add(make_events([0], n_features=3))


# ------------------------------------------------------------------ configs
@pytest.mark.parametrize(
    "build",
    [
        lambda: CountWindow(0),
        lambda: CountWindow(-3),
        lambda: CountWindow(True),
        lambda: CountWindow(2.0),
        lambda: ProcessingTimeWindow(0, clock=ManualClock()),
        lambda: ProcessingTimeWindow(10, clock=object()),
        lambda: EventTimeWindow(0),
        lambda: EventTimeWindow(10, allowed_lateness_ms=-1),
        lambda: EventTimeWindow(10, idle_timeout_ms=0),
        lambda: EventTimeWindow(10, clock="now"),
    ],
)
def test_bad_configs_raise_config_error(build):
    with pytest.raises(ConfigError):
        build()


def test_configs_are_frozen_and_accept_numpy_ints():
    window = CountWindow(np.int64(5))
    assert window.size == 5 and type(window.size) is int
    with pytest.raises(AttributeError):
        window.size = 6  # type: ignore[misc]


# ------------------------------------------------------------------ parsing
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("count:1000", CountWindow(1000)),
        ("1000", CountWindow(1000)),
        (" COUNT : 7 ", CountWindow(7)),
        ("processing:5s", ProcessingTimeWindow(5_000)),
        ("processing:250ms", ProcessingTimeWindow(250)),
        ("event:10s", EventTimeWindow(10_000)),
        ("event:10s,lateness=2s,idle=5s", EventTimeWindow(10_000, 2_000, 5_000)),
        ("event:1m, idle=1.5s", EventTimeWindow(60_000, 0, 1_500)),
        ("event:500ms,lateness=0s", EventTimeWindow(500, 0)),
    ],
)
def test_parse_window_accepts(spec, expected):
    assert parse_window(spec) == expected


def test_parse_window_passes_the_clock():
    clock = ManualClock()
    assert parse_window("processing:1s", clock=clock).clock is clock
    assert parse_window("event:1s,idle=2s", clock=clock).clock is clock
    assert isinstance(parse_window("processing:1s").clock, SystemClock)


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "count:",
        "count:-1",
        "count:1.5",
        "count:5,idle=1s",
        "processing:5",
        "processing:5h",
        "processing:5s,idle=1s",
        "event:",
        "event:10s,late=2s",
        "event:10s,idle",
        "event:10s,idle=-1s",
        "tumbling:5s",
        "five",
        "１２",
    ],
)
def test_parse_window_rejects_malformed_specs_showing_accepted_forms(spec):
    with pytest.raises(ConfigError, match="accepted window specs"):
        parse_window(spec)


@pytest.mark.parametrize(
    "spec", ["count:0", "event:0s", "event:10s,idle=0ms", "event:1.0005s", "event:10s,idle=1s,idle=2s"]
)
def test_parse_window_rejects_out_of_range_values(spec):
    with pytest.raises(ConfigError):
        parse_window(spec)


def test_parse_window_rejects_non_strings():
    with pytest.raises(ConfigError):
        parse_window(1000)  # type: ignore[arg-type]
