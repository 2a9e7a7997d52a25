"""The Source contract, and each declared capability, over every source that runs in process.

Every shipped source is built over the same ten records on two partitions
(files hold them as rows), then held to :class:`~stream.sources.base.Source`'s
semantics -- open from saved positions, poll within ``max_records``, every
record exactly once and in offset order per partition, commit, lag, close --
and to the extras it declares (:class:`ColumnPolling`, :class:`ReportsOutage`,
:class:`Bounded`, :class:`HasRanges`). A source that loses or gains a
capability fails ``test_declared_capabilities``, so the engine's once-only
resolution (:func:`~stream.sources.base.source_extras`) stays truthful.

Not here: the Kafka-backed sources (KafkaSource, ConfluentKafkaSource,
KafkaRangeSource) need a broker; the integration tier covers them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import orjson
import pytest

from stream.core.poll import PollColumns
from stream.core.records import TopicPartition
from stream.sources.base import (
    Bounded,
    ColumnPolling,
    HasRanges,
    NoPositions,
    ReportsOutage,
    Source,
    source_extras,
)
from stream.sources.files import FileSource
from stream.testing.columns import ColumnarListSource
from stream.testing.doubles import ListSource, OutageSource, StallingSource, make_records

N, PARTITIONS = 10, 2


@dataclass(frozen=True)
class Case:
    build: Callable[[str], Source]
    capabilities: frozenset


def _files(tmp: str) -> FileSource:
    paths = []
    for p in range(PARTITIONS):
        path = os.path.join(tmp, f"part{p}.jsonl")
        with open(path, "wb") as f:
            for i in range(p, N, PARTITIONS):
                f.write(orjson.dumps({"id": f"e{i}", "x": [float(i)], "y": i % 2}) + b"\n")
        paths.append(path)
    return FileSource(paths)


def _records():
    return make_records(N, n_features=2, partitions=PARTITIONS)


CASES = {
    "ListSource": Case(lambda tmp: ListSource(_records(), batch_size=3), frozenset()),
    "StallingSource": Case(
        lambda tmp: StallingSource(_records(), stall_polls=2, lag_known=False, batch_size=3), frozenset()
    ),
    "OutageSource": Case(
        lambda tmp: OutageSource(_records(), down=range(2, 4), batch_size=3), frozenset({ReportsOutage})
    ),
    "ColumnarListSource": Case(
        lambda tmp: ColumnarListSource(_records(), batch_size=3), frozenset({ColumnPolling})
    ),
    "FileSource": Case(_files, frozenset({Bounded})),
}
CAPABILITIES = (ColumnPolling, ReportsOutage, Bounded, HasRanges)


class Resume:
    """A handler with saved positions; records what it was asked."""

    def __init__(self, positions=None):
        self.positions = positions or {}
        self.assigned: list[TopicPartition] = []

    def on_assigned(self, partitions):
        self.assigned = list(partitions)
        return {tp: p for tp, p in self.positions.items() if tp in partitions}

    def on_revoked(self, partitions):
        pass


def drain(source, *, max_records=4, columns=False, polls=50) -> list[tuple[TopicPartition, int]]:
    """Every (partition, offset) the source hands out, in order, within ``polls`` polls."""
    seen = []
    for _ in range(polls):
        if columns:
            cols = source.poll_columns(0, max_records)
            assert isinstance(cols, PollColumns)
            recs = cols.records()
        else:
            recs = [r for rs in source.poll(0, max_records).values() for r in rs]
        assert len(recs) <= max_records
        seen += [(TopicPartition(r.topic, r.partition), r.offset) for r in recs]
    return seen


@pytest.fixture(params=sorted(CASES))
def case(request, tmp_path):
    c = CASES[request.param]
    return c, (lambda: c.build(str(tmp_path)))


def having(capability) -> list[str]:
    """The cases that declare ``capability``: a capability test runs only where it applies (no skips)."""
    return sorted(name for name, c in CASES.items() if capability in c.capabilities)


@pytest.fixture
def build_case(tmp_path):
    return lambda name: CASES[name].build(str(tmp_path))


def test_every_source_satisfies_the_source_protocol(case):
    _, build = case
    src = build()
    for name in ("open", "poll", "commit", "lag", "close"):
        assert callable(getattr(src, name))


def test_declared_capabilities(case):
    c, build = case
    src = build()
    assert {cap for cap in CAPABILITIES if isinstance(src, cap)} == set(c.capabilities)
    extras = source_extras(src)
    assert (extras.poll_columns is not None) == (ColumnPolling in c.capabilities)
    assert (extras.outage is not None) == (ReportsOutage in c.capabilities)
    assert extras.bounded == (Bounded in c.capabilities)
    assert extras.has_ranges == (HasRanges in c.capabilities)


def test_open_assigns_and_every_record_comes_once_in_offset_order(case):
    _, build = case
    src = build()
    handler = Resume()
    src.open(handler)
    assert len(handler.assigned) == PARTITIONS
    seen = drain(src)
    assert len(seen) == N and len(set(seen)) == N
    for tp in handler.assigned:
        offsets = [o for t, o in seen if t == tp]
        assert offsets == sorted(offsets) and offsets[0] == 0
    src.close()


def test_open_resumes_from_the_handlers_positions(case):
    _, build = case
    first = build()
    first.open(NoPositions())
    parts = sorted({tp for tp, _ in drain(first)})
    first.close()
    src = build()
    src.open(Resume({parts[0]: 2}))
    seen = drain(src)
    assert min(o for tp, o in seen if tp == parts[0]) == 2
    assert min(o for tp, o in seen if tp == parts[1]) == 0
    assert len(seen) == N - 2


def test_commit_lag_and_close(case):
    _, build = case
    src = build()
    src.open(NoPositions())
    lag = src.lag()
    assert lag is None or lag >= 0
    seen = drain(src)
    positions = {}
    for tp, offset in seen:
        positions[tp] = offset + 1
    src.commit(positions)
    assert src.lag() in (0, None)  # drained: never a guessed lag > 0
    src.close()


@pytest.mark.parametrize("name", having(ColumnPolling))
def test_column_polling_hands_out_the_same_records(name, build_case):
    build = lambda: build_case(name)  # noqa: E731
    by_columns, by_records = build(), build()
    by_columns.open(NoPositions())
    by_records.open(NoPositions())
    seen = drain(by_columns, columns=True)
    assert len(set(seen)) == N
    assert sorted(seen) == sorted(drain(by_records))


@pytest.mark.parametrize("name", having(Bounded))
def test_a_bounded_source_turns_exhausted_after_its_last_record(name, build_case):
    build = lambda: build_case(name)  # noqa: E731
    src = build()
    src.open(NoPositions())
    assert not src.exhausted
    assert src.count_records() == N
    assert isinstance(src.record_timestamps, bool)
    assert sorted(src.partitions()) == sorted({tp for tp, _ in drain(src)})
    assert src.exhausted


@pytest.mark.parametrize("name", having(ReportsOutage))
def test_an_outage_is_reported_while_it_lasts_and_the_lag_is_unknown(name, build_case):
    build = lambda: build_case(name)  # noqa: E731
    src = build()
    src.open(NoPositions())
    assert src.outage() is None
    reported = []
    for _ in range(6):
        src.poll(0, 4)
        outage = src.outage()
        reported.append(outage is not None)
        if outage is not None:
            assert src.lag() is None and outage.cause
    assert any(reported) and not reported[-1]
