"""Tests for stream.window.count: examples and property tests of count windows
(no loss / no duplicate, order, resume equivalence)."""

from __future__ import annotations

from hypothesis import given
from window_helpers import (
    PROPS,
    Run,
    assert_arrival_order_kept,
    assert_conserved,
    assert_partition_offsets_increase,
    assert_seq_contiguous,
    count_case,
    ids,
    random_events,
)

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
