"""Issue 19's scenario end to end: a 3-class topic read with ``--classes 2`` is a failed run, not a plausible result.

A third of the records ("bad label: 2 is outside [0, 2)") are dead-lettered;
``replay`` writes its report and exits 1 naming the rate, the threshold and the
top reason; ``run --until-idle`` (a bounded job) warns loudly and exits 1 too.
One embedded broker (tansu) for the module, as in test_cli_mistakes.py.
"""

from __future__ import annotations

import json
import random
import uuid

import orjson
import pytest
from cli_processes import cli, embedded_bootstrap

pytestmark = pytest.mark.e2e

N = 1_200
LABEL_2 = "bad label: 2 is outside [0, 2)"


@pytest.fixture(scope="module")
def bootstrap():
    yield from embedded_bootstrap()


@pytest.fixture(scope="module")
def three_classes(bootstrap) -> str:
    """A topic of N records whose labels cycle 0, 1, 2."""
    from kafka import KafkaProducer

    from stream.sources.produce import ensure_topic

    topic = f"three-classes-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic, 1)
    rng = random.Random(0)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(N):
        x = [rng.uniform(-1, 1) for _ in range(3)]
        producer.send(topic, orjson.dumps({"id": f"e{i}", "x": x, "y": i % 3}))
    producer.flush()
    producer.close()
    return topic


def test_replay_with_too_few_classes_writes_the_report_and_fails(bootstrap, three_classes, tmp_path):
    args = ("replay", "--bootstrap", bootstrap, "--topic", three_classes, "--classes", "2", "--quiet")
    ran = cli(*args, "--out", "report", cwd=tmp_path)
    assert ran.returncode == 1, ran.stderr
    assert "Traceback" not in ran.stderr
    last = ran.stderr.strip().splitlines()[-1]
    assert last.startswith("streamlearn: error: 33.3% of the records were dead-lettered (400 of 1,200)"), last
    assert "--max-dead-letter-rate 0.05" in last and f"{LABEL_2!r} x 400" in last, last
    # The report is still there to look at, and says so first.
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["dead_letter_rate"]["exceeded"] and summary["dead_letter_rate"]["rejected"] == 400
    html = (tmp_path / "report" / "report.html").read_text()
    assert 'id="dead-letters"' in html and LABEL_2 in html

    # The threshold is a setting: off from the environment, the same replay passes.
    off = cli(*args, "--out", "report-off", cwd=tmp_path, env={"STREAMLEARN_DEAD_LETTER_MAX_RATE": "1"})
    assert off.returncode == 0, off.stderr
    right = cli(*args[:-3], "--classes", "3", "--quiet", "--out", "report-3", cwd=tmp_path)
    assert right.returncode == 0, right.stderr
    assert (
        json.loads((tmp_path / "report-3" / "summary.json").read_text())["dead_letter_rate"]["rejected"] == 0
    )


def test_a_bounded_run_with_too_few_classes_says_so_loudly_and_exits_1(bootstrap, three_classes, tmp_path):
    ran = cli(
        "run",
        "--bootstrap",
        bootstrap,
        "--topic",
        three_classes,
        "--group",
        f"g-{uuid.uuid4().hex[:6]}",
        "--classes",
        "2",
        "--checkpoint-dir",
        "ck",
        "--registry",
        "none",
        "--dead-letter",
        "none",
        "--until-idle",
        "2",
        cwd=tmp_path,
    )
    assert ran.returncode == 1, ran.stderr
    assert "Traceback" not in ran.stderr
    lines = ran.stderr.splitlines()
    alarms = [line for line in lines if "records are not being learned" in line]
    assert len(alarms) == 1 and "WARNING" in alarms[0] and LABEL_2 in alarms[0], ran.stderr
    assert "check --classes" in alarms[0]
    summary = [line for line in lines if line.startswith("[streamlearn] WARNING dead-letter rate 33.3%")]
    assert summary and "above --max-dead-letter-rate 0.05" in summary[0], ran.stderr
    assert "learned 800 events" in ran.stderr  # it went on learning the rest
    assert lines[-1].startswith("streamlearn: error: 33.3% of the records were not learned"), lines[-1]
