"""A :class:`~stream.sources.base.Source` over JSONL or CSV files, for data that is not in Kafka.

Each file is one partition of the pseudo-topic ``file:<name>``; a record's
offset is its 0-based data-row index, so checkpoints and resume work exactly
as with Kafka. The format follows the file's suffix:

``.csv``
    The first row is a header naming the columns. The label column
    (``label_column``, default ``y``; ``--label-column`` on the CLI) holds the
    label; optional ``id`` and ``ts`` columns hold the event id and event time;
    every other column is a numeric feature, in header order. A header without
    the label column or without a feature column is a :class:`ConfigError`; a
    row whose width differs from the header's is dead-lettered.
``.jsonl`` (any other suffix)
    One JSON object per line, in the record shape the codec reads:
    ``{"x": [numbers], "<label_column>": label, "id": ..., "ts": ...}``
    (``id`` and ``ts`` optional); blank lines are skipped.

CSV rows are turned into that JSON shape, so the codec reads both alike; it
must be configured with ``y_field=label_column``.

Examples
--------
>>> import os, tempfile
>>> d = tempfile.mkdtemp(); p = os.path.join(d, "rows.csv")
>>> _ = open(p, "w").write("a,b,y\\n1,2,0\\n3,4,1\\n")
>>> src = FileSource([p]); src.open(NoPositions())
>>> batch = src.poll(0, 10); src.close()
>>> [r.value for recs in batch.values() for r in recs]
[b'{"x":[1,2],"y":0}', b'{"x":[3,4],"y":1}']
"""

from __future__ import annotations

import csv
import itertools
import os
from typing import Iterator, Mapping, Sequence

import orjson

from stream.core.errors import ConfigError
from stream.core.records import RawRecord, TopicPartition
from stream.sources.base import NoPositions, PollBatch, RebalanceHandler  # noqa: F401 -- NoPositions: the docstring example


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text  # left as text; the codec dead-letters it with a reason


class FileSource:
    """Reads records from JSONL (``.jsonl``/``.json``/``.ndjson``) or CSV (``.csv``) files."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        label_column: str = "y",
        id_column: str = "id",
        ts_column: str = "ts",
        start: int = 0,
        end: int | None = None,
    ) -> None:
        if not paths:
            raise ConfigError("FileSource needs at least one path")
        if start < 0 or (end is not None and end < start):
            raise ConfigError(
                f"file row range [{start}, {end}) is empty or negative: rows are numbered from 0"
            )
        self.paths = [os.fspath(p) for p in paths]
        for p in self.paths:
            if not os.path.isfile(p):
                raise ConfigError(f"input file {p!r} does not exist")
        self.label_column = label_column
        self.id_column = id_column
        self.ts_column = ts_column
        for p in self.paths:
            if p.endswith(".csv"):
                self._check_header(p)
        self.start, self.end = start, end
        self._iters: dict[TopicPartition, Iterator[RawRecord]] = {}
        self._done: set[TopicPartition] = set()

    #: File rows have no record timestamp (only an event-time column the codec reads).
    record_timestamps = False

    def partitions(self) -> list[TopicPartition]:
        return [TopicPartition(f"file:{os.path.basename(p)}", i) for i, p in enumerate(self.paths)]

    def open(self, handler: RebalanceHandler) -> None:
        parts = self.partitions()
        positions = handler.on_assigned(parts)
        for tp, path in zip(parts, self.paths):
            start = max(positions.get(tp, 0), self.start)
            self._iters[tp] = itertools.islice(self._read(tp, path), start, self.end)
        self._done.clear()

    @property
    def exhausted(self) -> bool:
        """Every file has been read to its end (or to ``end``): the engine stops there."""
        return len(self._done) == len(self._iters)

    def count_records(self) -> int:
        """Rows in the configured range over all files (one pass over the files; for progress and ETA)."""
        total = 0
        for path in self.paths:
            with open(path, "rb") as f:
                rows = sum(1 for line in f if line.strip()) - (1 if path.endswith(".csv") else 0)
            rows = max(rows, 0)
            total += max(0, min(rows, self.end if self.end is not None else rows) - self.start)
        return total

    def _read(self, tp: TopicPartition, path: str) -> Iterator[RawRecord]:
        if path.endswith(".csv"):
            yield from self._read_csv(tp, path)
            return
        with open(path, "rb") as f:
            offset = 0
            for line in f:
                line = line.strip()
                if not line:
                    continue
                yield RawRecord(tp.topic, tp.partition, offset, -1, None, line)
                offset += 1

    def _check_header(self, path: str) -> None:
        """Raise ConfigError unless the CSV's header names the label column and at least one feature."""
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), None)
        if not header:
            raise ConfigError(
                f"{path}: the CSV file is empty; its first row must be a header naming the columns"
            )
        columns = ", ".join(header)
        if self.label_column not in header:
            raise ConfigError(
                f"{path}: no label column {self.label_column!r} in the CSV header (columns: {columns}); "
                "name the label column with --label-column NAME"
            )
        if not set(header) - {self.label_column, self.id_column, self.ts_column}:
            raise ConfigError(
                f"{path}: no feature column in the CSV header (columns: {columns}); every column but "
                f"the label {self.label_column!r}, {self.id_column!r} and {self.ts_column!r} is a "
                "numeric feature"
            )

    def _read_csv(self, tp: TopicPartition, path: str) -> Iterator[RawRecord]:
        special = {self.label_column, self.id_column, self.ts_column}
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                return
            features = [i for i, name in enumerate(header) if name not in special]
            col = {name: i for i, name in enumerate(header)}
            for offset, row in enumerate(reader):
                doc = {"x": [_number(row[i]) for i in features]} if len(row) == len(header) else {"x": row}
                for name, key in (
                    (self.label_column, self.label_column),
                    (self.id_column, "id"),
                    (self.ts_column, "ts"),
                ):
                    if name in col and len(row) == len(header):
                        doc[key] = _number(row[col[name]])
                yield RawRecord(tp.topic, tp.partition, offset, -1, None, orjson.dumps(doc))

    def poll(self, timeout_ms: int, max_records: int) -> PollBatch:
        batch: dict[TopicPartition, list[RawRecord]] = {}
        budget = max_records
        for tp, it in self._iters.items():
            if budget <= 0:
                break
            if tp in self._done:
                continue
            recs = list(itertools.islice(it, budget))
            if len(recs) < budget:
                self._done.add(tp)
            if recs:
                batch[tp] = recs
                budget -= len(recs)
        return batch

    def commit(self, positions: Mapping[TopicPartition, int]) -> None:
        """Files have no consumer group: progress lives in the checkpoint alone."""

    def lag(self) -> int | None:
        return None

    def close(self) -> None:
        self._iters.clear()
