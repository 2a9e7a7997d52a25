"""FileSource: JSONL and CSV rows become records with stable offsets, and resume works."""

from __future__ import annotations

import orjson
import pytest

from stream.core.errors import ConfigError
from stream.core.records import TopicPartition
from stream.sources.files import FileSource


class Resume:
    def __init__(self, positions=None):
        self.positions = positions or {}

    def on_assigned(self, partitions):
        return {tp: p for tp, p in self.positions.items() if tp in partitions}

    def on_revoked(self, partitions):
        pass


def drain(src):
    out = []
    while batch := src.poll(0, 3):
        out += [r for recs in batch.values() for r in recs]
    return out


def test_jsonl_offsets_skip_blank_lines_and_resume(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"x": [1], "y": 0}\n\n{"x": [2], "y": 1}\n{"x": [3], "y": 0}\n')
    src = FileSource([path])
    src.open(Resume())
    recs = drain(src)
    assert [r.offset for r in recs] == [0, 1, 2]
    assert recs[1].value == b'{"x": [2], "y": 1}'
    resumed = FileSource([path])
    resumed.open(Resume({TopicPartition("file:a.jsonl", 0): 2}))
    assert [r.offset for r in drain(resumed)] == [2]


def test_csv_rows_become_json_records_with_named_columns(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("id,f1,f2,y,ts\nr1,1.5,2,1,1000\nr2,oops,3,0,2000\nshort,1\n")
    src = FileSource([path])
    src.open(Resume())
    docs = [orjson.loads(r.value) for r in drain(src)]
    assert docs[0] == {"x": [1.5, 2], "y": 1, "id": "r1", "ts": 1000}
    assert docs[1]["x"] == ["oops", 3]  # left as text: the codec dead-letters it with a reason
    assert docs[2] == {"x": ["short", "1"]}  # wrong width: no label, dead-lettered downstream


def test_several_files_are_partitions_and_missing_files_are_config_errors(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"x": [1], "y": 0}\n')
    b.write_text('{"x": [2], "y": 1}\n')
    src = FileSource([a, b])
    assert src.partitions() == [TopicPartition("file:a.jsonl", 0), TopicPartition("file:b.jsonl", 1)]
    with pytest.raises(ConfigError, match="does not exist"):
        FileSource([tmp_path / "missing.csv"])
