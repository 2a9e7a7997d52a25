"""EWC and rehearsal: they keep an earlier task that plain SGD forgets, and their buffers behave."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learners.neural.ewc import EWC
from learners.neural.learner import TorchLearner
from learners.neural.rehearsal import ClassBalancedReplay, ReservoirReplay
from stream.core.errors import ConfigError
from stream.engine.oversight import Oversight


def task(rng, n: int, which: int):
    """Domain-incremental pair: task 0 labels by x0, task 1 by x1; x3 says which domain."""
    X = rng.normal(size=(n, 4)).astype(np.float32)
    X[:, 3] = 1.0 if which == 0 else -1.0
    y = (X[:, 0] > 0) if which == 0 else (X[:, 1] > 0)
    return X, y.astype(np.int64)


def accuracy_on_first_task_after_second(plugins, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    learner = TorchLearner(
        "mlp", n_features=4, device="cpu", lr=0.01, seed=seed, plugins=plugins, model_kwargs={"hidden": (32,)}
    )
    for _ in range(60):
        learner.learn_batch(*task(rng, 64, 0))
    learner.consolidate()
    for _ in range(60):
        learner.learn_batch(*task(rng, 64, 1))
    XA, yA = task(np.random.default_rng(99), 2000, 0)
    XB, yB = task(np.random.default_rng(98), 2000, 1)
    return float((learner.predict_batch(XA) == yA).mean()), float((learner.predict_batch(XB) == yB).mean())


@pytest.mark.parametrize("seed", [0, 1])
def test_ewc_and_replay_forget_far_less_than_plain_sgd(seed):
    naive_a, naive_b = accuracy_on_first_task_after_second([], seed)
    ewc_a, ewc_b = accuracy_on_first_task_after_second([EWC(strength=1000, consolidate_every=None)], seed)
    replay_a, replay_b = accuracy_on_first_task_after_second(
        [ReservoirReplay(1000, mix=1.0, seed=seed)], seed
    )
    assert naive_a < 0.75 and naive_b > 0.95  # plain SGD learned B and forgot A
    assert ewc_a > naive_a + 0.1 and ewc_b > 0.85
    assert replay_a > naive_a + 0.2 and replay_b > 0.95


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_with_distance():
    ewc = EWC(strength=10.0, consolidate_every=1)
    learner = TorchLearner(n_features=4, device="cpu", plugins=[ewc])
    X, y = task(np.random.default_rng(0), 64, 0)
    learner.learn_batch(X, y)
    assert ewc.consolidations == 1
    assert float(ewc.penalty(learner.module).detach()) == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        for p in learner.module.parameters():
            p.add_(0.5)
    moved = ewc.penalty(learner.module)
    assert isinstance(moved, torch.Tensor) and moved.dim() == 0 and float(moved.detach()) > 0
    ewc.relax(0.5)
    assert float(ewc.penalty(learner.module).detach()) == pytest.approx(float(moved.detach()) / 2, rel=1e-5)
    ewc.reset()
    assert ewc.penalty(learner.module) is None


def test_ewc_fisher_is_the_mean_squared_per_sample_gradient():
    from learners.neural.ewc import _empirical_fisher

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    X, y = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    fisher = _empirical_fisher(model, X, y)
    expected = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    for i in range(5):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(X[i : i + 1]), y[i : i + 1]).backward()
        for k, p in model.named_parameters():
            expected[k] += p.grad.pow(2) / 5
    for k in expected:
        assert torch.allclose(fisher[k], expected[k], atol=1e-6), k


def test_reservoir_is_uniform_over_the_stream():
    replay = ReservoirReplay(capacity=500, seed=3)
    X = torch.arange(20_000, dtype=torch.float32).reshape(-1, 1)
    y = torch.zeros(20_000, dtype=torch.long)
    for i in range(0, 20_000, 250):
        replay.after_update(None, X[i : i + 250], y[i : i + 250])
    kept = replay._X[:500, 0]
    assert replay.size == 500 and replay.seen == 20_000
    # Uniform over 0..19999: mean ~10000 (sd of the mean ~260), both halves represented.
    assert 9_000 < float(kept.mean()) < 11_000
    assert 150 < int((kept < 10_000).sum()) < 350
    assert len(torch.unique(kept)) == 500


def test_class_balanced_replay_keeps_rare_classes():
    replay = ClassBalancedReplay(3, capacity=30, mix=1.0, seed=0)
    learner = TorchLearner(n_features=2, n_classes=3, device="cpu", plugins=[replay])
    rng = np.random.default_rng(0)
    for _ in range(20):
        learner.learn_batch(
            rng.normal(size=(50, 2)).astype(np.float32), rng.choice(3, size=50, p=[0.9, 0.08, 0.02])
        )
    assert torch.bincount(replay._y[:30], minlength=3).tolist() == [10, 10, 10]
    sampled = torch.bincount(replay._y[replay._sample(3000)], minlength=3)
    assert int(sampled.min()) > 850  # each class ~1000: rehearsed as often as the common one
    assert replay.class_counts().sum().item() == 1000


def test_replay_mixes_the_batch_without_touching_the_input():
    replay = ReservoirReplay(capacity=10, mix=0.5, seed=0)
    X, y = torch.ones(8, 2), torch.zeros(8, dtype=torch.long)
    assert replay.before_update(X, y)[0] is X  # nothing to replay yet
    replay.after_update(None, X, y)
    X2, y2 = replay.before_update(X * 2, y)
    assert X2.shape == (12, 2) and torch.equal(X2[8:], torch.ones(4, 2))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: EWC(strength=-1), "strength"),
        (lambda: EWC(decay=1.0), "decay"),
        (lambda: ReservoirReplay(capacity=0), "capacity"),
        (lambda: ReservoirReplay(mix=-0.5), "mix"),
        (lambda: ClassBalancedReplay(1), "n_classes"),
        (lambda: ClassBalancedReplay(5, capacity=3), "capacity"),
    ],
)
def test_bad_parameters_are_config_errors(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_class_balanced_replay_refuses_regression():
    learner = TorchLearner(n_features=2, task="regression", device="cpu", plugins=[ClassBalancedReplay(2)])
    with pytest.raises(ConfigError, match="ReservoirReplay"):
        learner.learn_batch(np.zeros((4, 2), np.float32), np.zeros(4, np.float32))


def test_validated_versions_consolidate_ewc_in_the_engine(tmp_path):
    from serving.registry.file_backend import FileRegistry
    from stream.codec.json_codec import CodecConfig, JsonCodec
    from stream.engine.checkpoint import CheckpointStore
    from stream.engine.gate import GateConfig, ValidationGate
    from stream.engine.loop import Engine, EngineConfig
    from stream.testing.doubles import ListSource, make_records
    from stream.window.count import CountWindow

    plugins: list[EWC] = []

    def build(d):
        ewc = EWC(consolidate_every=None)
        plugins.append(ewc)
        return TorchLearner(n_features=d, device="cpu", plugins=[ewc])

    engine = Engine(
        source=ListSource(make_records(2000, n_features=4)),
        codec=JsonCodec(CodecConfig(n_features=4)),
        window=CountWindow(100),
        learner_builder=build,
        store=CheckpointStore(tmp_path / "ckpt"),
        config=EngineConfig(until_idle_seconds=0),
        oversight=Oversight(
            gate=ValidationGate(
                FileRegistry(tmp_path / "reg"),
                GateConfig(every_batches=4, every_seconds=None, holdout_min_events=10, tolerance=1.0),
            )
        ),
    )
    engine.run()
    assert engine.gate.counts["validated"] >= 3
    assert plugins[0].consolidations == engine.gate.counts["validated"]
