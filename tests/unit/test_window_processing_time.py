"""Tests for stream.window.processing_time: closing on the clock, empty windows, clock
steps, and property tests."""

from __future__ import annotations

from hypothesis import given
from window_helpers import (
    PROPS,
    Op,
    Run,
    assert_arrival_order_kept,
    assert_conserved,
    assert_partition_offsets_increase,
    assert_seq_contiguous,
    ids,
    processing_case,
    random_events,
)

from stream.core.clock import ManualClock
from stream.core.records import Events
from stream.window.base import WindowOutput
from stream.window.processing_time import ProcessingTimeWindow


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
