"""Avalanche's continual-learning strategies as a streamlearn learner: one micro-batch, one experience.

:class:`AvalancheLearner` runs any Avalanche supervised strategy (``Naive``,
``EWC``, ``Replay``, ``LwF``, ``SynapticIntelligence``, ``GEM``, ``AGEM``,
...) with any of its plugins (``LwFPlugin``, ``EWCPlugin``, ``ReplayPlugin``,
...) on a zoo model, behind the :class:`~learners.base.Learner` contract:
each ``learn_batch`` hands the micro-batch to ``strategy.train`` as one
Avalanche experience, so plugins that act at experience boundaries
(EWC's importances, LwF's frozen teacher, replay-buffer updates) act once per
micro-batch.

The model, optimizer and input standardisation are a
:class:`~learners.neural.learner.TorchLearner`'s (same zoo, seeding and
device rules), so a published version is served by the same code as any
torch learner. What plugins learned is checkpointed without pickle
(:mod:`learners.avalanche_adapter.state`). Avalanche's own RNG draws (replay
sampling, shuffling) run inside a forked RNG seeded from (seed, events
learned): runs are reproducible, resume identically after a restore, and
never move the caller's global RNG.

Regularisers that anchor at each experience (``EWC``, ``SynapticIntelligence``)
re-anchor at every micro-batch here; with one gradient step per experience
the penalty is taken at its anchor, where it and its gradient are zero, so
they learn exactly like ``Naive``. Give them ``train_epochs > 1`` or a
``minibatch_size`` (several steps per experience), or use streamlearn's own
EWC, which consolidates every K batches.

Needs ``pip install 'streamlearn[avalanche]'``. Classification only (Avalanche's
strategies are). Avalanche's per-experience machinery costs milliseconds per
micro-batch; ``bench/learners.py`` measures it beside our own EWC and replay.

Examples
--------
>>> import numpy as np
>>> learner = AvalancheLearner("LwF", "mlp", n_features=3, device="cpu",
...                            strategy_kwargs={"alpha": 1.0, "temperature": 2.0})
>>> X = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
>>> learner.learn_batch(X, (X[:, 0] > 0).astype(np.int64)).n_samples
64
>>> learner.predict_proba_batch(X[:2]).shape
(2, 2)
"""

from __future__ import annotations

import random
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from learners.avalanche_adapter.imports import import_avalanche
from learners.avalanche_adapter.state import capture, restore
from learners.base import LearnReport
from learners.neural.config import canonical
from learners.neural.learner import TorchLearner
from stream.core.errors import ConfigError, SchemaMismatchError

__all__ = ["STATE_FORMAT", "AvalancheLearner", "torch_learner_state"]

STATE_FORMAT = 1
# Plugins whose state is bookkeeping of evaluation, not learning: not captured.
_EVALUATION_MODULES = ("avalanche.training.plugins.evaluation",)


class AvalancheLearner:
    """An Avalanche strategy learning one experience per micro-batch.

    Parameters
    ----------
    strategy
        Name of a strategy class in ``avalanche.training`` (``"Naive"``,
        ``"EWC"``, ``"Replay"``, ``"LwF"``, ``"SynapticIntelligence"``,
        ``"GEM"``, ``"AGEM"``, ...).
    model
        A zoo model name (``logistic``, ``mlp``, ``resmlp``), as for
        :class:`~learners.neural.learner.TorchLearner`.
    n_features, n_classes
        The schema.
    strategy_kwargs
        Strategy-specific arguments, e.g. ``{"ewc_lambda": 10.0}`` for EWC,
        ``{"mem_size": 2000}`` for Replay.
    plugins
        Extra Avalanche plugins as ``(class name in avalanche.training.plugins,
        kwargs)`` pairs, e.g. ``[("LwFPlugin", {"alpha": 0.5})]``.
    optimizer, lr, model_kwargs, device, seed
        As for :class:`~learners.neural.learner.TorchLearner`.
    train_epochs
        Avalanche epochs over each micro-batch.
    minibatch_size
        Avalanche's ``train_mb_size``; ``None``: the whole micro-batch in one step.

    Raises
    ------
    ConfigError
        Avalanche is not installed, the strategy or a plugin is unknown, or an
        argument does not fit it (the message says which).
    """

    def __init__(
        self,
        strategy: str = "Naive",
        model: str = "mlp",
        *,
        n_features: int,
        n_classes: int = 2,
        strategy_kwargs: Mapping[str, Any] | None = None,
        plugins: Sequence[tuple[str, Mapping[str, Any]]] = (),
        optimizer: str = "adam",
        lr: float = 1e-2,
        train_epochs: int = 1,
        minibatch_size: int | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
    ) -> None:
        self.strategy = strategy
        self.model = model
        self.n_features = n_features
        self.n_classes = n_classes
        self.strategy_kwargs = dict(strategy_kwargs or {})
        self.plugins = tuple((str(name), dict(kwargs or {})) for name, kwargs in plugins)
        self.optimizer = optimizer
        self.lr = lr
        self.train_epochs = train_epochs
        self.minibatch_size = minibatch_size
        self.model_kwargs = dict(model_kwargs) if model_kwargs is not None else None
        self.device = device
        self.seed = seed
        self.task = "classification"

        if isinstance(train_epochs, bool) or not isinstance(train_epochs, int) or train_epochs < 1:
            raise ConfigError(f"train_epochs must be an integer >= 1, got {train_epochs!r}")
        if minibatch_size is not None and (
            isinstance(minibatch_size, bool) or not isinstance(minibatch_size, int) or minibatch_size < 1
        ):
            raise ConfigError(f"minibatch_size must be a positive integer or None, got {minibatch_size!r}")
        self._training = import_avalanche()
        self._strategy_cls = self._resolve_strategy(strategy)
        self._net = TorchLearner(
            model,
            n_features=n_features,
            n_classes=n_classes,
            optimizer=optimizer,
            lr=lr,
            device=device,
            seed=seed,
            model_kwargs=model_kwargs,
        )
        self._loss_probe = _LossProbe()
        self._strategy = self._build_strategy()
        self._n_experiences = 0
        # Avalanche's random draws continue the stream of whoever saved a restored state.
        self._rng_seed = int(seed)

    # ------------------------------------------------------------ building
    def _resolve_strategy(self, name: str) -> type:
        template = self._training.templates.SupervisedTemplate
        cls = getattr(self._training, name, None) if isinstance(name, str) else None
        if not (isinstance(cls, type) and issubclass(cls, template)):
            known = sorted(
                n
                for n, v in vars(self._training).items()
                if isinstance(v, type) and issubclass(v, template) and not n.endswith("Template")
            )
            raise ConfigError(f"unknown Avalanche strategy {name!r}; choose one of: {', '.join(known)}")
        return cls

    def _build_plugins(self) -> list:
        out = []
        for name, kwargs in self.plugins:
            cls = getattr(self._training.plugins, name, None)
            if not isinstance(cls, type):
                raise ConfigError(
                    f"unknown Avalanche plugin {name!r} (a class name in avalanche.training.plugins, "
                    "e.g. LwFPlugin, EWCPlugin, ReplayPlugin)"
                )
            try:
                out.append(cls(**kwargs))
            except TypeError as exc:
                raise ConfigError(f"Avalanche plugin {name} does not accept {sorted(kwargs)}: {exc}") from exc
        return out

    def _build_strategy(self) -> Any:
        module = self._net.module
        try:
            with warnings.catch_warnings():
                # Evaluation is the engine's job (the validation gate), so the
                # strategy has no evaluation loggers; Avalanche warns about that.
                warnings.filterwarnings("ignore", message="No loggers specified")
                strategy = self._strategy_cls(
                    model=module,
                    optimizer=self._net.torch_optimizer,
                    criterion=nn.CrossEntropyLoss(),
                    train_mb_size=self.minibatch_size or 1,
                    train_epochs=self.train_epochs,
                    eval_mb_size=max(1, self.minibatch_size or 256),
                    device=self._net.torch_device,
                    plugins=[self._loss_probe, *self._build_plugins()],
                    evaluator=None,
                    **self.strategy_kwargs,
                )
        except (TypeError, ValueError, AssertionError) as exc:
            raise ConfigError(
                f"Avalanche strategy {self.strategy} does not accept {sorted(self.strategy_kwargs)}: {exc}"
            ) from exc
        # Avalanche resets the optimizer state the first time a strategy
        # trains; the state belongs to the learner (and survives restores), so
        # hand the strategy the parameter map it would build and keep the state.
        strategy.optimized_param_id = dict(module.named_parameters())
        return strategy

    def _learning_plugins(self, strategy: Any = None) -> list:
        return [
            p
            for p in (strategy or self._strategy).plugins
            if p is not self._loss_probe and not type(p).__module__.startswith(_EVALUATION_MODULES)
        ]

    @contextmanager
    def _seeded(self) -> Iterator[None]:
        """Avalanche draws from torch's and Python's global RNGs: seed both, then put them back."""
        seed = self._rng_seed * 1_000_003 + self._net.n_learned
        devices = [self._net.torch_device] if self._net.torch_device.type == "cuda" else []
        py_state = random.getstate()
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                random.seed(seed)
                yield
        finally:
            random.setstate(py_state)

    # -------------------------------------------------------------- learn
    def _experience(self, X: torch.Tensor, y: torch.Tensor) -> Any:
        from avalanche.benchmarks.scenarios.dataset_scenario import DatasetExperience
        from avalanche.benchmarks.scenarios.generic_scenario import EagerCLStream
        from avalanche.benchmarks.utils.classification_dataset import (
            _make_taskaware_tensor_classification_dataset,
        )

        # task label 0: one stream, one task (class- or domain-incremental).
        dataset = _make_taskaware_tensor_classification_dataset(X, y, task_labels=0, targets=y)
        exp = DatasetExperience(dataset=dataset, current_experience=self._n_experiences)
        exp.origin_stream = EagerCLStream("train", [], set_stream_info=False)
        return exp

    def learn_batch(self, X: np.ndarray, y: np.ndarray) -> LearnReport:
        """Train the strategy on one micro-batch as one Avalanche experience.

        Raises
        ------
        ValueError
            Wrong shapes or labels outside ``0..n_classes-1``.
        """
        X0, y0 = self._net.prepare_batch(X, y)
        n = X0.shape[0]
        if n == 0:
            return LearnReport(n_samples=0, loss=None)
        strategy = self._strategy
        strategy.train_mb_size = self.minibatch_size or n
        self._loss_probe.first = None
        with self._seeded():
            strategy.train(self._experience(X0, y0), num_workers=0)
        self._net.count_learned(n)
        self._n_experiences += 1
        return LearnReport(n_samples=n, loss=self._loss_probe.first)

    # ------------------------------------------------------------ predict
    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        """Class indices, int64 of shape ``(n,)``."""
        return self._net.predict_batch(X)

    def predict_proba_batch(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, float32 of shape ``(n, n_classes)``."""
        return self._net.predict_proba_batch(X)

    # -------------------------------------------------------------- state
    @property
    def n_learned(self) -> int:
        """Events learned (as restored by :meth:`load_state_dict`)."""
        return self._net.n_learned

    @property
    def module(self) -> nn.Module:
        """The live model."""
        return self._net.module

    @property
    def torch_device(self) -> torch.device:
        return self._net.torch_device

    def config(self) -> dict:
        """Plain-data configuration; ``net`` is the served model's (a TorchLearner config)."""
        return {
            "format": STATE_FORMAT,
            "family": "avalanche",  # learners.families: how serving finds this state's loader
            "kind": "avalanche",
            "strategy": self.strategy,
            "strategy_kwargs": dict(self.strategy_kwargs),
            "plugins": [[name, dict(kwargs)] for name, kwargs in self.plugins],
            "train_epochs": int(self.train_epochs),
            "minibatch_size": self.minibatch_size,
        }

    def state_dict(self) -> dict:
        """Model, optimizer and standardiser (as a TorchLearner state) plus what the plugins learned.

        :func:`torch_learner_state` turns it back into the TorchLearner state
        of the model, which the API serves like any torch model. No pickle anywhere.
        """
        net = self._net.state_dict()
        return {
            # The model's own config sits inside ours, so "config" is the only
            # entry that records constructor arguments (seed included).
            "config": {**self.config(), "net": net.pop("config")},
            "model": net.pop("model"),
            "net": net,  # optimizer, n_learned
            "n_experiences": self._n_experiences,
            "plugins": [{"class": type(p).__name__, "state": capture(p)} for p in self._learning_plugins()],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`.

        Raises
        ------
        SchemaMismatchError
            The state is of another strategy, plugin list or model.
        """
        if not isinstance(state, Mapping) or not {"config", "model", "net", "plugins"} <= set(state):
            raise SchemaMismatchError(
                "Avalanche learner state must have config, net and plugins entries "
                "(as returned by AvalancheLearner.state_dict)"
            )
        theirs, ours = state["config"], self.config()
        for key in ("format", "kind", "strategy", "strategy_kwargs", "plugins"):
            if canonical(theirs.get(key)) != canonical(ours[key]):
                raise SchemaMismatchError(
                    f"Avalanche learner state has {key}={theirs.get(key)!r}, this learner has "
                    f"{ours[key]!r}; configure it like the learner that saved the state"
                )
        self._net.load_state_dict(torch_learner_state(state))  # all-or-nothing for model and optimizer
        strategy = self._build_strategy()
        plugins = self._learning_plugins(strategy)
        saved = state["plugins"]
        if [type(p).__name__ for p in plugins] != [s["class"] for s in saved]:
            raise SchemaMismatchError(
                f"Avalanche learner state holds plugins {[s['class'] for s in saved]}, "
                f"the strategy has {[type(p).__name__ for p in plugins]}"
            )
        for plugin, entry in zip(plugins, saved):
            restore(plugin, entry["state"], self._net.module)
            _reopen_iterators(plugin)
        self._strategy = strategy
        self._n_experiences = int(state.get("n_experiences", 0))
        self._rng_seed = int(state["config"]["net"].get("seed", self.seed))

    # -------------------------------------------------------------- clone
    def get_params(self) -> dict:
        """The constructor arguments."""
        return {
            "strategy": self.strategy,
            "model": self.model,
            "n_features": self.n_features,
            "n_classes": self.n_classes,
            "strategy_kwargs": dict(self.strategy_kwargs),
            "plugins": [(name, dict(kwargs)) for name, kwargs in self.plugins],
            "optimizer": self.optimizer,
            "lr": self.lr,
            "train_epochs": self.train_epochs,
            "minibatch_size": self.minibatch_size,
            "model_kwargs": self.model_kwargs,
            "device": self.device,
            "seed": self.seed,
        }

    def clone(self) -> AvalancheLearner:
        """A fresh, untrained learner with the same configuration."""
        return AvalancheLearner(**self.get_params())

    def __repr__(self) -> str:
        return (
            f"AvalancheLearner(strategy={self.strategy!r}, model={self.model!r}, n_features={self.n_features}, "
            f"n_classes={self.n_classes}, plugins={[n for n, _ in self.plugins]})"
        )


def torch_learner_state(state: Mapping[str, Any]) -> dict:
    """The :class:`~learners.neural.learner.TorchLearner` state of the model inside an Avalanche learner state.

    Raises
    ------
    SchemaMismatchError
        ``state`` is not an Avalanche learner state.
    """
    try:
        return {**state["net"], "config": state["config"]["net"], "model": state["model"], "plugins": []}
    except (KeyError, TypeError) as exc:
        raise SchemaMismatchError(f"not an Avalanche learner state (missing {exc})") from exc


class _LossProbe:
    """A minimal Avalanche plugin recording the first data loss of each ``train`` call (unread, on the device).

    Avalanche resets ``strategy.loss`` when training ends, so it is read in
    the first iteration's ``before_backward``. The probe is the first plugin,
    so no plugin penalty (EWC, LwF, ...) has been added to the loss yet.
    """

    supports_distributed = True

    def __init__(self) -> None:
        self.first: torch.Tensor | None = None

    def __getattr__(self, name: str) -> Any:
        # Every other Avalanche callback (before_training, after_update, ...) is a no-op.
        if name.startswith(("before_", "after_")):
            return _noop
        raise AttributeError(name)

    def before_backward(self, strategy: Any, **kwargs: Any) -> None:
        if self.first is None:
            self.first = strategy.loss.detach()


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _reopen_iterators(plugin: Any) -> None:
    """Rebuild what a plugin derives from its restored memory and cannot be captured (live iterators)."""
    if type(plugin).__name__ == "AGEMPlugin" and plugin.buffers:
        from avalanche.benchmarks.utils.data_loader import GroupBalancedInfiniteDataLoader

        plugin.buffer_dataloader = GroupBalancedInfiniteDataLoader(
            plugin.buffers,
            batch_size=plugin.sample_size // len(plugin.buffers),
            num_workers=0,
            pin_memory=False,
            persistent_workers=False,
        )
        plugin.buffer_dliter = iter(plugin.buffer_dataloader)
