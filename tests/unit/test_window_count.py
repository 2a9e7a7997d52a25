"""Tests for stream.window.count: examples and property tests of count windows, with and
without a time limit (no loss / no duplicate, order, resume equivalence, the wait bound)."""

from __future__ import annotations

import pytest
from hypothesis import given
from window_helpers import (
    PROPS,
    Run,
    assert_arrival_order_kept,
    assert_conserved,
    assert_partition_offsets_increase,
    assert_seq_contiguous,
    count_case,
    count_or_time_case,
    ids,
    random_events,
)

from stream.core.clock import ManualClock
from stream.core.errors import ConfigError
from stream.window.base import WindowOutput
from stream.window.count import CountWindow


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


# ----------------------------------------------------- count or elapsed time
def test_count_or_time_window_closes_a_partial_window_at_max_on_tick():
    clock = ManualClock(start_ms=1_000)
    windower = CountWindow(10, max_ms=250, clock=clock).build()
    stream = random_events(4)
    windower.add(stream.take(slice(0, 3)))
    clock.advance(100)
    windower.add(stream.take(slice(3, 4)))  # joins the window opened at 1000
    clock.advance(149)
    assert windower.tick().batches == []
    clock.advance(1)
    out = windower.tick()
    assert [(b.seq, ids(b.events)) for b in out.batches] == [(0, ids(stream))]
    assert windower.pending() is None
    clock.advance(10_000)
    assert windower.tick().batches == []  # nothing open, nothing emitted


def test_count_or_time_window_closes_by_count_first_and_times_the_tail_from_its_arrival():
    clock = ManualClock()
    windower = CountWindow(3, max_ms=50, clock=clock).build()
    stream = random_events(5)
    windower.add(stream.take(slice(0, 2)))
    clock.advance(40)
    out = windower.add(stream.take(slice(2, 5)))  # one full batch; the tail opens a new window at 40
    assert [len(b) for b in out.batches] == [3]
    clock.advance(49)
    assert windower.tick().batches == []
    clock.advance(1)
    assert [ids(b.events) for b in windower.tick().batches] == [ids(stream)[3:]]


def test_count_or_time_window_add_closes_an_overdue_window_before_new_events_join():
    clock = ManualClock()
    windower = CountWindow(10, max_ms=20, clock=clock).build()
    stream = random_events(3)
    windower.add(stream.take(slice(0, 2)))
    clock.advance(30)  # no tick in between
    out = windower.add(stream.take(slice(2, 3)))
    assert [ids(b.events) for b in out.batches] == [ids(stream)[:2]]
    assert ids(windower.pending()) == ids(stream)[2:]


def test_count_or_time_window_resumes_with_the_wait_already_spent():
    clock = ManualClock()
    config = CountWindow(10, max_ms=100, clock=clock)
    first = config.build()
    first.add(random_events(2))
    clock.advance(60)
    state = first.snapshot()
    assert state["opened_ms"] == 0 and state["max_ms"] == 100
    resumed = config.build(resume_state=state)
    clock.advance(39)
    assert resumed.tick().batches == []
    clock.advance(1)
    assert [len(b) for b in resumed.tick().batches] == [2]


def test_a_count_checkpoint_without_max_resumes_into_a_count_or_time_window():
    old = CountWindow(10).build()
    old.add(random_events(2))
    state = old.snapshot()
    state.pop("opened_ms"), state.pop("max_ms")  # as written before max_ms existed
    clock = ManualClock(start_ms=5_000)
    resumed = CountWindow(10, max_ms=100, clock=clock).build(resume_state=state)
    clock.advance(99)
    assert resumed.tick().batches == []  # the wait starts at the restore
    clock.advance(1)
    assert [len(b) for b in resumed.tick().batches] == [2]


def test_count_or_time_window_waits_at_most_max_after_the_clock_steps_back():
    clock = ManualClock(start_ms=10_000)
    windower = CountWindow(10, max_ms=100, clock=clock).build()
    windower.add(random_events(1))
    clock.set(5_000)
    assert windower.tick().batches == []
    clock.advance(100)
    assert [len(b) for b in windower.tick().batches] == [1]


@pytest.mark.parametrize("max_ms", [0, -5, 2.5, True])
def test_count_or_time_window_refuses_a_bad_max(max_ms):
    with pytest.raises(ConfigError, match="max_ms"):
        CountWindow(10, max_ms=max_ms)


@PROPS
@given(count_or_time_case())
def test_count_or_time_window_properties(case):
    stream, size, max_ms, ops, restore_at = case
    make = lambda clock: CountWindow(size, max_ms=max_ms, clock=clock)  # noqa: E731

    def wait_bounded(run, op, out):
        # INVARIANT: after a tick, nothing pending has waited max_ms or more.
        if op[0] == "tick":
            now = run.clock.now_ms()
            assert all(now - run.added_at[i] < max_ms for i in ids(run.windower.pending()))

    plain = Run(make, stream)
    plain.after_op.append(wait_bounded)
    plain.run(ops)
    assert_conserved(plain)
    assert_seq_contiguous(plain)
    assert_arrival_order_kept(plain)
    assert_partition_offsets_increase(stream, plain.batches)
    assert all(0 < len(b[3]) <= size for b in plain.batches)
    # INVARIANT: resume equivalence, the window's age included.
    resumed = Run(make, stream)
    resumed.after_op.append(wait_bounded)
    assert resumed.run(ops, restore_at).outcome() == plain.outcome()
    plain.record(WindowOutput(plain.windower.flush()))
    assert_conserved(plain, after_flush=True)
    assert_seq_contiguous(plain)
