"""Both Kafka backends on the real broker: learn everything, seek to checkpoints, checkpoint on revocation."""

from __future__ import annotations

import threading
import time

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTP

from learners.neural.learner import TorchLearner
from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.records import TopicPartition
from stream.engine.checkpoint import CheckpointStore
from stream.engine.loop import Engine, EngineConfig
from stream.sources.confluent import ConfluentKafkaSource
from stream.sources.kafka import KafkaSource, KafkaSourceConfig
from stream.window.count import CountWindow

TIMINGS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}
DEADLINE_S = 180  # generous, for events: everything learned, a rebalance done


def produce(bootstrap: str, topic: str, n: int, partitions: int = 3) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for i in range(n):
        producer.send(
            topic, orjson.dumps({"id": f"r{i}", "x": [i % 5, 1.0], "y": i % 2}), partition=i % partitions
        )
    producer.flush()
    producer.close()


def engine_for(source, ckpt_dir, **config) -> Engine:
    return Engine(
        source=source,
        codec=JsonCodec(CodecConfig(n_features=2)),
        window=CountWindow(100),
        learner_builder=lambda d: TorchLearner(n_features=d),
        store=CheckpointStore(ckpt_dir),
        config=EngineConfig(ledger=True, **config),
    )


@pytest.mark.parametrize("backend", [KafkaSource, ConfluentKafkaSource])
def test_group_member_learns_everything_and_commits_the_checkpointed_positions(
    backend, kafka_bootstrap, make_topic, unique_name, tmp_path
):
    topic = make_topic(partitions=3)
    produce(kafka_bootstrap, topic, 1500)
    source = backend(
        KafkaSourceConfig(bootstrap=kafka_bootstrap, topics=(topic,), group_id=unique_name, **TIMINGS)
    )
    summary = engine_for(source, tmp_path, until_idle_seconds=2).run()
    assert summary.events_learned == 1500
    assert summary.positions == {TopicPartition(topic, p): 500 for p in range(3)}
    # Group offsets follow the checkpoint (monitoring only, but they must be right).
    probe = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=unique_name, enable_auto_commit=False)
    try:
        assert {p: probe.committed(KTP(topic, p)) for p in range(3)} == {0: 500, 1: 500, 2: 500}
    finally:
        probe.close()


@pytest.mark.parametrize("backend", [KafkaSource, ConfluentKafkaSource])
def test_explicit_partitions_resume_from_the_checkpoint_not_the_beginning(
    backend, kafka_bootstrap, make_topic, tmp_path
):
    topic = make_topic(partitions=2)
    produce(kafka_bootstrap, topic, 600, partitions=2)
    config = KafkaSourceConfig(
        bootstrap=kafka_bootstrap, partitions=(TopicPartition(topic, 0), TopicPartition(topic, 1))
    )
    first = engine_for(backend(config), tmp_path, max_events=200, max_poll_records=50).run()
    assert 200 <= first.events_learned < 600
    produce(kafka_bootstrap, topic, 0)
    second = engine_for(backend(config), tmp_path, until_idle_seconds=2).run()
    assert second.events_learned == 600
    ledger = CheckpointStore(tmp_path).latest().ledger
    assert len(ledger["ids"]) == 600 and max(ledger["counts"]) == 1


def test_partition_revocation_checkpoints_before_the_partitions_are_released(
    kafka_bootstrap, make_topic, unique_name, tmp_path, kafka_consumer_settings
):
    topic = make_topic(partitions=2)
    produce(kafka_bootstrap, topic, 1000, partitions=2)
    source = KafkaSource(
        KafkaSourceConfig(bootstrap=kafka_bootstrap, topics=(topic,), group_id=unique_name, **TIMINGS)
    )
    # Checkpoints would otherwise be rare: only the revocation should write one mid-run.
    engine = engine_for(source, tmp_path, checkpoint_every_batches=10_000, checkpoint_every_seconds=3600)
    runner = threading.Thread(target=engine.run, daemon=True)
    runner.start()
    deadline = time.monotonic() + DEADLINE_S
    while engine.stats.events_learned < 1000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.stats.events_learned == 1000
    assert CheckpointStore(tmp_path).latest() is None, "no periodic checkpoint expected yet"

    # A second member joins: the group rebalances and the engine loses a partition.
    newcomer = KafkaConsumer(
        topic, group_id=unique_name, **{k: v for k, v in kafka_consumer_settings.items()}
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not newcomer.assignment() and time.monotonic() < deadline:
            newcomer.poll(timeout_ms=200)
        assert newcomer.assignment(), "the newcomer never got a partition"
        ckpt = CheckpointStore(tmp_path).latest()
        assert ckpt is not None, "revocation must checkpoint before releasing partitions"
        assert ckpt.counters["events_learned"] == 1000
        assert ckpt.positions == {TopicPartition(topic, 0): 500, TopicPartition(topic, 1): 500}
        # The newcomer starts where the engine's checkpoint ends: nothing is learned twice across members.
        (tp,) = newcomer.assignment()
        assert newcomer.position(tp) == 500
    finally:
        newcomer.close()
        engine.request_stop("test over")
        runner.join(30)
