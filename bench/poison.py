"""Robustness figures: a poison stream through ``streamlearn run`` with the default ``<topic>.dlq`` destination.

Not a speed benchmark: it prints, per bad-record kind, how many records were
produced and how many reached the dead-letter topic with the right reason,
and for the good records how many were learned once, lost or learned twice
(from the checkpoint's ledger). Everything runs against the embedded broker
(or ``--bootstrap``), through the CLI, as an operator would.

    python -m bench.poison                       # 50,000 good, 30 copies of each bad kind, 31 repeated ids
    python -m bench.poison --good 10000 --copies 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter

from kafka import KafkaConsumer

from stream.engine.checkpoint import CheckpointStore
from stream.engine.ledger import LearnLedger
from stream.sources.embedded_broker import EmbeddedBroker
from stream.testing.poison import POISON_KINDS, poison_stream

LANES = 3


def produce(bootstrap: str, topic: str, stream) -> dict[tuple[int, int], object]:
    """Each record to partition ``lane`` with confluent-kafka (it sends key-less tombstones); {(p, offset): record}."""
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "message.max.bytes": 16 * 2**20}
    )
    placed: dict[tuple[int, int], object] = {}
    for r in stream.records:
        producer.produce(
            topic,
            value=r.value,
            key=r.key,
            partition=r.lane,
            on_delivery=lambda err, msg, r=r: (
                err is None and placed.__setitem__((msg.partition(), msg.offset()), r)
            ),
        )
        producer.poll(0)
    producer.flush(120)
    return placed


def read_letters(bootstrap: str, topic: str, quiet_s: float = 10.0) -> list[dict]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=int(quiet_s * 1000),
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    try:
        return [json.loads(rec.value) for rec in consumer]
    finally:
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=None, help="Kafka to use (default: an embedded tansu broker)")
    parser.add_argument("--good", type=int, default=50_000)
    parser.add_argument("--copies", type=int, default=30, help="records of each bad kind")
    parser.add_argument("--repeats", type=int, default=31, help="records that reuse a good record's id")
    args = parser.parse_args(argv)

    broker = None if args.bootstrap else EmbeddedBroker().start()
    bootstrap = args.bootstrap or broker.bootstrap
    try:
        from kafka.admin import KafkaAdminClient, NewTopic

        topic = f"poison-{uuid.uuid4().hex[:8]}"
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(topic, LANES, 1)])
        admin.close()
        stream = poison_stream(n_good=args.good, copies=args.copies, repeats=args.repeats, lanes=LANES)
        placed = produce(bootstrap, topic, stream)
        work = tempfile.mkdtemp(prefix="bench-poison-")
        started = time.perf_counter()
        env = {
            **os.environ,
            "STREAMLEARN_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "STREAMLEARN_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        }
        ran = subprocess.run(
            [
                sys.executable,
                "-m",
                "stream.cli",
                "run",
                "--bootstrap",
                bootstrap,
                "--topic",
                topic,
                "--group",
                topic,
                "--checkpoint-dir",
                os.path.join(work, "ckpt"),
                "--until-idle",
                "5",
                # The stream is binary: declared, so a label 2 is out of range (poison) rather than
                # a new class (without --classes the classes are inferred and grown).
                "--classes",
                "2",
                "--ledger",
                "--registry",
                "none",
                "--quiet",
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        seconds = time.perf_counter() - started
        letters = read_letters(bootstrap, f"{topic}.dlq")
    finally:
        if broker is not None:
            broker.stop()

    ledger = LearnLedger.from_snapshot(CheckpointStore(os.path.join(work, "ckpt")).latest().ledger)
    good = set(stream.good_ids)
    learned_once = sum(1 for i in good if ledger.count(i) == 1)
    stopped = [line for line in ran.stderr.splitlines() if "stopped (" in line or "error:" in line]
    print(f"run: exit {ran.returncode} in {seconds:.1f}s; {stopped[-1] if stopped else ran.stderr[-500:]}")
    print(
        f"\ngood records: {len(good):,} produced | learned once {learned_once:,} | lost "
        f"{sum(1 for i in good if ledger.count(i) == 0):,} | learned twice or more "
        f"{len(ledger.duplicated()):,} | unexpected ids learned {len(ledger.ids() - good):,}"
    )

    bad = {pos: r for pos, r in placed.items() if r.expected is not None}
    seen: dict[tuple[int, int], list[str]] = {}
    for doc in letters:
        seen.setdefault((doc["partition"], doc["offset"]), []).append(doc["reason_kind"])
    rows = Counter()
    for pos, r in bad.items():
        rows[(r.kind, r.expected, "produced")] += 1
        kinds = seen.get(pos, [])
        rows[(r.kind, r.expected, "lettered")] += bool(kinds)
        rows[(r.kind, r.expected, "right reason")] += bool(kinds) and all(k == r.expected for k in kinds)
        rows[(r.kind, r.expected, "copies")] += len(kinds)
    names = [k.name for k in POISON_KINDS] + ["repeated id"]
    expected = {k.name: k.expected for k in POISON_KINDS} | {"repeated id": "duplicate id"}
    print(
        "\n| bad kind | expected reason | produced | dead-lettered | right reason | letters (>= 1 each) | verdict |"
    )
    print("|---|---|--:|--:|--:|--:|---|")
    total_in = total_out = 0
    for name in names:
        key = (name, expected[name])
        produced = rows[(*key, "produced")]
        if not produced:
            continue
        out, right, copies = rows[(*key, "lettered")], rows[(*key, "right reason")], rows[(*key, "copies")]
        total_in += produced
        total_out += out
        verdict = "ok" if out == produced == right else "FAIL"
        print(f"| {name} | {expected[name]} | {produced} | {out} | {right} | {copies} | {verdict} |")
    print(
        f"\nbad records: {total_in:,} in, {total_out:,} dead-lettered, {len(letters):,} letters on {topic}.dlq"
    )
    ok = (
        ran.returncode == 0
        and learned_once == len(good)
        and not ledger.duplicated()
        and total_in == total_out
    )
    print(
        f"verdict: {'PASS' if ok else 'FAIL'} (daemon exit 0, every good record learned once, every bad one lettered)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
