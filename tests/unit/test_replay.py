"""Backtests from files (no broker), in process: one read for every configuration, determinism, alarms.

The Kafka side (ranges, timestamp merge, change points) is in
tests/integration/test_replay_services.py; the CLI subprocesses (``streamlearn run``
learns what replay learns, ``streamlearn replay`` writes its report) in
tests/e2e/test_replay_cli.py.
"""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from stream.core.errors import ConfigError
from stream.core.records import RawRecord, TopicPartition
from stream.replay.config import ReplayConfig, load_configs
from stream.replay.driver import Backtest, prepare_out_dir
from stream.sources.bounds import parse_bound
from stream.sources.files import FileSource
from stream.sources.kafka import KafkaSourceConfig, kafka_python_settings
from stream.sources.produce import synthetic_rows
from stream.sources.range import KafkaRangeSource


@pytest.fixture(scope="module")
def drifting_file(tmp_path_factory):
    """10,000 Hyperplane rows, a different hyperplane from row 6,000 (after the policy's 20-batch warm-up)."""
    path = tmp_path_factory.mktemp("data") / "hyperplane.jsonl"
    rows = synthetic_rows("hyperplane", 10_000, seed=7, drift_at=6000, n_features=5)
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    return path


def _configs(*yaml_texts, tmp_path, base=None):
    paths = []
    for i, text in enumerate(yaml_texts):
        p = tmp_path / f"c{i}.yaml"
        p.write_text(text)
        paths.append(str(p))
    return load_configs(paths, base or ReplayConfig.base(window="count:250"))


def test_two_configurations_get_every_record_of_one_read(drifting_file, tmp_path):
    configs = _configs("name: small\nlr: 0.01\n", "name: mlp\nmodel: mlp\nlr: 0.02\n", tmp_path=tmp_path)
    source = FileSource([drifting_file])
    polls = []
    original = source.poll
    source.poll = lambda *a: polls.append(1) or original(*a)  # count reads of the one source
    result = Backtest(source, configs, str(tmp_path / "out"), progress=False).run()
    assert result["read"]["records"] == 10_000
    assert [c["summary"]["events"] for c in result["configs"]] == [10_000, 10_000]
    assert len(polls) <= 10_000 // 5000 + 1  # one pass: max_poll_records 5,000 -> two polls (+1 empty)
    small, mlp = result["configs"]
    assert small["windows"]["end_event"][-1] == mlp["windows"]["end_event"][-1] == 10_000
    assert small["windows"]["accuracy"] != mlp["windows"]["accuracy"]  # two learners, two result sets
    for cfg in result["configs"]:
        kinds = {m["kind"] for m in cfg["markers"]}
        assert "validated" in kinds
        assert 0.5 < cfg["summary"]["accuracy"] <= 1.0
        assert cfg["per_class"]["support"] == result["configs"][0]["per_class"]["support"]


def test_a_backtest_is_deterministic_for_a_seed(drifting_file, tmp_path):
    def once(name):
        cfg = _configs("name: a\nmodel: mlp\nreplay: reservoir\newc_strength: 5\n", tmp_path=tmp_path)
        return Backtest(FileSource([drifting_file]), cfg, str(tmp_path / name), progress=False).run()

    first, second = once("one"), once("two")
    for key in ("accuracy", "log_loss", "end_event"):
        assert first["configs"][0]["windows"][key] == second["configs"][0]["windows"][key]
    assert first["configs"][0]["markers"] == second["configs"][0]["markers"]


def test_an_alarm_is_raised_near_the_change_in_the_file(drifting_file, tmp_path):
    result = Backtest(
        FileSource([drifting_file]),
        [ReplayConfig.base(window="count:250")],
        str(tmp_path / "o"),
        progress=False,
    ).run()
    alarms = [m["event"] for m in result["configs"][0]["markers"] if m["kind"] == "alarm"]
    assert alarms and 6000 < alarms[0] <= 6000 + 3 * 250, alarms


def test_regression_windows_have_mae_and_rmse(tmp_path):
    path = tmp_path / "reg.jsonl"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1200, 3))
    path.write_text("\n".join(json.dumps({"x": x.tolist(), "y": float(x @ [1.0, -2.0, 0.5])}) for x in X))
    from learners.choice import LearnerChoice
    from stream.codec.json_codec import CodecConfig

    base = ReplayConfig.base(window="count:200", learner=LearnerChoice(task="regression"))
    cfg = Backtest(
        FileSource([path]), [base], str(tmp_path / "o"), decode=CodecConfig(task="regression"), progress=False
    ).run()["configs"][0]
    w = cfg["windows"]
    assert all(v is None for v in w["accuracy"]) and cfg["per_class"] is None
    assert w["rmse"][-1] < w["rmse"][0]  # it learns
    assert cfg["summary"]["mae"] > 0 and cfg["summary"]["accuracy"] is None


def test_processing_time_windows_need_record_timestamps(drifting_file, tmp_path):
    with pytest.raises(ConfigError, match="processing-time window needs record timestamps"):
        Backtest(
            FileSource([drifting_file]), [ReplayConfig.base(window="processing:5s")], str(tmp_path / "o")
        )


def test_a_directory_not_made_by_replay_is_left_alone(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(ConfigError, match="was not made by `streamlearn replay`"):
        prepare_out_dir(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_configuration_files_fail_with_the_file_and_the_known_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"c0.yaml: unknown key 'learning_rate'; known: .*\blr\b"):
        _configs("learning_rate: 0.1\n", tmp_path=tmp_path)
    with pytest.raises(ConfigError, match="unknown drift key 'detectr'"):
        _configs("drift: {detectr: adwin}\n", tmp_path=tmp_path)
    with pytest.raises(ConfigError, match="not valid YAML"):
        _configs("lr: [0.1\n", tmp_path=tmp_path)
    with pytest.raises(ConfigError, match="c0.yaml: .*model"):
        _configs("model: no-such-model\n", tmp_path=tmp_path)
    same = _configs("name: x\n", "name: x\nlr: 0.2\n", tmp_path=tmp_path)
    assert [c.name for c in same] == ["x", "x-2"]


def _rec(p: int, offset: int, ts: int) -> RawRecord:
    return RawRecord("t", p, offset, ts, None, b"%d:%d" % (p, offset))


def test_the_merge_waits_for_every_partition_before_it_emits():
    """Timestamp order across partitions, whatever arrived first; a partition without a buffered head blocks."""
    src = KafkaRangeSource(
        KafkaSourceConfig(bootstrap="127.0.0.1:1", topics=("t",)),
        parse_bound("earliest"),
        parse_bound("latest"),
    )
    from collections import deque

    p0, p1 = TopicPartition("t", 0), TopicPartition("t", 1)
    src._buffers = {p0: deque([_rec(0, 0, 10), _rec(0, 1, 30)]), p1: deque()}
    src.ranges = {p0: (0, 2), p1: (0, 2)}
    assert src._merge(10) == []  # partition 1 may hold an older record: wait
    src._buffers[p1].extend([_rec(1, 0, 20), _rec(1, 1, 30)])
    src._complete = {p0, p1}
    merged = src._merge(10)
    assert [(r.partition, r.offset) for r in merged] == [
        (0, 0),
        (1, 0),
        (0, 1),
        (1, 1),
    ]  # tie at 30: partition order
    assert src.exhausted
    # It reads without a consumer group (tansu does not list groups, so this is checked here, structurally).
    assert kafka_python_settings(src.config)["group_id"] is None
    with pytest.raises(ConfigError, match="without a consumer group"):
        KafkaRangeSource(
            KafkaSourceConfig(bootstrap="x:1", topics=("t",), group_id="g"),
            parse_bound("earliest"),
            parse_bound("latest"),
        )


def test_an_empty_range_is_a_clear_error(drifting_file, tmp_path):
    with pytest.raises(ConfigError, match="holds no records"):
        Backtest(
            FileSource([drifting_file], start=20_000),
            [ReplayConfig.base()],
            str(tmp_path / "o"),
            progress=False,
        ).run()
