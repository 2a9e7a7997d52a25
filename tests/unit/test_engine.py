"""The engine loop with the shipped test doubles: crashes at any point neither lose nor double-learn."""

from __future__ import annotations

import random

import numpy as np
import pytest

import learners.state_io as state_io
from learners.neural.learner import TorchLearner
from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.deadletter import FileDeadLetterSink
from stream.core.errors import SchemaMismatchError
from stream.core.records import TopicPartition
from stream.engine.checkpoint import CheckpointStore
from stream.engine.loop import Engine, EngineConfig
from stream.testing.doubles import Abort, ListSource, make_records
from stream.window.count import CountWindow
from stream.window.event_time import EventTimeWindow

N_FEATURES = 4


class CrashingLearner:
    """Wraps a learner and raises Abort on its k-th learn_batch, before or after learning."""

    def __init__(self, inner, crash_at: int | None, after: bool):
        self.inner, self.crash_at, self.after, self.calls = inner, crash_at, after, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def learn_batch(self, X, y):
        self.calls += 1
        if self.calls == self.crash_at and not self.after:
            raise Abort("crash before learning")
        report = self.inner.learn_batch(X, y)
        if self.calls == self.crash_at and self.after:
            raise Abort("crash after learning, before the checkpoint")
        return report


def make_engine(
    records,
    ckpt_dir,
    *,
    window=None,
    abort_at_poll=None,
    crash_learn_at=None,
    crash_after=False,
    n_features=N_FEATURES,
    **config,
):
    def build(d):
        return CrashingLearner(TorchLearner(n_features=d, seed=1, lr=0.1), crash_learn_at, crash_after)

    return Engine(
        source=ListSource(records, batch_size=37, abort_at_poll=abort_at_poll),
        codec=JsonCodec(CodecConfig(n_features=n_features)),
        window=window or CountWindow(25),
        learner_builder=build,
        store=CheckpointStore(ckpt_dir),
        config=EngineConfig(
            until_idle_seconds=0, ledger=True, checkpoint_every_batches=3, poll_timeout_ms=0, **config
        ),
    )


def run_to_completion_with_crashes(engine_factory, rng, crashes):
    """Build and run engines that crash at random points, then one that finishes."""
    for _ in range(crashes):
        kind = rng.choice(["poll", "before_learn", "after_learn"])
        engine = engine_factory(
            abort_at_poll=rng.randint(0, 12) if kind == "poll" else None,
            crash_learn_at=rng.randint(1, 8) if kind != "poll" else None,
            crash_after=kind == "after_learn",
        )
        try:
            engine.run()
        except Abort:
            pass
    return engine_factory().run()


def test_learns_every_record_once_and_counts_dead_letters(tmp_path):
    records = make_records(500, n_features=N_FEATURES, partitions=3, bad_every=50)
    summary = make_engine(records, tmp_path).run()
    assert summary.events_learned == 490
    assert summary.dead_letters == {"bad json": 10}
    assert summary.positions == {TopicPartition("test", p): n for p, n in enumerate([167, 167, 166])}
    assert summary.accuracy is not None and summary.accuracy > 0.8  # separable data, prequential


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("window", ["count", "event"])
def test_crash_at_random_points_then_restart_is_exactly_once(tmp_path, seed, window):
    records = make_records(900, n_features=N_FEATURES, partitions=3, seed=seed)
    factories = {
        "count": lambda: CountWindow(25),
        "event": lambda: EventTimeWindow(length_ms=20_000, allowed_lateness_ms=5_000),
    }
    summary = run_to_completion_with_crashes(
        lambda **crash: make_engine(records, tmp_path, window=factories[window](), **crash),
        random.Random(seed),
        5,
    )
    ledger = CheckpointStore(tmp_path).latest().ledger
    counts = dict(zip(ledger["ids"], np.asarray(ledger["counts"]).tolist()))
    expected = {f"e{i}" for i in range(900)}
    assert set(counts) | set() == expected - set(), f"lost: {sorted(expected - set(counts))[:5]}"
    assert max(counts.values()) == 1, "an event was learned twice"
    assert summary.events_learned == 900


def test_crash_inside_the_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    records = make_records(400, n_features=N_FEATURES, partitions=2)
    real_replace = state_io.os.replace
    calls = {"n": 0}

    def flaky_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 3:  # the third checkpoint dies between temp write and rename
            raise Abort("crash mid-checkpoint")
        return real_replace(src, dst)

    monkeypatch.setattr(state_io.os, "replace", flaky_replace)
    with pytest.raises(Abort):
        make_engine(records, tmp_path).run()
    monkeypatch.setattr(state_io.os, "replace", real_replace)
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith("ckpt-")], "temp file left behind"
    summary = make_engine(records, tmp_path).run()
    ledger = CheckpointStore(tmp_path).latest().ledger
    assert sorted(ledger["ids"]) == sorted(f"e{i}" for i in range(400))
    assert set(np.asarray(ledger["counts"]).tolist()) == {1}
    assert summary.events_learned == 400


def test_stop_request_checkpoints_the_open_window_and_resume_finishes_it(tmp_path):
    records = make_records(110, n_features=N_FEATURES)
    engine = make_engine(records, tmp_path, window=CountWindow(50))

    class StopAfterFirstPoll(ListSource):
        def poll(self, timeout_ms, max_records):
            batch = super().poll(timeout_ms, max_records)
            engine.request_stop("test")  # as SIGTERM would, mid-run
            return batch

    engine.source = StopAfterFirstPoll(records, batch_size=37)
    first = engine.run()
    # One poll of 37: not enough for a 50-event window, so nothing is learned
    # and the 37 events are saved as the window residue.
    assert first.stopped_because == "test" and first.events_learned == 0
    ckpt = CheckpointStore(tmp_path).latest()
    assert len(ckpt.window["pending"]["ids"]) == 37
    assert sum(ckpt.positions.values()) == 37
    second = make_engine(records, tmp_path, window=CountWindow(50)).run()
    assert second.events_learned == 110
    ledger = CheckpointStore(tmp_path).latest().ledger
    assert sorted(ledger["ids"]) == sorted(f"e{i}" for i in range(110))


def test_restoring_with_a_different_feature_count_is_a_clear_error(tmp_path):
    make_engine(make_records(100, n_features=N_FEATURES), tmp_path).run()
    with pytest.raises(SchemaMismatchError, match="4 features, but 6 are configured"):
        make_engine(make_records(100, n_features=6), tmp_path, n_features=6).run()


def test_late_events_are_dead_lettered_with_their_content(tmp_path):
    records = make_records(200, n_features=N_FEATURES)
    # Swap two far-apart timestamps' order: record 150 claims an old event time.
    import orjson

    doc = orjson.loads(records[150].value)
    doc["ts"] = 0
    records[150] = records[150]._replace(value=orjson.dumps(doc))
    sink_path = tmp_path / "dlq.jsonl"
    engine = make_engine(records, tmp_path / "ck", window=EventTimeWindow(length_ms=10_000))
    engine._sink.inner = FileDeadLetterSink(sink_path)
    summary = engine.run()
    assert summary.late == 1 and summary.dead_letters == {"late": 1}
    letter = orjson.loads(sink_path.read_text().splitlines()[0])
    assert letter["reason"].startswith("late") and letter["offset"] == 150
    assert summary.events_learned == 199


@pytest.mark.parametrize("seed", range(6))
def test_columnar_source_with_crashes_is_exactly_once_and_counts_dead_letters_once(tmp_path, seed):
    # The path ConfluentKafkaSource takes: polls come as PollColumns, interleaved
    # across partitions, and a RawRecord is built only for a dead letter.
    from stream.testing.columns import ColumnarListSource

    records = make_records(900, n_features=N_FEATURES, partitions=3, seed=seed, bad_every=97)
    column_polls = []

    class CountingColumnarSource(ColumnarListSource):
        def poll_columns(self, timeout_ms, max_records):
            column_polls.append(1)
            return super().poll_columns(timeout_ms, max_records)

    def engine_for(abort_at_poll=None, **kwargs):
        engine = make_engine(records, tmp_path, **kwargs)
        engine.source = CountingColumnarSource(records, batch_size=37, abort_at_poll=abort_at_poll)
        return engine

    summary = run_to_completion_with_crashes(engine_for, random.Random(seed), 5)
    assert column_polls, "the engine must use poll_columns when the source offers it"
    ledger = CheckpointStore(tmp_path).latest().ledger
    counts = dict(zip(ledger["ids"], np.asarray(ledger["counts"]).tolist()))
    good = {f"e{i}" for i in range(900) if i % 97 != 96}
    assert set(counts) == good, f"lost: {sorted(good - set(counts))[:5]}"
    assert max(counts.values()) == 1, "an event was learned twice"
    assert summary.events_learned == len(good)
    assert summary.dead_letters == {"bad json": 9}
    assert summary.positions == {TopicPartition("test", p): 300 for p in range(3)}
