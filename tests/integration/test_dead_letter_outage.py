"""A dead-letter destination that fails never stops learning and never loses a letter silently.

The destination is pointed at a port where nothing listens
(``STREAMLEARN_DEAD_LETTER_BOOTSTRAP``), while the source is the real broker:
the daemon keeps learning, spools the letters on disk, says so, and the next
run with a working destination sends them. With a tiny spool limit the
daemon stops with one line instead -- before the checkpoint that would cover
the unsent letters -- and a restart loses nothing.
"""

from __future__ import annotations

import json

from poison_helpers import check_learned_once, cli, produce, read_dead_letters

from stream.sources.deadletter_spool import DeadLetterSpool
from stream.sources.embedded_broker import free_port
from stream.testing.poison import poison_stream

LANES = 3


def _run(bootstrap, topic, group, ckpt, **env):
    return cli(
        "run",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--group",
        group,
        "--window",
        "count:500",
        "--checkpoint-dir",
        str(ckpt),
        "--until-idle",
        "3",
        "--ledger",
        "--classes",  # binary, declared: a label 2 is poison, not a new class
        "2",
        "--registry",
        "none",
        env=env,
    )


def _letters_by_position(topic, positions, settings, group):
    docs = [json.loads(r.value) for r in read_dead_letters(topic, positions, settings, group)]
    return {(d["partition"], d["offset"]): d["reason_kind"] for d in docs}


def _poisoned_topic(bootstrap, make_topic, seed):
    """A fresh topic holding a poison stream; the stream and {(partition, offset): expected reason} of its bad records."""
    topic = make_topic(partitions=LANES)
    stream = poison_stream(n_good=2_000, lanes=LANES, seed=seed)
    bad = {pos: r.expected for pos, r in produce(bootstrap, topic, stream).items() if r.expected}
    return topic, stream, bad


def _nowhere() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


def test_a_down_destination_spools_letters_and_the_next_run_sends_them(
    kafka_bootstrap, make_topic, unique_name, tmp_path, kafka_consumer_settings
):
    topic, stream, bad = _poisoned_topic(kafka_bootstrap, make_topic, seed=21)
    ckpt = tmp_path / "ckpt"

    down = _run(kafka_bootstrap, topic, unique_name, ckpt, STREAMLEARN_DEAD_LETTER_BOOTSTRAP=_nowhere())
    assert down.returncode == 0, down.stderr[-3000:]
    assert "Traceback" not in down.stderr
    summary = [
        line for line in down.stderr.splitlines() if line.startswith("[streamlearn] WARNING dead-letter")
    ]
    assert summary and f"{len(bad)} letters spooled on disk" in summary[-1]  # the exit summary says so
    check_learned_once(ckpt, stream.good_ids)
    assert len(DeadLetterSpool(ckpt / "dead-letters.spool.jsonl")) == len(bad)

    up = _run(kafka_bootstrap, topic, unique_name, ckpt)
    assert up.returncode == 0, up.stderr[-3000:]
    assert len(DeadLetterSpool(ckpt / "dead-letters.spool.jsonl")) == 0
    assert (
        _letters_by_position(f"{topic}.dlq", set(bad), kafka_consumer_settings, f"{unique_name}-dlq") == bad
    )
    check_learned_once(ckpt, stream.good_ids)


def test_a_full_spool_is_one_line_and_exit_2_and_a_restart_loses_nothing(
    kafka_bootstrap, make_topic, unique_name, tmp_path, kafka_consumer_settings
):
    topic, stream, bad = _poisoned_topic(kafka_bootstrap, make_topic, seed=22)
    ckpt = tmp_path / "ckpt"

    full = _run(
        kafka_bootstrap,
        topic,
        unique_name,
        ckpt,
        STREAMLEARN_DEAD_LETTER_BOOTSTRAP=_nowhere(),
        STREAMLEARN_DEAD_LETTER_SPOOL_MB="0.02",
    )
    assert full.returncode == 2, full.stderr[-3000:]
    assert "Traceback" not in full.stderr
    error_lines = [line for line in full.stderr.splitlines() if line.startswith("streamlearn: ")]
    assert len(error_lines) == 1 and "passed its limit" in error_lines[0], full.stderr[-2000:]

    up = _run(kafka_bootstrap, topic, unique_name, ckpt)
    assert up.returncode == 0, up.stderr[-3000:]
    check_learned_once(ckpt, stream.good_ids)
    got = _letters_by_position(f"{topic}.dlq", set(bad), kafka_consumer_settings, f"{unique_name}-dlq")
    assert got == bad
