"""Publishing in the background: the learner never waits for the registry, the newest model wins,
nothing queues, errors are reported, and the registry ends as an inline gate leaves it."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from learners.neural.learner import TorchLearner
from serving.registry.file_backend import FileRegistry
from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.errors import RegistryUnavailableError
from stream.engine.checkpoint import CheckpointStore
from stream.engine.gate import GateConfig, ValidationGate
from stream.engine.loop import Engine, EngineConfig
from stream.engine.oversight import Oversight
from stream.engine.publisher import STALE, BackgroundPublisher, InlinePublisher, Publication
from stream.testing.doubles import ListSource, make_batch, make_records
from stream.window.count import CountWindow

SCHEMA = {"n_features": 4, "task": "classification", "n_classes": 2}
WAIT_S = 30  # a bound for the test not to hang, never a timing assertion


class BlockingRegistry(FileRegistry):
    """A file registry whose ``publish`` waits for ``release`` (or fails with ``fail``)."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.release = threading.Event()
        self.entered = threading.Event()
        self.fail: Exception | None = None
        self.publishing = 0
        self.most_at_once = 0
        self.timed_out = False

    def publish(self, state, draft):
        self.publishing += 1
        self.most_at_once = max(self.most_at_once, self.publishing)
        self.entered.set()
        try:
            if not self.release.wait(WAIT_S):
                self.timed_out = True
            if self.fail is not None:
                raise self.fail
            return super().publish(state, draft)
        finally:
            self.publishing -= 1


def _gate(registry, background: bool = True) -> ValidationGate:
    cfg = GateConfig(every_batches=1, every_seconds=None, holdout_min_events=10, tolerance=1.0)
    return ValidationGate(
        registry, cfg, publisher=(BackgroundPublisher if background else InlinePublisher)(registry)
    )


def _step(gate, learner, i):
    """One batch as the engine takes it: the gate judges the model before it, then it is learned."""
    batch = make_batch(200, n_features=4, start_offset=200 * i, seed=i)
    version = gate.before_learn(learner, batch, None, SCHEMA)
    learner.learn_batch(batch.X, batch.y)
    gate.after_learn(batch)
    return version


def test_the_learner_goes_on_while_a_write_blocks_and_the_newest_model_is_published_next(tmp_path):
    registry = BlockingRegistry(tmp_path / "reg")
    gate, learner = _gate(registry), TorchLearner(n_features=4, device="cpu")
    _step(gate, learner, 0)
    judged = _step(gate, learner, 1)  # due: judged here, written in the background
    assert judged.status == "validated" and judged.number == 0  # the judged draft; the registry numbers it
    assert registry.entered.wait(WAIT_S)
    for i in range(2, 12):  # due every batch, but a write is in flight: skipped, nothing queued
        assert gate.due() is False
        assert _step(gate, learner, i) is None
    assert learner.n_learned == 12 * 200 and gate.counts["published"] == 0
    registry.release.set()
    gate.drain(WAIT_S)
    assert gate.counts == {"published": 1, "validated": 1, "rejected": 0, "failed": 0}
    assert gate.last_version.events_learned == 200
    # The next due point publishes the newest model (latest wins), against the one just written.
    _step(gate, learner, 12)
    gate.drain(WAIT_S)
    newest = gate.last_version
    assert newest.events_learned == 12 * 200 and newest.parent == judged_number(registry, 200)
    assert newest.offsets["test:0"][1] == 12 * 200 - 1
    assert registry.most_at_once == 1 and not registry.timed_out
    gate.close()


def judged_number(registry, events_learned: int) -> int:
    return next(v.number for v in registry.history() if v.events_learned == events_learned)


class _ReleaseWhenLearned:
    """An observer that releases the registry once the engine has learned ``batches`` batches."""

    def __init__(self, registry: BlockingRegistry, batches: int) -> None:
        self.registry, self.batches, self.seen, self.learned_while_blocked = registry, batches, 0, 0

    def before_learn(self, batch, pred, learner) -> None:
        pass

    def after_learn(self, batch, outcome) -> None:
        self.seen += 1
        self.judged = getattr(self, "judged", False) or outcome.version is not None
        if self.judged and not self.registry.release.is_set():
            self.learned_while_blocked += 1
        if self.seen == self.batches:
            self.registry.release.set()


def test_an_engine_learns_every_batch_while_the_registry_write_blocks(tmp_path):
    registry = BlockingRegistry(tmp_path / "reg")
    observer = _ReleaseWhenLearned(registry, batches=20)
    engine = Engine(
        source=ListSource(make_records(2000, n_features=4), batch_size=100),
        codec=JsonCodec(CodecConfig(n_features=4)),
        window=CountWindow(100),
        learner_builder=lambda d: TorchLearner(n_features=d, device="cpu"),
        store=CheckpointStore(tmp_path / "ckpt"),
        config=EngineConfig(until_idle_seconds=0),
        oversight=Oversight(
            gate=ValidationGate(
                registry,
                GateConfig(every_batches=2, every_seconds=None, holdout_min_events=10, background=True),
            ),
            observer=observer,
        ),
    )
    summary = engine.run()
    assert summary.events_learned == 2000 and not registry.timed_out
    # The first write blocked until the last batch was learned: learning never waited for it.
    assert observer.learned_while_blocked >= 17
    assert engine.gate.counts["published"] == len(registry.history()) >= 1
    assert registry.most_at_once == 1


def test_a_failed_background_write_is_reported_and_the_baseline_restored(tmp_path, caplog):
    registry = BlockingRegistry(tmp_path / "reg")
    registry.release.set()
    gate, learner = _gate(registry), TorchLearner(n_features=4, device="cpu")
    _step(gate, learner, 0)
    _step(gate, learner, 1)
    gate.drain(WAIT_S)
    first = gate.last_version
    registry.fail = RegistryUnavailableError("redis went away")
    _step(gate, learner, 2)
    with caplog.at_level(logging.WARNING, logger="stream.engine.gate"):
        gate.drain(WAIT_S)
    assert gate.counts["failed"] == 1 and "redis went away" in caplog.text
    registry.fail = None
    _step(gate, learner, 3)
    gate.drain(WAIT_S)
    # Judged against the version in the registry, not the one whose write failed.
    assert gate.last_version.parent == first.number and gate.counts["published"] == 2
    gate.close()


def test_an_unexpected_error_in_the_background_is_raised_on_the_learning_thread(tmp_path):
    registry = BlockingRegistry(tmp_path / "reg")
    registry.release.set()
    registry.fail = TypeError("a bug in a registry backend")
    gate, learner = _gate(registry), TorchLearner(n_features=4, device="cpu")
    _step(gate, learner, 0)
    _step(gate, learner, 1)
    with pytest.raises(TypeError, match="a bug"):
        gate.drain(WAIT_S)
    gate.close()


def test_a_pointer_moved_while_judging_is_not_overridden(tmp_path):
    registry = BlockingRegistry(tmp_path / "reg")
    registry.release.set()
    gate, learner = _gate(registry), TorchLearner(n_features=4, device="cpu")
    for i in range(4):
        _step(gate, learner, i)
        gate.drain(WAIT_S)
    operator_choice = registry.history()[-1].number  # the oldest
    registry.release.clear()
    _step(gate, learner, 4)  # judged validated against the newest, then blocked
    assert registry.entered.wait(WAIT_S)
    FileRegistry(tmp_path / "reg").rollback(to=operator_choice, reason="operator")
    registry.release.set()
    gate.drain(WAIT_S)
    assert gate.last_version.status == "rejected" and STALE in gate.last_version.note
    assert registry.current().number == operator_choice
    _step(gate, learner, 5)
    gate.drain(WAIT_S)
    assert gate.last_version.parent == operator_choice  # the next one is judged against the operator's
    gate.close()


def _history(registry):
    keep = ("number", "parent", "status", "offsets", "holdout", "metrics", "events_learned")
    return [{k: getattr(v, k) for k in keep} for v in registry.history()]


def test_background_writes_leave_the_registry_as_inline_writes_do(tmp_path):
    histories = []
    for background in (False, True):
        registry = FileRegistry(tmp_path / f"reg-{background}")
        gate = ValidationGate(
            registry,
            GateConfig(every_batches=2, every_seconds=None, holdout_min_events=10, tolerance=0.0),
            publisher=(BackgroundPublisher if background else InlinePublisher)(registry),
        )
        learner = TorchLearner(n_features=4, device="cpu", lr=0.1, seed=3)
        for i in range(12):
            _step(gate, learner, i)
            gate.drain(WAIT_S)  # each write done before the next batch: the order inline has
        gate.close()
        histories.append(_history(registry))
    assert histories[0] == histories[1] and len(histories[0]) >= 5
    assert {v["status"] for v in histories[0]} >= {"validated"}


def test_a_publication_snapshot_does_not_follow_further_learning(tmp_path):
    registry = BlockingRegistry(tmp_path / "reg")
    gate, learner = _gate(registry), TorchLearner(n_features=4, device="cpu")
    _step(gate, learner, 0)
    judged = {k: v.clone() for k, v in learner.state_dict()["model"].items()}
    _step(gate, learner, 1)  # judges the model as it is now, then learns on
    assert registry.entered.wait(WAIT_S)
    for i in range(2, 6):
        _step(gate, learner, i)
    registry.release.set()
    gate.drain(WAIT_S)
    written = registry.load_state(gate.last_version.number)["model"]
    changed = [k for k in judged if not np.allclose(written[k].numpy(), judged[k].numpy())]
    assert gate.last_version.events_learned == 200 and changed == []
    gate.close()


def test_submit_while_busy_is_refused(tmp_path):
    registry = BlockingRegistry(tmp_path / "reg")
    publisher = BackgroundPublisher(registry)
    from serving.registry.versions import Version

    publisher.submit(Publication({}, Version(number=0), validate=False, reason="r"))
    assert publisher.busy
    with pytest.raises(RuntimeError, match="busy"):
        publisher.submit(Publication({}, Version(number=0), validate=False, reason="r"))
    registry.release.set()
    assert publisher.wait(WAIT_S) and not publisher.busy
    publisher.close()
