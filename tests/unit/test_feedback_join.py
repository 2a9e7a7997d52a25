"""Delayed labels joined with their predictions in the engine: the join's rules, its checkpoint, and crashes."""

from __future__ import annotations

import random

import numpy as np
import orjson
import pytest

from learners.neural.learner import TorchLearner
from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.poll import PollColumns
from stream.core.records import RawRecord
from stream.engine.checkpoint import CheckpointStore
from stream.engine.feedback_loop import FeedbackLoop
from stream.engine.join import JoinConfig, LabelJoin
from stream.engine.loop import Engine, EngineConfig
from stream.engine.oversight import Oversight
from stream.engine.spec import EngineSpec, IntakeSpec, SourceSpec
from stream.testing.doubles import Abort, ListSource
from stream.window.count import CountWindow

pytestmark = pytest.mark.unit

TTL = 5_000


def prediction(
    i: int, at: int, *, partition: int = 0, offset: int | None = None, version: int = 1
) -> RawRecord:
    x = [((i * 7) % 11) / 10 - 0.5, ((i * 3) % 5) / 4 - 0.5]
    value = orjson.dumps(
        {"id": f"e{i}", "x": x, "version": version, "prediction": 1, "probabilities": [0.4, 0.6], "ts": at}
    )
    return RawRecord("predictions", partition, i if offset is None else offset, at, f"e{i}".encode(), value)


def label(i: int, at: int, y: int = 1, *, partition: int = 0, offset: int = 0) -> RawRecord:
    return RawRecord("labels", partition, offset, at, f"e{i}".encode(), orjson.dumps({"id": f"e{i}", "y": y}))


def reasons(letters) -> list[str]:
    return [letter.reason.split(":")[0] for letter in letters]


# ----------------------------------------------------------------- the rules
def test_a_label_joins_its_prediction_whichever_comes_first_and_across_polls():
    join = LabelJoin(JoinConfig("labels", ttl_ms=TTL))
    assert join.feed([prediction(0, 1_000), label(1, 1_500)]).records == []
    out = join.feed([label(0, 2_000, y=0), prediction(1, 2_500)])
    joined = {orjson.loads(r.value)["id"]: r for r in out.records}
    assert sorted(joined) == ["e0", "e1"]
    assert orjson.loads(joined["e0"].value) == {"id": "e0", "x": [-0.5, -0.5], "y": 0, "ts": 1_000}
    # The joined record keeps the prediction's place: its topic, partition, offset and key.
    assert joined["e1"][:5] == ("predictions", 0, 1, 2_500, b"e1")
    assert join.pending == 0 and join.counters.joined == 2


def test_waiting_items_expire_on_the_other_sides_record_time_as_dead_letters():
    join = LabelJoin(JoinConfig("labels", ttl_ms=TTL))
    join.feed([prediction(0, 0), label(9, 10)])  # e0 waits for a label, e9 for a prediction
    out = join.feed([label(1, TTL - 1), prediction(1, TTL - 1)])  # neither watermark is past its TTL yet
    assert join.pending == 2 and out.letters == []
    out = join.feed([label(2, TTL + 1)])  # the labels' watermark passes e0's time + TTL
    assert (
        reasons(out.letters) == ["join expired"] and "no label for id 'e0' within 5s" in out.letters[0].reason
    )
    assert out.letters[0].record.topic == "predictions"  # the record itself is dead-lettered
    out = join.feed([prediction(3, TTL + 20)])
    assert [letter.record.topic for letter in out.letters] == ["labels"]
    assert join.counters.expired_features == 1 and join.counters.expired_labels == 1


def test_a_partition_read_ahead_of_the_others_expires_nothing_early():
    join = LabelJoin(JoinConfig("labels", ttl_ms=TTL))
    join.feed([prediction(0, 0), label(5, 0, partition=1)])
    assert join.feed([label(1, TTL + 100, partition=0)]).letters == []  # partition 1 is still at 0
    assert join.watermark("labels") == 0
    out = join.feed([label(2, TTL + 100, partition=1, offset=1)])
    assert reasons(out.letters) == ["join expired"] and join.watermark("labels") == TTL + 100


def test_an_assigned_partition_holds_back_until_it_delivers_or_is_idle():
    from stream.engine.join import PARTITION_IDLE_MS

    join = LabelJoin(JoinConfig("labels", ttl_ms=TTL))
    join.assigned([("predictions", 0), ("labels", 0), ("labels", 1)], now_ms=0)
    join.feed([prediction(0, 0), label(1, TTL + 100, partition=0)], now_ms=1_000)
    assert (
        join.watermark("labels") == -1 and join.pending == 2
    )  # labels[1] not read yet: it may hold e0's label
    out = join.feed([], now_ms=PARTITION_IDLE_MS + 1)  # labels[1] delivered nothing for too long: idle
    assert join.watermark("labels") == TTL + 100 and reasons(out.letters) == ["join expired"]


def test_repeated_labels_and_predictions_are_ignored_the_first_one_wins():
    join = LabelJoin(JoinConfig("labels", ttl_ms=TTL))
    assert len(join.feed([prediction(0, 0), label(0, 5), label(0, 6, y=0)]).records) == 1
    assert len(join.feed([label(0, 7)]).records) == 0  # after the join too
    assert join.counters.repeated_labels == 2 and join.pending == 0
    out = join.feed([prediction(1, 10), prediction(1, 11, offset=99)])  # a repeat while the first one waits
    assert out.letters == [] and join.pending == 1
    assert not join.feed([prediction(0, 12, offset=50)]).records  # a re-logged, already joined prediction
    assert join.counters.repeated_features == 2
    (joined,) = join.feed([label(1, 13)]).records
    assert joined.offset == 1  # the first prediction is the one joined


def test_a_full_join_state_evicts_its_oldest_item_and_says_so():
    join = LabelJoin(JoinConfig("labels", ttl_ms=TTL, max_pending=3))
    out = join.feed([prediction(0, 0), label(5, 1), prediction(1, 2), prediction(2, 3)])
    assert join.pending == 3 and reasons(out.letters) == ["join evicted"]
    assert (
        "--join-max-pending" in out.letters[0].reason
        and out.letters[0].record.value == prediction(0, 0).value
    )
    assert join.counters.evicted == 1 and join.report()["pending_bytes"] > 0


def test_unreadable_feedback_records_are_dead_letters_with_the_reason():
    join = LabelJoin(JoinConfig("labels", ttl_ms=TTL))
    bad = [
        RawRecord("labels", 0, 0, 0, None, b'{"id": "a"}'),
        RawRecord("labels", 0, 1, 0, None, b"not json"),
        RawRecord("predictions", 0, 0, 0, None, b'{"x": [1]}'),
    ]
    out = join.feed(bad)
    assert [letter.reason for letter in out.letters] == [
        "feedback record: label 'a' has no \"y\"",
        "feedback record: label is not JSON: invalid literal, expected 'null': line 1 column 1 (char 0)",
        'feedback record: prediction-log record has no "id" (a string or an integer)',
    ]
    assert join.counters.bad_records == 3


@pytest.mark.parametrize(
    "value, reason",
    [
        (b'{"id": "a", "x": [1], "shadow": []}', '"shadow" must be an object'),
        (b'{"id": "a", "x": [1], "shadow": {"v": {}}}', '"shadow" must be an object'),
        (b'{"id": "a", "x": [1], "probabilities": ["a", "b"]}', '"probabilities" must be a list of numbers'),
        (b'{"id": "a", "x": [1], "probabilities": "ab"}', '"probabilities" must be a list of numbers'),
        (b'{"id": "a", "x": [1], "classes": 5}', '"classes" must be a list or null'),
        (
            b'{"id": "a", "x": [1], "probabilities": [1], "classes": [0, 1]}',
            '2 "classes" for 1 probabilities',
        ),
        (b'{"id": "a", "x": [1], "ts": 1e20}', '"ts" must be epoch milliseconds'),
        (b'{"id": "a", "x": [1], "shadow": {"3": {"probabilities": [null]}}}', "shadow version 3"),
    ],
)
def test_a_prediction_of_the_wrong_shape_is_a_dead_letter_not_a_crash(value, reason):
    loop = FeedbackLoop(JoinConfig("labels", ttl_ms=TTL))
    records = [
        RawRecord("predictions", 0, 0, 0, None, value),
        RawRecord("labels", 0, 0, 1, None, b'{"id":"a","y":1}'),
    ]
    joined, letters, _ = loop.take(PollColumns.from_records(records))
    assert len(joined) == 0 and [letter.reason.split(":")[0] for letter in letters] == ["feedback record"]
    assert reason in letters[0].reason


def test_a_restored_mark_of_a_partition_no_longer_read_holds_nothing_back():
    join = LabelJoin(JoinConfig("labels", ttl_ms=TTL))
    join.feed([label(9, 100, partition=3)])
    restored = LabelJoin.from_snapshot(join.snapshot(), join.config)
    restored.assigned([("predictions", 0), ("labels", 0)])  # labels[3] is gone (the topic recreated smaller)
    restored.feed([prediction(0, 0), label(1, TTL + 500)])
    assert restored.watermark("labels") == TTL + 500 and restored.counters.expired_features == 1


@pytest.mark.parametrize("seed", range(6))
def test_a_restored_join_answers_as_the_uninterrupted_one(seed):
    rng = random.Random(seed)
    records = feedback_stream(rng, 300)
    polls, at = [], 0
    while at < len(records):
        size = rng.randint(1, 40)
        polls.append(records[at : at + size])
        at += size
    config = JoinConfig("labels", ttl_ms=TTL, max_pending=150)
    straight, restarted = LabelJoin(config), LabelJoin(config)
    for poll in polls:
        a, b = straight.feed(poll), restarted.feed(poll)
        assert a.records == b.records and [x.reason for x in a.letters] == [x.reason for x in b.letters]
        if rng.random() < 0.3:
            restarted = LabelJoin.from_snapshot(restarted.snapshot(), config)
    assert straight.report() == restarted.report()


# ------------------------------------------------------------ in the engine
def feedback_stream(rng: random.Random, n: int, *, partitions: int = 2) -> list[RawRecord]:
    """Predictions every 100 ms; each label comes within TTL/2 before or after it, much too late, or never.

    Records are in arrival (time) order, offsets given in that order per partition, as a broker would.
    """
    timed: list[tuple[int, str, int, int]] = []  # (time, topic, event, label)
    for i in range(n):
        at = 10_000 + 100 * i
        fate = rng.random()
        if fate < 0.75:
            delay = rng.randint(-TTL // 2 + 1, TTL // 2 - 1)
        elif fate < 0.85:
            delay = 3 * TTL + rng.randint(0, TTL)
        else:
            delay = None
        timed.append((at, "predictions", i, 0))
        if delay is not None:
            timed.append((at + delay, "labels", i, int(sum(orjson.loads(prediction(i, 0).value)["x"]) > 0)))
    timed.sort()
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for at, topic, i, y in timed:
        p = i % partitions
        o = offsets.get((topic, p), 0)
        offsets[topic, p] = o + 1
        make = (
            prediction(i, at, partition=p, offset=o)
            if topic == "predictions"
            else label(i, at, y, partition=p, offset=o)
        )
        out.append(make)
    return out


def joinable(records: list[RawRecord]) -> set[str]:
    """The ids whose label came within TTL/2 of the prediction: joined whatever the polls or crashes."""
    times: dict[str, dict[str, int]] = {}
    for r in records:
        times.setdefault(orjson.loads(r.value)["id"], {})[r.topic] = r.timestamp
    return {i for i, t in times.items() if len(t) == 2 and abs(t["labels"] - t["predictions"]) < TTL // 2}


class CrashingLearner:
    def __init__(self, inner, crash_at: int | None):
        self.inner, self.crash_at, self.calls = inner, crash_at, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def learn_batch(self, X, y):
        self.calls += 1
        if self.calls == self.crash_at:
            raise Abort("crash before learning")
        return self.inner.learn_batch(X, y)


def make_engine(records, ckpt_dir, *, abort_at_poll=None, crash_learn_at=None) -> Engine:
    return Engine(
        source=ListSource(records, batch_size=37, abort_at_poll=abort_at_poll),
        codec=JsonCodec(CodecConfig(n_features=2)),
        window=CountWindow(20),
        learner_builder=lambda d: CrashingLearner(TorchLearner(n_features=d, seed=1), crash_learn_at),
        store=CheckpointStore(ckpt_dir),
        config=EngineConfig(until_idle_seconds=0, ledger=True, checkpoint_every_batches=2, poll_timeout_ms=0),
        oversight=Oversight(feedback=FeedbackLoop(JoinConfig("labels", ttl_ms=TTL))),
    )


def learned_counts(ckpt_dir, engine: Engine | None = None) -> dict[str, int]:
    """Per id, how often it was learned (the ledger), after running ``engine`` if one is given."""
    if engine is not None:
        engine.run()
    ledger = CheckpointStore(ckpt_dir).latest().ledger
    return dict(zip(ledger["ids"], np.asarray(ledger["counts"]).tolist()))


@pytest.mark.parametrize("seed", range(6))
def test_crashes_at_random_points_neither_lose_nor_double_learn_a_labelled_event(tmp_path, seed):
    rng = random.Random(seed)
    records = feedback_stream(rng, 400)
    for _ in range(5):
        crash = rng.choice(["poll", "learn"])
        engine = make_engine(
            records,
            tmp_path,
            abort_at_poll=rng.randint(0, 20) if crash == "poll" else None,
            crash_learn_at=rng.randint(1, 10) if crash == "learn" else None,
        )
        try:
            engine.run()
        except Abort:
            pass
    engine = make_engine(records, tmp_path)
    summary = engine.run()
    counts = learned_counts(tmp_path)
    # What an uninterrupted run learns: every label within TTL/2, and the late ones that beat their expiry.
    expected = set(
        learned_counts(uninterrupted := tmp_path / "uninterrupted", make_engine(records, uninterrupted))
    )
    assert (
        joinable(records) <= expected <= {orjson.loads(r.value)["id"] for r in records if r.topic == "labels"}
    )
    assert set(counts) == expected, (
        f"lost {sorted(expected - set(counts))[:5]}, extra {sorted(set(counts) - expected)[:5]}"
    )
    assert max(counts.values()) == 1, "a labelled event was learned twice"
    assert summary.events_learned == len(expected)
    # Scored once per joined label, whatever the crashes: live n = joined = learned.
    doc = engine.feedback.document()
    assert doc["served"]["1"]["n"] == len(expected) == doc["join"]["joined"]
    assert doc["served"]["1"]["accuracy"] == pytest.approx(
        sum(
            orjson.loads(r.value)["y"] == 1
            for r in records
            if r.topic == "labels" and orjson.loads(r.value)["id"] in expected
        )
        / len(expected)
    )
    assert doc["join"]["expired_features"] > 0 and doc["join"]["expired_labels"] > 0


def test_progress_lines_and_daemon_metrics_show_the_join(tmp_path):
    import io

    from stream.engine.metrics_endpoint import DaemonMetrics
    from stream.engine.progress import ProgressPrinter

    records = feedback_stream(random.Random(3), 200)
    engine = make_engine(records, tmp_path)
    seen = []
    engine.on_progress = seen.append
    engine.run()
    stats = seen[-1]
    assert stats.join["joined"] == engine.feedback.join.counters.joined > 0
    out = io.StringIO()
    ProgressPrinter(out)(stats)
    assert f"joined {stats.join['joined']:,} waiting" in out.getvalue()
    metrics = DaemonMetrics()
    metrics.update(stats)
    text = metrics.render().decode()
    assert f'streamlearn_join_outcomes{{outcome="joined"}} {float(stats.join["joined"])}' in text
    assert 'streamlearn_join_pending{side="labels"}' in text and "streamlearn_join_pending_bytes" in text


@pytest.mark.parametrize(
    "source, extra, message",
    [
        (dict(files=("a.jsonl",)), {}, "name the features with --topic"),
        (dict(bootstrap="k:9092", partitions=("p:0",)), {}, "name the features with --topic"),
        (dict(bootstrap="k:9092", topics=("p",), group="g"), {}, "drop --group"),
        (
            dict(bootstrap="k:9092", topics=("p",)),
            dict(intake=IntakeSpec(mode="process")),
            "drop --intake process",
        ),
        (
            dict(bootstrap="k:9092", topics=("p",)),
            dict(window="event:10s"),
            "use a count: or processing: --window",
        ),
        (dict(bootstrap="k:9092", topics=("labels",)), {}, "is also a --topic of features"),
    ],
)
def test_a_join_the_daemon_cannot_do_is_refused_in_one_line(source, extra, message):
    from stream.core.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        EngineSpec(source=SourceSpec(**source), join=JoinConfig("labels"), **extra)


def test_full_retrains_are_refused_with_a_join():
    from stream.core.errors import ConfigError
    from stream.reconcile.options import build_reconciler
    from stream.reconcile.reconciler import ReconcileConfig

    spec = EngineSpec(source=SourceSpec(bootstrap="k:9092", topics=("p",)), join=JoinConfig("labels"))
    with pytest.raises(ConfigError, match="holds no labels with --labels-topic"):
        build_reconciler(ReconcileConfig(every_events=10_000), spec, gate=None)


def test_a_registry_that_is_away_is_not_asked_again_at_every_checkpoint(monkeypatch):
    import stream.engine.feedback_loop as feedback_loop
    from stream.core.errors import RegistryUnavailableError

    class AwayRegistry:
        calls = 0

        def record_live(self, doc):
            AwayRegistry.calls += 1
            raise RegistryUnavailableError("Redis at 127.0.0.1:6379 is unreachable")

    loop = FeedbackLoop(JoinConfig("labels", ttl_ms=TTL), AwayRegistry())
    now = [1_000.0]
    monkeypatch.setattr(feedback_loop.time, "monotonic", lambda: now[0])
    loop.report()
    loop.report()  # within the back-off: not asked
    assert AwayRegistry.calls == 1
    now[0] += feedback_loop.REPORT_BACKOFF_S + 1
    loop.report()
    assert AwayRegistry.calls == 2


def test_predictions_that_never_got_a_label_do_not_count_as_bad_records(tmp_path):
    records = feedback_stream(random.Random(5), 300)  # ~25% of the predictions expire unlabelled
    last = max((r for r in records if r.topic == "labels" and r.partition == 0), key=lambda r: r.offset)
    bad = last._replace(offset=last.offset + 1, value=b"not json")
    summary = make_engine([*records, bad], tmp_path).run()
    assert summary.dead_letters.get("join expired", 0) > 30
    assert summary.dead_letter_rate.rejected == 1  # the unreadable label only
