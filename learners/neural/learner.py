"""The PyTorch incremental learner: one optimizer step (or a few) per micro-batch.

:class:`TorchLearner` implements :class:`~learners.base.Learner` for any model
from the zoo (:mod:`learners.neural.models`) or any factory
``(n_features, n_outputs) -> nn.Module``. It runs on CUDA when present and on
CPU otherwise.

The learn path never synchronises with the device: inputs are validated on
the host (numpy, before the transfer), copied through pinned memory with
``non_blocking=True`` on CUDA (zero-copy ``torch.from_numpy`` on CPU), and the
loss is returned as an unread 0-d device tensor inside the
:class:`~learners.base.LearnReport`. The model, optimizer and their state are
built once and reused for every batch.

Continual-learning regularisers (EWC) and rehearsal buffers plug in through
the narrow :class:`~learners.neural.hooks.UpdatePlugin` interface instead of
reaching into the learner: they may rewrite the batch before the update, add a
penalty to the loss, and observe the batch after the step. Their optional
hooks (consolidate, relax, refresh, ...) are resolved once, when the learner
is built (:class:`~learners.neural.hooks.PluginHooks`). Argument checks,
the device and the state-compatibility rule live in :mod:`learners.neural.config`.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(256, 4)).astype(np.float32)
>>> y = (X[:, 0] > 0).astype(np.int64)
>>> learner = TorchLearner("logistic", n_features=4, lr=0.1, device="cpu")
>>> for _ in range(30):
...     report = learner.learn_batch(X, y)
>>> report.n_samples, learner.n_learned
(256, 7680)
>>> bool((learner.predict_batch(X) == y).mean() > 0.95)
True
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from learners.base import LearnReport, Prequential
from learners.inputs import check_features, check_targets
from learners.neural.config import (
    STATE_FORMAT,
    build_optimizer,
    check_arguments,
    check_compatible,
    check_score_chunk,
    find_scalers,
    make_factory,
    mode_free,
    resolve_device,
    snapshot,
)
from learners.neural.grow import ClassGrowth
from learners.neural.hooks import PluginHooks, UpdatePlugin
from learners.neural.plasticity import PlasticityVerbs
from learners.neural.prequential import learn_in_chunks
from learners.neural.schedule import Schedule
from stream.core.errors import ConfigError, SchemaMismatchError

__all__ = ["TorchLearner"]


# ------------------------------------------------------------------- learner
class TorchLearner(PlasticityVerbs, ClassGrowth):
    """An incremental PyTorch learner for tabular micro-batches.

    Parameters
    ----------
    model
        A zoo name (``"logistic"``, ``"mlp"``, ``"resmlp"``; see
        :mod:`learners.neural.models`) or a factory ``(n_features, n_outputs) ->
        nn.Module`` (e.g. :func:`~learners.neural.models.model_factory`).
    n_features
        Input dimension (keyword-only, required).
    task
        ``"classification"`` (softmax cross-entropy, labels are int class
        indices ``0..n_classes-1``) or ``"regression"`` (MSE, float targets).
    n_classes
        Number of classes (classification only).
    optimizer
        ``"adam"``, ``"adamw"`` or ``"sgd"``.
    lr
        Learning rate. The configured value wins over one stored in a
        restored optimizer state.
    steps_per_batch
        Passes over each micro-batch (with ``minibatch_size=None``: gradient
        steps on the whole batch).
    minibatch_size
        Split each micro-batch (with any replayed rows) into shuffled chunks
        of this many rows and take one step per chunk. A window of 500 events
        then gives ~16 updates at 32 instead of one: far better accuracy on
        short or fast-drifting streams, at the cost of throughput (each step
        costs the same fixed ~0.2 ms of framework overhead on CPU whatever its
        size). ``None`` (default): one step on the whole batch.
    score_chunk
        Test-then-train inside a micro-batch (:meth:`learn_prequential`,
        :mod:`learners.neural.prequential`): each chunk of this many rows is
        predicted by the model already updated on the chunks before it, then
        learned (``steps_per_batch``/``minibatch_size`` apply per chunk).
        ``None`` (default): the engine predicts the whole batch, then learns it.
    schedule
        Extra steps while the model is young and rehearsal steps
        (:class:`~learners.neural.schedule.Schedule`; default: neither).
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or
        ``"cuda:N"``.
    amp
        bf16 autocast for the forward pass; takes effect on CUDA only (on CPU
        it is ignored, so one config runs everywhere).
    seed
        Seeds the parameter initialisation, inside a forked RNG: the global
        torch/numpy/random RNGs are neither read nor reseeded.
    model_kwargs
        Keyword arguments for a zoo model (only with a model *name*).
    plugins
        :class:`UpdatePlugin` hooks (EWC, rehearsal), called in order.

    Raises
    ------
    ConfigError
        Any argument is invalid (the message says which and why).

    Examples
    --------
    >>> learner = TorchLearner("mlp", n_features=3, n_classes=3, device="cpu", model_kwargs={"hidden": (8,)})
    >>> X = np.zeros((2, 3), np.float32)
    >>> learner.learn_batch(X, np.array([0, 2])).n_samples
    2
    >>> learner.predict_proba_batch(X).shape
    (2, 3)
    """

    def __init__(
        self,
        model: str | Callable[[int, int], nn.Module] = "logistic",
        *,
        n_features: int,
        task: Literal["classification", "regression"] = "classification",
        n_classes: int = 2,
        optimizer: str = "adam",
        lr: float = 1e-2,
        steps_per_batch: int = 1,
        minibatch_size: int | None = None,
        score_chunk: int | None = None,
        schedule: Schedule | None = None,
        device: str | torch.device = "auto",
        amp: bool = False,
        seed: int = 0,
        model_kwargs: Mapping[str, Any] | None = None,
        plugins: Sequence[UpdatePlugin] = (),
    ) -> None:
        self.model = model
        self.n_features = n_features
        self.task = task
        self.n_classes = n_classes
        self.optimizer = optimizer
        self.lr = lr
        self.steps_per_batch = steps_per_batch
        self.minibatch_size = minibatch_size
        self.score_chunk = score_chunk
        self.schedule = schedule if schedule is not None else Schedule()
        self.device = device
        self.amp = amp
        self.seed = seed
        self.model_kwargs = dict(model_kwargs) if model_kwargs is not None else None
        self.plugins = tuple(plugins)

        check_arguments(
            n_features=n_features,
            task=task,
            n_classes=n_classes,
            optimizer=optimizer,
            lr=lr,
            steps_per_batch=steps_per_batch,
            minibatch_size=minibatch_size,
            seed=seed,
        )
        check_score_chunk(score_chunk)
        if not isinstance(self.schedule, Schedule):
            raise ConfigError(f"schedule must be a learners.neural.schedule.Schedule, got {schedule!r}")
        for p in self.plugins:
            if not isinstance(p, UpdatePlugin):
                raise ConfigError(f"plugin {p!r} does not implement the UpdatePlugin hooks")
        # The plugins' optional hooks, resolved once: no verb probes a plugin with hasattr.
        self._hooks = PluginHooks.resolve(self.plugins)

        self._factory, self._model_name, self._model_kwargs = make_factory(model, model_kwargs)
        self._device = resolve_device(device)
        self._on_cuda = self._device.type == "cuda"
        self._amp = bool(amp) and self._on_cuda
        self._n_outputs = int(n_classes) if task == "classification" else 1
        self._classify = task == "classification"
        self._loss_fn = nn.functional.cross_entropy if self._classify else nn.functional.mse_loss
        self._model, self._opt = self._build()
        self._scalers = self._find_scalers(self._model)
        self._toggles_mode = not mode_free(self._model)
        self._n_learned = 0
        # Young until this many events learned (again after each adapt); checkpointed.
        self._young_until = self.schedule.young_events
        self._recent: tuple[torch.Tensor, torch.Tensor] | None = None  # what rehearse() revisits
        # Minibatch shuffling continues the stream of whoever saved a restored state.
        self._shuffle_seed = int(seed)

    # ------------------------------------------------------------ building
    _find_scalers = staticmethod(find_scalers)  # InputStandardizer and FeatureInput modules

    def _build(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        # fork_rng(devices=[]) saves and restores only the CPU generator; the
        # model is initialised on CPU, so its weights do not depend on the
        # device and no global RNG is reseeded (STYLE 2).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            module = self._factory(int(self.n_features), self._n_outputs)
        if not isinstance(module, nn.Module):
            raise ConfigError(f"model factory returned {type(module).__name__}, not an nn.Module")
        module = module.to(self._device)
        module.train()
        return module, build_optimizer(module, self.optimizer, self.lr)

    # ------------------------------------------------------------- inputs
    def _check_X(self, X: np.ndarray) -> np.ndarray:
        return check_features(X, self.n_features)

    def _check_y(self, y: np.ndarray, n: int) -> np.ndarray:
        y = check_targets(y, n, classify=self._classify, n_classes=self.n_classes)
        # Copies only when needed (dtype, layout, read-only); never writes to y.
        yc = np.ascontiguousarray(y, dtype=np.int64 if self._classify else np.float32)
        if not yc.flags.writeable:
            yc = yc.copy()
        return yc

    def _to_device(self, arr: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(arr)  # shares memory; the learner only reads it
        if self._on_cuda:
            # The caching host allocator recycles pinned blocks only after the
            # async copy that used them has completed, so no explicit sync.
            t = t.pin_memory().to(self._device, non_blocking=True)
        return t

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """The model's raw output (logits or values) on device rows, in eval mode and without gradients."""
        if self._toggles_mode and self._model.training:
            self._model.eval()
        with torch.no_grad():
            return self._forward(X)

    def _forward(self, X: torch.Tensor) -> torch.Tensor:
        if self._amp:
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                out = self._model(X)
            return out.float()
        return self._model(X)

    # -------------------------------------------------------------- learn
    def learn_batch(self, X: np.ndarray, y: np.ndarray) -> LearnReport:
        """Take ``steps_per_batch`` optimizer steps on one micro-batch.

        Parameters
        ----------
        X
            Features, shape ``(n, n_features)``; converted to float32 (a copy
            only when needed; ``X`` is never modified).
        y
            Shape ``(n,)``: int class indices (classification) or numbers
            (regression). Not modified.

        Returns
        -------
        LearnReport
            ``n_samples=n`` and ``loss``: the data loss (without plugin
            penalties) of the first step, as an unread 0-d device tensor
            (``None`` for an empty batch).

        Raises
        ------
        ValueError
            Wrong shapes, non-integer class labels, or a label outside
            ``0..n_classes-1`` (checked on the host before any transfer).
        """
        X0, y0 = self.checked_tensors(X, y)
        n = X0.shape[0]
        if n == 0:
            return LearnReport(n_samples=0, loss=None)
        self.remember_recent(X0, y0)
        return LearnReport(n_samples=n, loss=self.learn_tensors(X0, y0))

    def learn_tensors(self, X0: torch.Tensor, y0: torch.Tensor, *, scaled: bool = False) -> torch.Tensor:
        """:meth:`learn_batch` on non-empty device rows, without a host sync; the first step's data loss.

        ``scaled``: the input statistics have already seen ``X0`` (:meth:`update_scalers`).
        """
        if not scaled:
            self.update_scalers(X0)
        Xt, yt = X0, y0
        for plugin in self.plugins:
            Xt, yt = plugin.before_update(Xt, yt)

        if self._toggles_mode and not self._model.training:
            self._model.train()
        first_loss = None
        for chunk_X, chunk_y in self._chunks(Xt, yt):
            loss = self._step(chunk_X, chunk_y)
            if first_loss is None:
                first_loss = loss

        for plugin in self.plugins:
            plugin.after_update(self._model, X0, y0)
        self.count_learned(X0.shape[0])
        return first_loss

    def _step(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step on ``X, y`` with the plugins' penalties; the data loss, unread."""
        self._opt.zero_grad(set_to_none=True)
        out = self._forward(X)
        if not self._classify:
            out = out.squeeze(-1)
        loss = self._loss_fn(out, y)
        total = loss
        for plugin in self.plugins:
            pen = plugin.penalty(self._model)
            if pen is not None:
                total = total + pen
        total.backward()
        self._opt.step()
        return loss.detach()

    def update_scalers(self, X0: torch.Tensor) -> None:
        """Feed the input standardisers: each arriving event once, before the plugins (replayed rows are not new)."""
        for scaler in self._scalers:
            scaler.update(X0)

    def remember_recent(self, X0: torch.Tensor, y0: torch.Tensor) -> None:
        """Keep a reference to the latest learned batch (device rows) for :meth:`rehearse`."""
        self._recent = (X0, y0) if X0.shape[0] else self._recent

    def rehearse(self) -> int:
        """``schedule.rehearse_steps`` extra steps on samples of the latest learned batch; steps taken.

        Deterministic, and nothing new is learned (:mod:`learners.neural.schedule`);
        replay plugins mix in their buffer's rows, EWC adds its penalty.

        >>> learner = TorchLearner(n_features=2, device="cpu", schedule=Schedule(rehearse_steps=3))
        >>> learner.rehearse()  # nothing learned yet
        0
        >>> _ = learner.learn_batch(np.zeros((8, 2), np.float32), np.ones(8, np.int64))
        >>> learner.rehearse(), learner.n_learned
        (3, 8)
        """
        if not self.schedule.rehearse_steps or self._recent is None:
            return 0
        if self._toggles_mode and not self._model.training:
            self._model.train()
        key = self._shuffle_seed * 1_000_003 + self._n_learned + 1
        for Xt, yt in self.schedule.rehearsal_samples(*self._recent, key=key):
            for plugin in self.plugins:
                Xt, yt = plugin.before_update(Xt, yt)
            self._step(Xt, yt)
        return self.schedule.rehearse_steps

    def learn_prequential(self, X: np.ndarray, y: np.ndarray, *, proba: bool = False) -> Prequential:
        """Test-then-train inside the batch, ``score_chunk`` rows at a time (:mod:`learners.neural.prequential`).

        >>> learner = TorchLearner(n_features=2, device="cpu", score_chunk=4)
        >>> out = learner.learn_prequential(np.zeros((10, 2), np.float32), np.ones(10, np.int64), proba=True)
        >>> out.prediction.shape, out.proba.shape, out.report.n_samples, learner.n_learned
        ((10,), (10, 2), 10, 10)
        """
        return learn_in_chunks(self, X, y, proba=proba)

    def prepare_batch(self, X: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate a micro-batch, move it to the device and feed the input standardisers.

        The first half of :meth:`learn_batch`, public for learners that run
        their own update loop on this model (:class:`~learners.avalanche_adapter.learner.AvalancheLearner`);
        they call :meth:`count_learned` once the update is done.

        Raises
        ------
        ValueError
            As :meth:`learn_batch`.
        """
        X0, y0 = self.checked_tensors(X, y)
        if X0.shape[0]:
            self.update_scalers(X0)
        return X0, y0

    def checked_tensors(self, X: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``X, y`` checked on the host (numpy), then moved to the device (one transfer each)."""
        Xh = self._check_X(X)
        yh = self._check_y(y, Xh.shape[0])
        return self._to_device(Xh), self._to_device(yh)

    def count_learned(self, n: int) -> None:
        """Record ``n`` more events as learned (see :meth:`prepare_batch`)."""
        # INVARIANT: n_learned counts events, a host int; never read from the device.
        self._n_learned += int(n)

    def _chunks(self, X: torch.Tensor, y: torch.Tensor):
        """(X, y) per optimizer step: the whole batch ``steps_per_batch`` times, or shuffled minibatches."""
        mb = self.minibatch_size
        n = X.shape[0]  # a host int: shapes are known without a device sync
        steps = self.schedule.steps(
            self.steps_per_batch, n_learned=self._n_learned, young_until=self._young_until
        )
        if mb is None or mb >= n:
            for _ in range(steps):
                yield X, y
            return
        # Shuffle so appended replay rows are spread over the chunks. The
        # generator is seeded from (seed, events learned so far): reproducible
        # and identical after a restore, with no RNG state to checkpoint.
        gen = torch.Generator(device=X.device).manual_seed(self._shuffle_seed * 1_000_003 + self._n_learned)
        for _ in range(steps):
            order = torch.randperm(n, device=X.device, generator=gen)
            for start in range(0, n, mb):
                idx = order[start : start + mb]
                yield X[idx], y[idx]

    # ------------------------------------------------------------ predict
    def _infer(self, X: np.ndarray) -> torch.Tensor:
        Xt = self._to_device(self._check_X(X))
        if self._toggles_mode and self._model.training:
            self._model.eval()
        return self._forward(Xt)

    def predict_proba_batch(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, float32 of shape ``(n, n_classes)``.

        Raises
        ------
        ConfigError
            The learner does regression (use :meth:`predict_batch`).
        ValueError
            ``X`` has the wrong shape.
        """
        if not self._classify:
            raise ConfigError(
                "predict_proba_batch needs task='classification'; this learner does regression, "
                "use predict_batch"
            )
        with torch.inference_mode():
            return torch.softmax(self._infer(X), dim=-1).cpu().numpy()

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        """Class indices (int64) or regression values (float32), shape ``(n,)``.

        Raises
        ------
        ValueError
            ``X`` has the wrong shape.
        """
        with torch.inference_mode():
            out = self._infer(X)
            out = out.argmax(dim=-1) if self._classify else out.squeeze(-1)
            return out.cpu().numpy()

    # -------------------------------------------------------------- state
    @property
    def n_learned(self) -> int:
        """Events learned since construction (or as restored by :meth:`load_state_dict`)."""
        return self._n_learned

    @property
    def torch_device(self) -> torch.device:
        """The resolved device (``device="auto"`` becomes ``cpu`` or ``cuda``)."""
        return self._device

    @property
    def module(self) -> nn.Module:
        """The live ``nn.Module`` (read-only use: inspection, export, plugins' setup)."""
        return self._model

    @property
    def torch_optimizer(self) -> torch.optim.Optimizer:
        """The live optimizer (rebuilt by :meth:`load_state_dict`; do not cache it across a restore)."""
        return self._opt

    def config(self) -> dict:
        """The plain-data configuration recorded in :meth:`state_dict`."""
        return {
            "format": STATE_FORMAT,
            "family": "torch",  # learners.families: how serving finds this state's loader
            "model": self._model_name,
            "model_kwargs": dict(self._model_kwargs),
            "n_features": int(self.n_features),
            "task": self.task,
            "n_classes": int(self.n_classes) if self._classify else None,
            "optimizer": self.optimizer,
            "lr": float(self.lr),
            "steps_per_batch": int(self.steps_per_batch),
            "minibatch_size": None if self.minibatch_size is None else int(self.minibatch_size),
            "score_chunk": None if self.score_chunk is None else int(self.score_chunk),
            "schedule": self.schedule.to_dict(),
            "seed": int(self.seed),
        }

    def state_dict(self) -> dict:
        """A snapshot: model and optimizer tensors (copied, on the device), counters, config.

        The tensors are copies, so further learning does not change a
        snapshot held for rollback or publication. The result serialises
        with :func:`learners.state_io.dumps_state` (no pickle).

        Examples
        --------
        >>> sorted(TorchLearner(n_features=2, device="cpu").state_dict())
        ['config', 'model', 'n_learned', 'optimizer', 'plugins', 'young_until']
        """
        return {
            "config": self.config(),
            "model": snapshot(self._model.state_dict()),
            "optimizer": snapshot(self._opt.state_dict()),
            "n_learned": self._n_learned,
            "plugins": [snapshot(p.state_dict()) for p in self.plugins],
            "young_until": self._young_until,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (of this learner, a clone, or loaded from disk).

        All-or-nothing for the model and optimizer: they are rebuilt and
        loaded aside, then swapped in. Tensors may be on any device.

        Raises
        ------
        SchemaMismatchError
            The state was made with a different feature count, task, class
            count, model, model kwargs or optimizer, or its tensors do not fit.
        """
        check_compatible(state, self.config(), len(self.plugins))
        model, opt = self._build()
        try:
            model.load_state_dict(state["model"])
            # A copy: torch's optimizer keeps the given tensors (step, moments) and would
            # then advance the caller's snapshot -- a rollback target held by the policy.
            opt.load_state_dict(snapshot(state["optimizer"]))
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise SchemaMismatchError(f"learner state does not fit the model/optimizer: {exc}") from exc
        for group in opt.param_groups:
            group["lr"] = float(self.lr)
        self._model, self._opt = model, opt
        self._scalers = self._find_scalers(model)
        self._n_learned = int(state.get("n_learned", 0))
        # A state from before the schedule existed: young for the configured span from its count.
        self._young_until = int(state.get("young_until", self.schedule.young_events))
        self._recent = None
        self._shuffle_seed = int(state["config"].get("seed", self.seed))
        for plugin, pstate in zip(self.plugins, state.get("plugins") or []):
            plugin.load_state_dict(snapshot(pstate))  # a buffer filled in place must not fill the snapshot

    # -------------------------------------------------------------- clone
    def get_params(self) -> dict:
        """The constructor arguments (plugins are cloned)."""
        return {
            "model": self.model,
            "n_features": self.n_features,
            "task": self.task,
            "n_classes": self.n_classes,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "steps_per_batch": self.steps_per_batch,
            "minibatch_size": self.minibatch_size,
            "score_chunk": self.score_chunk,
            "schedule": self.schedule,
            "device": self.device,
            "amp": self.amp,
            "seed": self.seed,
            "model_kwargs": self.model_kwargs,
            "plugins": [p.clone() for p in self.plugins],
        }

    def clone(self) -> TorchLearner:
        """A fresh, untrained learner with the same configuration (same seed, so same initial weights).

        Examples
        --------
        >>> a = TorchLearner(n_features=2, device="cpu")
        >>> b = a.clone()
        >>> b is not a and b.n_learned == 0 and b.config() == a.config()
        True
        """
        return TorchLearner(**self.get_params())

    def __repr__(self) -> str:
        return (
            f"TorchLearner(model={self._model_name!r}, n_features={self.n_features}, task={self.task!r}, "
            f"n_classes={self.n_classes}, optimizer={self.optimizer!r}, lr={self.lr}, device={str(self._device)!r})"
        )
