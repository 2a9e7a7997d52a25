"""Full retrain pieces and reconciliation without a broker (the real-broker tests are tests/integration/test_retrain_services.py).

The reconciliation tests run a real :class:`~stream.engine.loop.Engine` over the
shipped :class:`~stream.testing.doubles.ListSource` with a file registry; the
"retrain" candidate is a learner trained on the first offsets of each
partition, offered as a :class:`~stream.reconcile.worker.RetrainResult`, and the
catch-up reads the same records from memory instead of Kafka. A job run as
torchrun worker processes is tests/e2e/test_retrain_job.py.
"""

from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest

from learners.neural.learner import TorchLearner
from serving.registry.file_backend import FileRegistry
from serving.registry.versions import Version
from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.errors import ConfigError
from stream.core.poll import PollColumns
from stream.core.records import TopicPartition
from stream.engine.checkpoint import CheckpointStore
from stream.engine.gate import GateConfig, ValidationGate
from stream.engine.loop import Engine, EngineConfig
from stream.engine.oversight import Oversight
from stream.reconcile.job import Launch
from stream.reconcile.reconciler import ReconcileConfig, Reconciler, learned_cutoff
from stream.reconcile.shards import owned, plan_shards
from stream.reconcile.spec import RetrainSpec
from stream.reconcile.worker import RetrainResult, _rows_per_step
from stream.testing.doubles import ListSource, make_records
from stream.window.count import CountWindow

TP = TopicPartition


# ------------------------------------------------------------------ shards
@pytest.mark.parametrize("sizes,n_shards", [((10, 6), 4), ((1000, 999, 1), 8), ((3,), 8), ((0, 7), 3)])
def test_shards_cover_every_offset_once_in_nearly_equal_slices(sizes, n_shards):
    ranges = {TP("t", p): (100 * p, 100 * p + n) for p, n in enumerate(sizes)}
    shards = plan_shards(ranges, n_shards)
    covered = [(p.partition, o) for s in shards for p in s.pieces for o in range(p.lo, p.hi)]
    expected = [(tp, o) for tp, (lo, hi) in sorted(ranges.items()) for o in range(lo, hi)]
    assert covered == expected  # each offset once, in partition then offset order
    assert max(s.offsets for s in shards) - min(s.offsets for s in shards) <= 1
    for world in (1, 2, 3):
        if world <= n_shards:
            mine = [s.index for r in range(world) for s in owned(shards, rank=r, world=world)]
            assert sorted(mine) == list(range(n_shards))


def test_every_step_takes_the_same_global_rows_whatever_the_world():
    sizes = [5, 5, 4, 3]
    rows = _rows_per_step(sizes, per_shard=2)
    assert rows == [8, 7, 2] and sum(rows) == sum(sizes)


def test_spec_round_trips_and_refuses_nonsense():
    spec = RetrainSpec(bootstrap="b", topics=("t",), learner={"model_options": ("hidden=[8]",)}, lr=0.1)
    assert RetrainSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ConfigError, match="at least the number of shards"):
        RetrainSpec(bootstrap="b", topics=("t",), batch_size=4, shards=8)
    with pytest.raises(ConfigError, match="unknown keys"):
        RetrainSpec.from_json(json.dumps({"bootstrap": "b", "topics": ["t"], "epoch": 3}))


def test_several_nodes_need_a_rendezvous_endpoint():
    with pytest.raises(ConfigError, match="--rdzv-endpoint"):
        Launch(nproc=2, nnodes="2")
    args = Launch(nproc=2, nnodes="2", rdzv_endpoint="10.1.2.3:29400", rdzv_id="job7").torchrun_args()
    assert args == [
        "--nnodes",
        "2",
        "--nproc-per-node",
        "2",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        "10.1.2.3:29400",
        "--rdzv-id",
        "job7",
    ]


def test_the_cutoff_is_the_oldest_event_not_learned():
    from stream.core.records import Events

    pending = Events(
        X=np.zeros((2, 1), np.float32),
        y=np.zeros(2, np.int64),
        ts=np.zeros(2, np.int64),
        ids=np.array(["a", "b"]),
        topic=np.array(["t", "t"]),
        partition=np.array([0, 1], np.int32),
        offset=np.array([40, 90]),
    )
    assert learned_cutoff({TP("t", 0): 50, TP("t", 1): 80}, pending) == {TP("t", 0): 40, TP("t", 1): 80}


# ----------------------------------------------------------- reconciliation
N, PARTS, CUT = 6_000, 2, 1_000  # the candidate learned offsets [0, 1000) of both partitions


def _learner(d: int) -> TorchLearner:
    return TorchLearner(n_features=d, device="cpu", lr=0.05)


def _candidate(records, registry, good: bool, tmp_path) -> RetrainResult:
    """A "retrain" of [0, CUT) per partition, published as a candidate (good: trained; bad: inverted labels)."""
    codec = JsonCodec(CodecConfig(n_features=3))
    head = [r for r in records if r.offset < CUT]
    events = codec.decode(PollColumns.from_records(head)).events
    learner = _learner(3)
    for _ in range(30):
        learner.learn_batch(events.X, events.y if good else 1 - events.y)
    version = registry.publish(
        learner.state_dict(),
        Version(
            number=0, schema={"n_features": 3}, offsets={f"test:{p}": (0, CUT - 1) for p in range(PARTS)}
        ),
    )
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps(events.ids.tolist()))
    return RetrainResult(
        version=version.number,
        ranges={f"test:{p}": [0, CUT] for p in range(PARTS)},
        events=len(events),
        undecodable=0,
        metrics={},
        world_size=1,
        backend="none",
        device="cpu",
        seconds={},
        ids_path=str(ids),
    )


def _run(tmp_path, good: bool, tolerance: float):
    records = make_records(N, n_features=3, partitions=PARTS)
    registry = FileRegistry(tmp_path / "reg")
    by_offset = {(r.partition, r.offset): r for r in records}

    def read_spans(spans):  # the catch-up's input, from memory instead of Kafka
        recs = [by_offset[(tp.partition, o)] for tp, (lo, hi) in sorted(spans.items()) for o in range(lo, hi)]
        for i in range(0, len(recs), 250):
            yield PollColumns.from_records(recs[i : i + 250])

    reconciler = Reconciler(
        ReconcileConfig(holdout_events=600, tolerance=tolerance, job_root=str(tmp_path / "jobs")),
        RetrainSpec(bootstrap="unused:9092", topics=("test",), registry=str(tmp_path / "reg")),
        registry,
        read_spans=read_spans,
    )
    reconciler.offer(_candidate(records, registry, good, tmp_path))
    engine = Engine(
        source=ListSource(records, batch_size=350),
        codec=JsonCodec(CodecConfig(n_features=3)),
        window=CountWindow(300),
        learner_builder=_learner,
        store=CheckpointStore(tempfile.mkdtemp()),
        config=EngineConfig(until_idle_seconds=0, ledger=True, checkpoint_every_batches=5),
        oversight=Oversight(
            gate=ValidationGate(
                registry, GateConfig(every_batches=4, every_seconds=None, holdout_min_events=100)
            ),
            reconciler=reconciler,
        ),
    )
    summary = engine.run()
    return engine, registry, reconciler, summary


def test_an_adopted_candidate_has_learned_every_event_exactly_once(tmp_path):
    engine, registry, reconciler, summary = _run(tmp_path, good=True, tolerance=1.0)
    assert reconciler.counts["adopted"] == 1
    (event,) = registry.events(kind="retrain_adopted")
    evidence = event.details
    assert evidence["catchup_events"] > 0 and evidence["holdout_events"] >= 600
    adopted = registry.get(event.version)
    assert adopted.parent == evidence["candidate"] and f"retrain v{adopted.parent} caught up" in adopted.note
    # The ledger describes the model at the end: every id once -- none skipped, none twice across the swap.
    assert summary.events_learned == N
    assert engine.ledger.distinct == N and engine.ledger.duplicated() == {}
    assert engine.ledger.ids() == {f"e{i}" for i in range(N)}
    # The swap happened: the live learner is the candidate's lineage -- its 30 passes over [0, CUT) of
    # each partition, then every later event once (catch-up, head-to-head, after the swap).
    assert engine.learner.n_learned == 30 * PARTS * CUT + (N - PARTS * CUT)


def test_a_worse_candidate_is_rejected_with_its_evidence(tmp_path):
    engine, registry, reconciler, summary = _run(tmp_path, good=False, tolerance=0.0)
    assert reconciler.counts == {"launched": 0, "failed": 0, "adopted": 0, "rejected": 1}
    (event,) = registry.events(kind="retrain_rejected")
    ev = event.details
    assert ev["holdout_accuracy"] < ev["live_holdout_accuracy"] and "worse" in event.reason
    assert registry.get(ev["candidate"]).status == "rejected"
    # The live model was kept: it learned every event itself, once.
    assert engine.ledger.distinct == N and engine.ledger.duplicated() == {}
    assert engine.learner.n_learned == N
