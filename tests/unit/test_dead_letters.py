"""Dead letters: the envelope for every poison kind, the spool, the Kafka sink while its broker is down."""

from __future__ import annotations

import base64
import hashlib
import json

import numpy as np
import pytest

from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.deadletter import DeadLetter, FileDeadLetterSink, envelope
from stream.core.records import RawRecord, TopicPartition
from stream.core.retry import RetryTimer
from stream.sources.deadletter_kafka import DeadLetterUnavailableError, KafkaDeadLetterSink
from stream.sources.deadletter_spool import DeadLetterSpool
from stream.sources.embedded_broker import free_port
from stream.testing.poison import N_FEATURES, POISON_KINDS


@pytest.mark.parametrize("kind", POISON_KINDS, ids=lambda k: k.name)
def test_the_codec_dead_letters_every_poison_kind_with_its_reason(kind):
    codec = JsonCodec(CodecConfig(n_features=N_FEATURES))
    good = RawRecord("t", 0, 0, 1, None, b'{"id": "g", "x": [1, 2, 3], "y": 0}')
    out = codec.decode({TopicPartition("t", 0): [good, RawRecord("t", 0, 1, 2, kind.key, kind.value)]})
    assert out.events.ids.tolist() == ["g"]
    assert [d.reason_kind for d in out.dead_letters] == [kind.expected]


@pytest.mark.parametrize("kind", POISON_KINDS, ids=lambda k: k.name)
def test_every_poison_kind_has_an_envelope_with_a_value_that_keeps_the_record(kind):
    rec = RawRecord("t", 2, 41, 1234, kind.key, kind.value, (("trace", b"\x00\x01"),))
    line = envelope(DeadLetter(rec, f"{kind.expected}: because"), max_value_bytes=1024)
    assert len(line) < 16 * 1024  # cut to the destination's limit, whatever the record
    doc = json.loads(line)
    assert doc["format"] == "streamlearn.dead-letter.v1"
    assert (doc["reason_kind"], doc["topic"], doc["partition"], doc["offset"]) == (kind.expected, "t", 2, 41)
    assert doc["key_b64"] == (None if kind.key is None else base64.b64encode(kind.key).decode())
    assert doc["headers"] == [["trace", "AAE="]]
    if kind.value is None:
        assert doc["value_b64"] is None and doc["value_size"] is None
        return
    kept = base64.b64decode(doc["value_b64"])
    assert doc["value_size"] == len(kind.value)
    assert doc["value_sha256"] == hashlib.sha256(kind.value).hexdigest()
    assert doc["value_truncated"] == (len(kind.value) > 1024)
    assert kept == kind.value[:1024]


def test_the_file_sink_keeps_whole_values(tmp_path):
    big = b"x" * 3_000_000
    sink = FileDeadLetterSink(tmp_path / "dlq.jsonl")
    sink.send([DeadLetter(RawRecord("t", 0, 1, -1, None, big), "oversize: big")])
    sink.close()
    doc = json.loads((tmp_path / "dlq.jsonl").read_bytes())
    assert base64.b64decode(doc["value_b64"]) == big and not doc["value_truncated"]


def test_the_spool_survives_a_restart_and_drops_a_torn_tail(tmp_path):
    path = tmp_path / "spool.jsonl"
    spool = DeadLetterSpool(path)
    for i in range(5):
        spool.append(json.dumps({"i": i}).encode())
    spool.sync()
    spool.drop_first(2)
    spool.close()
    with open(path, "ab") as f:
        f.write(b'{"i": 5')  # a crash in the middle of a write
    again = DeadLetterSpool(path)
    assert [json.loads(line)["i"] for line in again.read()] == [2, 3, 4]
    again.append(b'{"i": 6}')
    again.sync()
    assert [json.loads(line)["i"] for line in DeadLetterSpool(path).read()] == [2, 3, 4, 6]


class _NoWait:
    """A backoff that never waits: every flush tries the destination again."""

    def compute(self, failures: int) -> float:
        return 0.0


def _letters(n: int) -> list[DeadLetter]:
    return [
        DeadLetter(RawRecord("t", 0, i, -1, None if i % 2 else b"k", None), "empty value: tombstone")
        for i in range(n)
    ]


def test_a_kafka_sink_without_a_broker_spools_reports_and_never_raises_until_its_limit(tmp_path):
    port = free_port()  # nothing listens there
    timer = RetryTimer(_NoWait())
    sink = KafkaDeadLetterSink(
        f"127.0.0.1:{port}",
        tmp_path / "spool.jsonl",
        retry=timer,
        flush_timeout_s=0.2,
        max_spool_bytes=10_000,
        producer_config={"bootstrap_timeout_ms": 300},
    )
    sink.send(_letters(10))
    sink.flush()
    status = sink.status()
    assert status.spooled == 10 and not status.healthy and status.last_error
    # The backoff counts attempts (the first send, the flush's probe), not the 10 letters.
    assert timer.failures == 2
    assert "down" in status.describe() and "10 letters spooled" in status.describe()
    sink.send(_letters(100))
    with pytest.raises(DeadLetterUnavailableError, match="spool .* passed its limit"):
        sink.flush()
    sink.close()  # closing never raises: the letters are on disk
    assert len(DeadLetterSpool(tmp_path / "spool.jsonl")) == 110


def test_recent_ids_refuse_repeats_across_generations_and_restores():
    from stream.engine.dedup import RecentIds

    recent = RecentIds(capacity=100)
    first = np.array([f"id-{i}" for i in range(95)])
    assert recent.admit(first).all()
    assert not recent.admit(first[:50]).any()
    restored = RecentIds.from_snapshot(recent.snapshot())
    assert not restored.admit(first[60:]).any()
    # Far past the horizon the oldest ids are forgotten, the newest still known.
    for start in range(0, 100, 10):
        restored.admit(np.array([f"new-{i}" for i in range(start, start + 10)]))
    assert restored.admit(np.array(["id-0"])).all()
    assert not restored.admit(np.array(["new-99"])).any()


def test_recent_ids_restored_at_any_point_answer_as_the_uninterrupted_memory():
    from stream.engine.dedup import RecentIds

    rng = np.random.default_rng(7)
    live, restored = RecentIds(capacity=200), RecentIds(capacity=200)
    for step in range(120):  # ~30 generations sealed and dropped
        ids = np.array([f"e{i}" for i in rng.integers(0, 400, size=7)])
        if step % 9 == 0:
            snap = restored.snapshot()
            assert snap["generations"].dtype == np.uint8
            restored = RecentIds.from_snapshot(snap)
        assert restored.admit(ids).tolist() == live.admit(ids).tolist()
    assert len(restored) == len(live)


def test_recent_ids_load_a_snapshot_with_int64_generations():
    from stream.engine.dedup import RecentIds

    recent = RecentIds(capacity=100)
    recent.admit(np.array([f"id-{i}" for i in range(35)]))
    old = dict(recent.snapshot(), generations=recent.snapshot()["generations"].astype(np.int64))
    assert not RecentIds.from_snapshot(old).admit(np.array(["id-3", "id-34"])).any()


def test_hash_ids_is_stable_and_ignores_padding():
    from stream.engine.dedup import hash_ids

    a = hash_ids(np.array(["a", "bb", "ccc"]))
    b = hash_ids(np.array(["ccc", "a", "bb", "a" * 40]))
    assert a.tolist() == [b[1], b[2], b[0]]
    assert len(set(hash_ids(np.array([f"{i}" for i in range(100_000)])).tolist())) == 100_000


def test_daemon_metrics_say_when_the_destination_is_down_over_http():
    import urllib.request

    from stream.core.deadletter import SinkStatus
    from stream.engine.metrics_endpoint import DaemonMetrics
    from stream.engine.progress import RunStats

    metrics = DaemonMetrics()
    port = free_port()
    server = metrics.serve(port)
    try:
        stats = RunStats(events_learned=5, duplicates=2, dead_letters={"bad json": 3}, rehearsal_steps=40)
        stats.dead_letter_status = SinkStatus(
            "<topic>.dlq", down_for_seconds=12.0, last_error="refused", spooled=3, spool_bytes=900
        )
        metrics.update(stats)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
    assert "streamlearn_dead_letter_destination_up 0.0" in text
    assert "streamlearn_dead_letter_spooled 3.0" in text
    assert 'streamlearn_dead_letters{reason="bad json"} 3.0' in text
    assert "streamlearn_duplicate_ids 2.0" in text
    assert "streamlearn_rehearsal_steps 40.0" in text


def test_a_metrics_port_in_use_is_a_config_error():
    import socket

    from stream.core.errors import ConfigError
    from stream.engine.metrics_endpoint import progress_reporter

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConfigError, match="cannot listen"):
            progress_reporter(quiet=True, metrics_port=taken.getsockname()[1])
