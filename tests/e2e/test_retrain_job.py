"""A retrain job as torchrun worker processes (the in-process pieces are tests/unit/test_retrain.py)."""

from __future__ import annotations

from stream.reconcile.job import Launch, RetrainJob
from stream.reconcile.spec import RetrainSpec


def test_a_failing_job_reports_its_worker_error(tmp_path):
    # 2 processes but 1 shard: each rank refuses before it touches Kafka, torchrun exits non-zero.
    spec = RetrainSpec(bootstrap="127.0.0.1:1", topics=("t",), shards=1, batch_size=1)
    outcome = RetrainJob(spec, tmp_path / "job", Launch(nproc=2)).start().wait(poll_s=0.2)
    assert not outcome.ok and outcome.exit_code not in (0, None)
    assert "raise --shards" in outcome.message and str(tmp_path / "job" / "log.txt") in outcome.message
