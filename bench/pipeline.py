"""Pipeline throughput versus the raw consume rate of the same Kafka client, in one run.

For each client (kafka-python, confluent-kafka) on the same broker and topic:

* **raw**: a bare consumer reading every record (touching each value), the
  ceiling any pipeline on that client can reach;
* **pipeline**: streamlearn's engine over the same records -- decode, window,
  prequential predict, learn, checkpoint every 20 batches.

Both start from a fresh consumer with explicitly assigned partitions (no group
join) and are timed from creation to the last record, alternating order over
``--repeats`` rounds; the table shows medians and the ratio
(target: pipeline >= 0.9 x raw).

    python -m bench.pipeline                       # embedded broker (tansu), 200k events
    python -m bench.pipeline --bootstrap host:9092 --events 1000000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid

from stream.checkpoint import CheckpointStore
from stream.codec import CodecConfig, JsonCodec
from stream.daemon import Engine, EngineConfig
from stream.produce import produce
from stream.records import TopicPartition
from stream.source import KafkaSource, KafkaSourceConfig
from stream.window import CountWindow

N_FEATURES = 10
PARTITIONS = 3


def raw_kafka_python(bootstrap: str, topic: str, n: int, max_records: int) -> float:
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    started = time.perf_counter()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100,
                             max_partition_fetch_bytes=8 << 20)
    tps = [KTP(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen = 0
    nbytes = 0
    while seen < n:
        for recs in consumer.poll(timeout_ms=100, max_records=max_records).values():
            seen += len(recs)
            nbytes += sum(len(r.value) for r in recs)
    elapsed = time.perf_counter() - started
    consumer.close()
    return n / elapsed


def raw_confluent(bootstrap: str, topic: str, n: int, max_records: int) -> float:
    import confluent_kafka as ck

    started = time.perf_counter()
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                            "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(PARTITIONS)])
    seen = 0
    nbytes = 0
    while seen < n:
        for m in consumer.consume(num_messages=max_records, timeout=0.1):
            if m.error() is None:
                seen += 1
                nbytes += len(m.value())
    elapsed = time.perf_counter() - started
    consumer.close()
    return n / elapsed


def pipeline(bootstrap: str, topic: str, n: int, max_records: int, backend: str, model: str, window: int) -> float:
    from learners.torch_learner import TorchLearner

    config = KafkaSourceConfig(bootstrap=bootstrap, partitions=tuple(TopicPartition(topic, p) for p in range(PARTITIONS)))
    if backend == "confluent":
        from stream.confluent_source import ConfluentKafkaSource

        source = ConfluentKafkaSource(config)
    else:
        source = KafkaSource(config)
    with tempfile.TemporaryDirectory() as ckpt_dir:
        engine = Engine(
            source=source,
            codec=JsonCodec(CodecConfig(n_features=N_FEATURES)),
            window=CountWindow(window),
            learner_builder=lambda d: TorchLearner(model=model, n_features=d),
            store=CheckpointStore(ckpt_dir),
            config=EngineConfig(max_events=n, max_poll_records=max_records, checkpoint_every_batches=20,
                                checkpoint_every_seconds=3600),
        )
        started = time.perf_counter()
        summary = engine.run()
        elapsed = time.perf_counter() - started
    if summary.events_learned != n:
        raise RuntimeError(f"pipeline learned {summary.events_learned}, expected {n}")
    return n / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", help="existing broker (default: start the embedded tansu broker)")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-poll-records", type=int, default=5_000)
    parser.add_argument("--window", type=int, default=1_000, help="count window size")
    parser.add_argument("--model", default="logistic")
    parser.add_argument("--clients", default="kafka-python,confluent")
    parser.add_argument("--torch-threads", type=int, default=1, help="as streamlearn run's --torch-threads")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from learners.torch_learner import TorchLearner

    torch.set_num_threads(args.torch_threads)
    # Warm-up outside the timings: the first optimizer import pulls in
    # torch._dynamo (~4 s once per process), a start-up cost, not throughput.
    TorchLearner(model=args.model, n_features=N_FEATURES).learn_batch(
        np.zeros((8, N_FEATURES), np.float32), np.zeros(8, np.int64))

    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        from stream.embedded import EmbeddedBroker

        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap
    try:
        topic = f"bench-pipeline-{uuid.uuid4().hex[:8]}"
        t0 = time.perf_counter()
        produce(bootstrap, topic, args.events, generator="hyperplane", partitions=PARTITIONS, n_features=N_FEATURES)
        print(f"broker {bootstrap} ({'embedded tansu' if broker else 'external'}); produced {args.events:,} "
              f"records of {N_FEATURES} features in {time.perf_counter() - t0:.1f}s; "
              f"window count:{args.window}, model {args.model}, checkpoint every 20 batches")
        clients = [c.strip() for c in args.clients.split(",") if c.strip()]
        raw_fns = {"kafka-python": raw_kafka_python, "confluent": raw_confluent}
        results: dict[str, dict[str, list[float]]] = {c: {"raw": [], "pipeline": []} for c in clients}
        for r in range(args.repeats):
            for client in clients:
                # Alternate the order per round so drift in machine load hits both sides alike.
                order = ("raw", "pipeline") if r % 2 == 0 else ("pipeline", "raw")
                for kind in order:
                    if kind == "raw":
                        rate = raw_fns[client](bootstrap, topic, args.events, args.max_poll_records)
                    else:
                        rate = pipeline(bootstrap, topic, args.events, args.max_poll_records, client, args.model,
                                        args.window)
                    results[client][kind].append(rate)
                    print(f"  round {r + 1}: {client:<12} {kind:<8} {rate:>10,.0f} ev/s", flush=True)
        print()
        print(f"| client       | raw consume ev/s | pipeline ev/s | pipeline / raw | target |")
        print(f"|--------------|-----------------:|--------------:|---------------:|-------:|")
        for client in clients:
            raw = statistics.median(results[client]["raw"])
            pipe = statistics.median(results[client]["pipeline"])
            print(f"| {client:<12} | {raw:>16,.0f} | {pipe:>13,.0f} | {pipe / raw:>14.2f} | >= 0.90 |")
        print(f"(medians of {args.repeats} rounds, {args.events:,} events each)")
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
