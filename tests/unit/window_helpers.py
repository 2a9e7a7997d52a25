"""Shared by the tests/unit/test_window_*.py files: event streams, a script runner that records what a
windower emits, the invariant checks (no loss, no duplicate, order, seq) and the hypothesis strategies."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from stream.core.clock import Clock, ManualClock
from stream.core.records import Events
from stream.window.base import Windower, WindowOutput
from stream.window.event_time import EventTimeWindow
from stream.window.spec import WindowConfig

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


#: One step of a processing-time or count-or-time scenario: add up to 10 events, move the clock, or tick.
_WINDOW_OP = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 10)),
    st.tuples(st.just("advance"), st.integers(0, 250)),
    st.tuples(st.just("tick")),
)


@st.composite
def count_or_time_case(draw):
    n = draw(st.integers(0, 60))
    partitions = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    size = draw(st.integers(1, 12))
    max_ms = draw(st.sampled_from([1, 7, 10, 100]))
    ops = draw(st.lists(_WINDOW_OP, max_size=30)) + [("add", n)]
    restore_at = draw(st.integers(0, len(ops)))
    return make_events(partitions), size, max_ms, ops, restore_at


@st.composite
def processing_case(draw):
    n = draw(st.integers(0, 60))
    partitions = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    length = draw(st.sampled_from([1, 7, 10, 100]))
    ops = draw(st.lists(_WINDOW_OP, max_size=30)) + [("add", n)]
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
