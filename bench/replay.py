"""Backtest speed: ``streamlearn replay`` against the raw client and a river backtest, in one run.

On the embedded broker (or ``--bootstrap``), one topic of synthetic events
(Hyperplane, 10 features, 3 partitions, backdated timestamps) is read by

- **raw**: kafka-python assigned to every partition, polling to the end (the
  ceiling for any Kafka reader on this client);
- **range read**: :class:`~stream.sources.range.KafkaRangeSource` alone -- the
  same client plus the timestamp merge across partitions;
- **replay x1**: ``Backtest`` with one configuration (logistic, count:500,
  ADWIN drift policy, validation gate), i.e. read + decode + window + score +
  learn + report metrics;
- **replay x3 one read** vs **x3 separately**: three configurations fed from
  one read, against three single-configuration replays one after the other;
- **river backtest**: ``river.evaluate.progressive_val_score`` with river's
  LogisticRegression on the same rows, already decoded in memory (no Kafka).

Rates are events per second of wall time; the table gives ratios to the raw
read, which is what the numbers mean on another machine.

    python -m bench.replay                 # 200k events, embedded broker
    python -m bench.replay --events 50000
"""

from __future__ import annotations

import argparse
import tempfile
import time

from stream.sources.produce import SyntheticStream, produce, synthetic_rows

T0 = 1_700_000_000_000


def raw_rate(bootstrap: str, topic: str, n: int) -> float:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_wait_ms=100,
    )
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    started, seen = time.perf_counter(), 0
    while seen < n:
        for recs in consumer.poll(timeout_ms=200, max_records=5000).values():
            seen += len(recs)
    elapsed = time.perf_counter() - started
    consumer.close(autocommit=False)
    return seen / elapsed


def range_rate(bootstrap: str, topic: str) -> float:
    from stream.sources.base import NoPositions
    from stream.sources.bounds import parse_bound
    from stream.sources.kafka import KafkaSourceConfig
    from stream.sources.range import KafkaRangeSource

    src = KafkaRangeSource(
        KafkaSourceConfig(bootstrap=bootstrap, topics=(topic,)),
        parse_bound("earliest"),
        parse_bound("latest"),
    )
    started = time.perf_counter()
    src.open(NoPositions())
    seen = 0
    while not src.exhausted:
        seen += len(src.poll_columns(100, 5000))
    elapsed = time.perf_counter() - started
    src.close()
    return seen / elapsed


def replay_rate(bootstrap: str, topic: str, configs) -> tuple[float, dict]:
    from stream.replay.driver import Backtest
    from stream.sources.bounds import parse_bound
    from stream.sources.kafka import KafkaSourceConfig
    from stream.sources.range import KafkaRangeSource

    src = KafkaRangeSource(
        KafkaSourceConfig(bootstrap=bootstrap, topics=(topic,)),
        parse_bound("earliest"),
        parse_bound("latest"),
    )
    out = tempfile.mkdtemp(prefix="bench-replay-")
    started = time.perf_counter()
    result = Backtest(src, configs, out, progress=False).run()
    elapsed = time.perf_counter() - started
    return result["read"]["records"] / elapsed, result


def river_rate(rows: list[dict]) -> tuple[float, float]:
    from river import evaluate, linear_model, metrics, preprocessing

    stream = [({f"x{i}": v for i, v in enumerate(r["x"])}, r["y"]) for r in rows]
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    started = time.perf_counter()
    metric = evaluate.progressive_val_score(stream, model, metrics.Accuracy())
    return len(stream) / (time.perf_counter() - started), metric.get()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--bootstrap", default=None, help="Use this Kafka instead of the embedded broker.")
    args = parser.parse_args()

    from learners.choice import LearnerChoice
    from stream.replay.config import ReplayConfig
    from stream.sources.embedded_broker import EmbeddedBroker

    n = args.events
    broker = None if args.bootstrap else EmbeddedBroker().__enter__()
    bootstrap = args.bootstrap or broker.bootstrap
    try:
        topic = f"bench-replay-{int(time.time())}"
        produce(
            bootstrap,
            topic,
            SyntheticStream(
                n=n, generator="hyperplane", seed=7, drift_at=n // 2, start_ts_ms=T0, interval_ms=10
            ),
            partitions=3,
        )
        rows = list(synthetic_rows("hyperplane", n, seed=7, drift_at=n // 2, start_ts_ms=T0, interval_ms=10))
        base = ReplayConfig.base(window="count:500")
        three = [
            ReplayConfig.base(name=name, window="count:500", learner=LearnerChoice(**kw))
            for name, kw in (
                ("logistic", {}),
                ("mlp", {"model": "mlp", "lr": 0.01}),
                ("mlp-ewc-replay", {"model": "mlp", "lr": 0.01, "ewc_strength": 10.0, "replay": "reservoir"}),
            )
        ]
        raw = raw_rate(bootstrap, topic, n)
        merged = range_rate(bootstrap, topic)
        one, one_result = replay_rate(bootstrap, topic, [base])
        together, _ = replay_rate(bootstrap, topic, three)
        separate_seconds = sum(n / replay_rate(bootstrap, topic, [cfg])[0] for cfg in three)
        river, river_acc = river_rate(rows)
    finally:
        if broker is not None:
            broker.__exit__(None, None, None)

    acc = one_result["configs"][0]["summary"]["accuracy"]
    table = [
        ("raw kafka-python read", raw, "-"),
        ("range read (timestamp merge)", merged, "-"),
        ("replay x1 (logistic)", one, f"{acc:.4f}"),
        ("replay x3, one read (per config-event)", together * 3, "-"),
        ("replay x3, three reads (per config-event)", 3 * n / separate_seconds, "-"),
        ("river progressive_val_score, in memory", river, f"{river_acc:.4f}"),
    ]
    print(f"\nbench.replay: {n:,} Hyperplane events, 3 partitions, concept change at {n // 2:,}\n")
    print(f"{'reader':<44} {'events/s':>12} {'x raw':>7} {'accuracy':>9}")
    for name, rate, accuracy in table:
        print(f"{name:<44} {rate:>12,.0f} {rate / raw:>7.2f} {accuracy:>9}")
    print(
        f"\none read for three configurations: {separate_seconds / (n / together):.2f}x faster than three replays"
    )


if __name__ == "__main__":
    main()
