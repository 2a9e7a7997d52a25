"""A bad record never stops learning, on the real broker, with the default ``<topic>.dlq`` destination.

One poison stream (``stream.testing.poison``: every bad-record kind in one
table, good records with unique ids, records repeating a good id) goes
through ``streamlearn run`` with Kafka dead letters, through ``streamlearn
replay``, and through ``run --file``. Each time: the process exits 0 on its
own, every good record is learned exactly once (the ledger), and every bad
record is dead-lettered at least once (at-least-once) with its reason.
"""

from __future__ import annotations

import json

from poison_helpers import (
    check_learned_once,
    check_letter,
    cli,
    produce,
    read_dead_letters,
)

from stream.testing.poison import poison_stream

LANES = 3


def test_run_with_the_kafka_dead_letter_topic_learns_every_good_record_once_and_letters_every_bad_one(
    kafka_bootstrap, make_topic, unique_name, tmp_path, kafka_consumer_settings
):
    topic = make_topic(partitions=LANES)
    stream = poison_stream(n_good=6_000, lanes=LANES, seed=11)
    produced = produce(kafka_bootstrap, topic, stream)
    bad = {pos: r for pos, r in produced.items() if r.expected is not None}

    ckpt = tmp_path / "ckpt"
    ran = cli(
        "run",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        topic,
        "--group",
        unique_name,
        "--window",
        "count:500",
        "--checkpoint-dir",
        str(ckpt),
        "--until-idle",
        "4",
        "--ledger",
        "--classes",  # binary, declared: a label 2 is poison, not a new class
        "2",
        "--registry",
        "none",
        "--quiet",
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "Traceback" not in ran.stderr
    assert f"learned {len(stream.good_ids):,} events" in ran.stderr
    assert f"duplicate ids {sum(r.kind == 'repeated id' for r in stream.records)}" in ran.stderr
    check_learned_once(ckpt, stream.good_ids)
    info = json.loads(cli("inspect", str(ckpt), "--json").stdout)
    assert info["duplicate_ids"] == sum(r.kind == "repeated id" for r in stream.records)
    assert sum(info["dead_letters"].values()) == len(bad)

    letters = read_dead_letters(f"{topic}.dlq", set(bad), kafka_consumer_settings, f"{unique_name}-dlq")
    seen = {}
    for rec in letters:
        doc = json.loads(rec.value)
        seen.setdefault((doc["partition"], doc["offset"]), (doc, rec))
    assert set(seen) == set(bad), f"missing letters: {sorted(set(bad) - set(seen))[:10]}"
    for pos, (doc, rec) in seen.items():
        check_letter(doc, bad[pos])
        assert rec.key == bad[pos].key  # keyed by the source key when there is one
        assert dict(rec.headers)["dlq.offset"] == str(pos[1]).encode()

    # A restart on the same checkpoint learns nothing again and sends nothing again.
    again = cli(
        "run",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        topic,
        "--group",
        unique_name,
        "--checkpoint-dir",
        str(ckpt),
        "--until-idle",
        "3",
        "--ledger",
        "--classes",  # binary, declared: a label 2 is poison, not a new class
        "2",
        "--registry",
        "none",
        "--quiet",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    check_learned_once(ckpt, stream.good_ids)


def test_replay_over_the_same_stream_learns_the_good_records_and_letters_the_bad(
    kafka_bootstrap, make_topic, tmp_path
):
    topic = make_topic(partitions=LANES)
    stream = poison_stream(n_good=3_000, lanes=LANES, seed=12)
    produced = produce(kafka_bootstrap, topic, stream)
    bad = {pos: r for pos, r in produced.items() if r.expected is not None}
    out = tmp_path / "replay"
    ran = cli(
        "replay",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        topic,
        "--out",
        str(out),
        "--quiet",
        "--window",
        "count:500",
        "--classes",  # binary, declared: a label 2 is poison, not a new class
        "2",
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_bytes())
    (config,) = summary["configs"]
    assert config["summary"]["events"] == len(stream.good_ids)
    assert config["summary"]["duplicates"] == sum(r.kind == "repeated id" for r in stream.records)
    letters = [json.loads(line) for line in (out / "dead-letters.jsonl").read_bytes().splitlines()]
    got = {(d["partition"], d["offset"]): d for d in letters}
    assert set(got) == set(bad)
    for pos, doc in got.items():
        check_letter(doc, bad[pos])


def test_run_over_a_file_of_the_same_kinds_learns_every_good_line_once(tmp_path):
    stream = poison_stream(n_good=3_000, lanes=1, seed=13, files=True)
    path = tmp_path / "poison.jsonl"
    path.write_bytes(b"\n".join(r.value for r in stream.records) + b"\n")
    ckpt = tmp_path / "ckpt"
    ran = cli(
        "run",
        "--file",
        str(path),
        "--checkpoint-dir",
        str(ckpt),
        "--ledger",
        "--classes",  # binary, declared: a label 2 is poison, not a new class
        "2",
        "--registry",
        "none",
        "--quiet",
        "--window",
        "count:500",
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    check_learned_once(ckpt, stream.good_ids)
    letters = [json.loads(line) for line in (ckpt / "dead-letters.jsonl").read_bytes().splitlines()]
    got = {d["offset"]: d for d in letters}
    expected = {i: r for i, r in enumerate(stream.records) if r.expected is not None}
    assert set(got) == set(expected)
    for offset, doc in got.items():
        check_letter(doc, expected[offset])
