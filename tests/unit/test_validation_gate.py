"""The validation gate: candidates are published with evidence, validated only when no worse."""

from __future__ import annotations

import numpy as np
import pytest

from learners.neural.learner import TorchLearner
from serving.registry.file_backend import FileRegistry
from serving.registry.redis_backend import RedisRegistry
from serving.registry.versions import Version
from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.errors import ConfigError
from stream.engine.checkpoint import CheckpointStore
from stream.engine.gate import GateConfig, ValidationGate
from stream.engine.loop import Engine, EngineConfig
from stream.engine.oversight import Oversight
from stream.testing.doubles import ListSource, make_batch, make_records
from stream.window.count import CountWindow

SCHEMA = {"n_features": 4, "task": "classification", "n_classes": 2}


def _learner() -> TorchLearner:
    return TorchLearner(n_features=4, device="cpu", lr=0.1)


def _train(learner, batches: int, *, flip: bool = False, start: int = 0) -> int:
    for i in range(batches):
        b = make_batch(200, n_features=4, start_offset=start + 200 * i, flip_labels=flip)
        learner.learn_batch(b.X, b.y)
    return start + 200 * batches


def _gate(tmp_path, **kw) -> ValidationGate:
    cfg = dict(every_batches=1, every_seconds=None, holdout_min_events=10, tolerance=0.0)
    cfg.update(kw)
    return ValidationGate(FileRegistry(tmp_path / "reg"), GateConfig(**cfg))


def _offer(gate, learner, offset):
    """One learned batch, then a due point with the next batch as holdout."""
    gate.after_learn(make_batch(10, n_features=4, start_offset=offset - 10))
    holdout = make_batch(500, n_features=4, start_offset=offset, seed=1)
    return gate.before_learn(learner, holdout, None, SCHEMA)


def test_first_candidate_is_validated_on_its_own_evidence(tmp_path):
    gate, learner = _gate(tmp_path), _learner()
    end = _train(learner, 5)
    v = _offer(gate, learner, end)
    assert v.status == "validated" and v.parent is None
    assert v.metrics["holdout_accuracy"] > 0.8
    assert gate.registry.current().number == v.number
    assert v.schema == SCHEMA and "TorchLearner" in v.learner


def test_a_worse_candidate_is_rejected_and_the_pointer_stays(tmp_path):
    gate, learner = _gate(tmp_path), _learner()
    end = _train(learner, 5)
    good = _offer(gate, learner, end)
    end = _train(learner, 10, flip=True, start=end)  # poisoned labels
    bad = _offer(gate, learner, end)
    assert bad.status == "rejected" and bad.parent == good.number
    assert bad.metrics["holdout_accuracy"] < bad.metrics["baseline_holdout_accuracy"]
    assert "worse" in bad.note
    assert gate.registry.current().number == good.number
    assert gate.counts == {"published": 2, "validated": 1, "rejected": 1, "failed": 0}


def test_tolerance_admits_a_slightly_worse_candidate(tmp_path):
    gate, learner = _gate(tmp_path, tolerance=1.0), _learner()
    end = _train(learner, 5)
    _offer(gate, learner, end)
    end = _train(learner, 10, flip=True, start=end)
    assert _offer(gate, learner, end).status == "validated"


def test_the_holdout_was_never_learned_and_offsets_accumulate(tmp_path):
    reg = FileRegistry(tmp_path / "reg")
    engine = Engine(
        source=ListSource(make_records(3000, n_features=4, partitions=2), batch_size=250),
        codec=JsonCodec(CodecConfig(n_features=4)),
        window=CountWindow(100),
        learner_builder=lambda d: TorchLearner(n_features=d, device="cpu", lr=0.1),
        store=CheckpointStore(tmp_path / "ckpt"),
        config=EngineConfig(until_idle_seconds=0),
        oversight=Oversight(
            gate=ValidationGate(reg, GateConfig(every_batches=5, every_seconds=None, holdout_min_events=50))
        ),
    )
    engine.run()
    versions = sorted(reg.history(), key=lambda v: v.number)
    assert len(versions) >= 4
    for v in versions:
        for key, (lo, _hi) in v.holdout.items():
            # The holdout lies strictly after everything the version learned.
            assert lo > v.offsets[key][1], (v.number, key)
        assert all(lo == 0 for lo, _ in v.offsets.values())
    ends = [max(hi for _, hi in v.offsets.values()) for v in versions]
    assert ends == sorted(ends) and len(set(ends)) == len(ends)
    assert versions[-1].events_learned > versions[0].events_learned
    validated = [v for v in versions if v.status == "validated"]
    assert reg.current().number == validated[-1].number
    for v in versions[1:]:
        assert v.parent is not None and reg.get(v.parent).status == "validated"


def test_gate_follows_an_external_rollback(tmp_path):
    gate, learner = _gate(tmp_path, tolerance=1.0), _learner()
    end = _train(learner, 3)
    first = _offer(gate, learner, end)
    end = _train(learner, 3, start=end)
    second = _offer(gate, learner, end)
    gate.registry.rollback(to=first.number, reason="operator")
    end = _train(learner, 3, start=end)
    third = _offer(gate, learner, end)
    assert third.parent == first.number != second.number


def test_an_unreachable_registry_never_stops_learning(tmp_path):
    from stream.sources.embedded_broker import free_port

    reg = RedisRegistry(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2, retries=0)
    engine = Engine(
        source=ListSource(make_records(1000, n_features=4)),
        codec=JsonCodec(CodecConfig(n_features=4)),
        window=CountWindow(100),
        learner_builder=lambda d: TorchLearner(n_features=d, device="cpu"),
        store=CheckpointStore(tmp_path / "ckpt"),
        config=EngineConfig(until_idle_seconds=0),
        oversight=Oversight(
            gate=ValidationGate(reg, GateConfig(every_batches=3, every_seconds=None, holdout_min_events=10))
        ),
    )
    assert engine.run().events_learned == 1000
    assert engine.gate.counts["failed"] >= 2 and engine.gate.counts["published"] == 0


def test_gate_state_survives_a_restart(tmp_path):
    reg = FileRegistry(tmp_path / "reg")
    records = make_records(2000, n_features=4)

    def engine(recs, max_events=None):
        return Engine(
            source=ListSource(recs, batch_size=200),
            codec=JsonCodec(CodecConfig(n_features=4)),
            window=CountWindow(100),
            learner_builder=lambda d: TorchLearner(n_features=d, device="cpu"),
            store=CheckpointStore(tmp_path / "ckpt"),
            config=EngineConfig(until_idle_seconds=0, max_events=max_events),
            oversight=Oversight(
                gate=ValidationGate(
                    reg, GateConfig(every_batches=3, every_seconds=None, holdout_min_events=10)
                )
            ),
        )

    engine(records, max_events=1000).run()
    second = engine(records)
    second.run()
    newest = reg.history()[0]
    # Offsets still start at 0 after the restart: the range came back from the checkpoint.
    assert newest.offsets["test:0"][0] == 0 and newest.offsets["test:0"][1] >= 1500
    assert second.gate.counts["published"] == len(reg.history())


def test_gate_config_is_validated():
    with pytest.raises(ConfigError, match="every_batches"):
        GateConfig(every_batches=0)
    with pytest.raises(ConfigError, match="tolerance"):
        GateConfig(tolerance=-1)


def test_regression_uses_rmse_lower_is_better(tmp_path):
    gate = _gate(tmp_path)
    learner = TorchLearner(n_features=4, device="cpu", task="regression")
    batch = make_batch(50, n_features=4)
    y = batch.X.sum(axis=1).astype(np.float32)
    object.__setattr__(batch.events, "y", y)
    learner.learn_batch(batch.X, y)
    gate.after_learn(batch)
    holdout = make_batch(50, n_features=4, start_offset=50)
    object.__setattr__(holdout.events, "y", holdout.X.sum(axis=1).astype(np.float32))
    v = gate.before_learn(learner, holdout, None, {"n_features": 4, "task": "regression"})
    assert "holdout_rmse" in v.metrics and v.status == "validated"


def test_an_incompatible_validated_version_is_not_a_baseline(tmp_path):
    gate = _gate(tmp_path)
    other = TorchLearner(n_features=7, device="cpu")
    v = gate.registry.publish(other.state_dict(), Version(number=0))
    gate.registry.validate(v.number)
    learner = _learner()
    end = _train(learner, 3)
    mine = _offer(gate, learner, end)
    assert mine.status == "validated" and "first version" in mine.note


def test_batches_below_the_holdout_minimum_never_publish_and_the_gate_says_so_once(tmp_path, caplog):
    # A count-or-time window on a slow stream: every batch is smaller than the holdout minimum.
    gate, learner = _gate(tmp_path, holdout_min_events=100), _learner()
    end = _train(learner, 3)
    with caplog.at_level("WARNING", logger="stream.engine.gate"):
        for i in range(45):
            gate.after_learn(make_batch(25, n_features=4, start_offset=end + 25 * i))
            assert gate.before_learn(learner, make_batch(25, n_features=4, seed=i), None, SCHEMA) is None
    warnings = [r.getMessage() for r in caplog.records if "holdout minimum" in r.getMessage()]
    assert len(warnings) == 1 and "smaller --holdout-min-events" in warnings[0]
    assert gate.counts["published"] == 0 and gate.registry.current() is None
    # One batch big enough ends the drought: it is published, and the count starts again.
    assert _offer(gate, learner, end + 25 * 45).status == "validated"
