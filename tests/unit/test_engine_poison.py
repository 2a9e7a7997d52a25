"""The engine over a poison stream (every bad-record kind, repeated ids): nothing stops it, nothing is learned twice."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

from learners.neural.learner import TorchLearner
from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.deadletter import FileDeadLetterSink
from stream.core.records import RawRecord
from stream.engine.checkpoint import CheckpointStore
from stream.engine.loop import Engine, EngineConfig
from stream.testing.doubles import ListSource
from stream.testing.poison import N_FEATURES, poison_stream
from stream.window.count import CountWindow


def _as_raw(stream, lanes: int = 3) -> list[RawRecord]:
    offsets: Counter[int] = Counter()
    out = []
    for r in stream.records:
        out.append(RawRecord("t", r.lane, offsets[r.lane], 1_000 + len(out), r.key, r.value))
        offsets[r.lane] += 1
    return out


def _engine(records, directory, **config) -> Engine:
    return Engine(
        source=ListSource(records, batch_size=250),
        codec=JsonCodec(CodecConfig(n_features=N_FEATURES)),
        window=CountWindow(200),
        learner_builder=lambda d: TorchLearner(n_features=d),
        store=CheckpointStore(directory / "ckpt"),
        dead_letters=FileDeadLetterSink(directory / "dlq.jsonl"),
        config=EngineConfig(until_idle_seconds=0, ledger=True, checkpoint_every_batches=3, **config),
    )


def test_every_good_record_is_learned_once_and_every_bad_one_dead_lettered_with_its_reason(tmp_path):
    stream = poison_stream(n_good=3_000, seed=3)
    records = _as_raw(stream)
    summary = _engine(records, tmp_path).run()

    ledger = CheckpointStore(tmp_path / "ckpt").latest()
    from stream.engine.ledger import LearnLedger

    learned = LearnLedger.from_snapshot(ledger.ledger)
    assert learned.ids() == set(stream.good_ids) and not learned.duplicated()
    assert summary.events_learned == len(stream.good_ids)
    assert summary.duplicates == 31

    letters = [json.loads(line) for line in (tmp_path / "dlq.jsonl").read_bytes().splitlines()]
    got = {(d["partition"], d["offset"]): d["reason_kind"] for d in letters}
    expected = {
        (rec.partition, rec.offset): poison.expected
        for rec, poison in zip(records, stream.records)
        if poison.expected is not None
    }
    assert got == expected
    by_kind = defaultdict(int)
    for kind in expected.values():
        by_kind[kind] += 1
    assert summary.dead_letters == dict(by_kind)


def test_repeats_are_remembered_across_a_restart_and_can_be_dropped_instead(tmp_path):
    stream = poison_stream(n_good=1_000, repeats=0, seed=4)
    records = [rec for rec, poison in zip(_as_raw(stream), stream.records) if poison.expected is None]
    first = _engine(records, tmp_path, duplicate_policy="drop").run()
    assert first.events_learned == 1_000 and first.duplicates == 0
    # The same ids again at new offsets (an upstream that re-sent everything): none is learned.
    again = [r._replace(offset=r.offset + 10_000) for r in records]
    second = _engine(records + again, tmp_path, duplicate_policy="drop").run()
    assert second.events_learned == 1_000 and second.duplicates == 1_000
    assert sum(second.dead_letters.values()) == sum(first.dead_letters.values())  # dropped, not dead-lettered


def test_the_window_can_be_switched_off(tmp_path):
    stream = poison_stream(n_good=500, repeats=5, seed=5)
    summary = _engine(_as_raw(stream), tmp_path, dedup_window=0).run()
    assert summary.duplicates == 0 and summary.events_learned == 505
