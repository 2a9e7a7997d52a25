"""A learner that sets its own plasticity: K small networks combined by Hedge.

:class:`HedgeLearner` trains K :class:`~learners.neural.learner.TorchLearner`
members (different models, learning rates and steps per batch; see
:mod:`learners.hedge.members`) on every micro-batch and predicts with their
weighted mixture. The weights follow Hedge with fixed share (Herbster and
Warmuth's tracking the best expert; the combination of Sahoo et al.'s online
deep learning):

1. each member's *prequential* loss on the batch is measured before any
   member learns it (cross-entropy per row, capped at :data:`LOSS_CAP`, for
   classification; squared error divided by the members' mean for regression,
   so ``eta`` does not depend on the targets' scale);
2. ``w_k <- w_k * exp(-eta * n * loss_k)``, renormalised (``eta`` is per row, so
   the window size does not change how fast the weights move);
3. ``w <- (1 - a) * w + a / K`` with ``a = 1 - (1 - share)^n``: no weight falls
   below a floor, so a member that lost before a drift can win again after it.

Which learning rate or model fits a stream is then decided online, from the
loss, instead of by hand. The weights live on the members' device and are
updated there: the learn path does not synchronise with the device.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(200, 3)).astype(np.float32)
>>> y = (X[:, 0] > 0).astype(np.int64)
>>> learner = HedgeLearner(n_features=3, device="cpu")
>>> for _ in range(10):
...     report = learner.learn_batch(X, y)
>>> learner.n_learned, round(float(learner.weights.sum()), 6)
(2000, 1.0)
>>> bool((learner.predict_batch(X) == y).mean() > 0.9)
True
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch

from learners.base import LearnReport
from learners.hedge.members import check_members
from learners.inputs import check_features, check_targets
from learners.neural.config import TASKS, canonical, resolve_device, snapshot
from learners.neural.learner import TorchLearner
from stream.core.errors import ConfigError, SchemaMismatchError

__all__ = ["HEDGE_FORMAT", "LOSS_CAP", "HedgeLearner", "member_config"]

HEDGE_FORMAT = 1
#: Per-row cross-entropy cap: Hedge assumes bounded losses, and one confidently wrong row
#: (a corrupted label) must not wipe out a member's weight.
LOSS_CAP = 5.0
# Per-member config entries that must match for a state to load (lr and steps may change).
_MEMBER_COMPAT = ("model", "model_kwargs", "optimizer")


def member_config(spec: Mapping[str, Any], hedge_config: Mapping[str, Any]) -> dict:
    """The TorchLearner config of one member, rebuilt from its spec and the ensemble's config.

    A member's own state holds no config (the ensemble's holds it once); serving
    (:mod:`learners.hedge.inference`) rebuilds the member's module from this.
    """
    from learners.neural.config import STATE_FORMAT

    return {
        "format": STATE_FORMAT,
        "family": "torch",
        "model": spec["model"],
        "model_kwargs": dict(spec.get("model_kwargs") or {}),
        "n_features": int(hedge_config["n_features"]),
        "task": hedge_config["task"],
        "n_classes": hedge_config["n_classes"],
    }


class HedgeLearner:
    """An ensemble of small torch learners weighted online by their recent loss (Hedge with fixed share).

    Parameters
    ----------
    members
        Member specs (dicts with ``model``, ``lr`` and optionally ``steps``,
        ``optimizer``, ``minibatch_size``, ``model_kwargs``); ``None``: the
        default set (:data:`learners.hedge.members.DEFAULT_MEMBERS`).
    n_features
        Input dimension (keyword-only, required).
    task
        ``"classification"`` or ``"regression"``.
    n_classes
        Number of classes (classification only).
    eta
        Hedge learning rate, per row: a member whose loss is higher by ``d``
        on ``m`` rows loses a factor ``exp(-eta * m * d)`` of weight.
    share
        Fixed-share rate per row: the weight mixed back towards uniform,
        which bounds how long a member needs to take over after a drift.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``, for every member.
    seed
        Member ``k`` is seeded with ``seed + k``.

    Raises
    ------
    ConfigError
        Any argument or member spec is invalid.
    """

    def __init__(
        self,
        members: Sequence[Mapping[str, Any]] | None = None,
        *,
        n_features: int,
        task: Literal["classification", "regression"] = "classification",
        n_classes: int = 2,
        eta: float = 0.02,
        share: float = 1e-4,
        device: str | torch.device = "auto",
        seed: int = 0,
    ) -> None:
        self.members = check_members(members)
        self.n_features = n_features
        self.task = task
        self.n_classes = n_classes
        self.eta = eta
        self.share = share
        self.device = device
        self.seed = seed
        if task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta > 0:
            raise ConfigError(f"hedge eta must be a positive number, got {eta!r}")
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
            raise ConfigError(f"hedge share must be a number in [0, 1), got {share!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        self._classify = task == "classification"
        self._device = resolve_device(device)
        self._learners = [self._member(k, spec) for k, spec in enumerate(self.members)]
        self._weights = self._uniform()
        self._n_learned = 0

    def _member(self, k: int, spec: Mapping[str, Any]) -> TorchLearner:
        try:
            return TorchLearner(
                spec["model"],
                n_features=self.n_features,
                task=self.task,
                n_classes=self.n_classes,
                optimizer=spec["optimizer"],
                lr=spec["lr"],
                steps_per_batch=spec["steps"],
                minibatch_size=spec["minibatch_size"],
                device=self._device,
                seed=int(self.seed) + k,
                model_kwargs=spec["model_kwargs"] or None,
            )
        except ConfigError as exc:
            raise ConfigError(f"hedge member {k} ({dict(spec)!r}): {exc}") from None

    def _uniform(self) -> torch.Tensor:
        k = len(self.members)
        return torch.full((k,), 1.0 / k, dtype=torch.float64, device=self._device)

    # -------------------------------------------------------------- inputs
    def _to_device(self, arr: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(arr)
        if self._device.type == "cuda":
            t = t.pin_memory().to(self._device, non_blocking=True)
        return t

    @torch.no_grad()
    def _outputs(self, Xt: torch.Tensor) -> torch.Tensor:
        """Every member's prediction: (K, n, C) probabilities, or (K, n) regression values."""
        outs = []
        for member in self._learners:
            module = member.module
            if module.training:  # as TorchLearner predicts: dropout off (its learn_batch turns it back on)
                module.eval()
            out = module(Xt)
            outs.append(torch.softmax(out, dim=-1) if self._classify else out.squeeze(-1))
        return torch.stack(outs)

    def _mixture(self, outs: torch.Tensor) -> torch.Tensor:
        w = self._weights.to(outs.dtype)
        return torch.tensordot(w, outs, dims=1)

    # --------------------------------------------------------------- learn
    def learn_batch(self, X: np.ndarray, y: np.ndarray) -> LearnReport:
        """Reweight the members on their loss on this batch (before they learn it), then train each on it.

        Returns the ensemble's own prequential loss on the batch (cross-entropy
        of the mixture, or squared error of the weighted prediction) as an
        unread 0-d tensor; ``None`` for an empty batch.

        Raises
        ------
        ValueError
            Wrong shapes or labels (as :meth:`TorchLearner.learn_batch`).
        """
        Xh = check_features(X, self.n_features)
        yh = check_targets(y, Xh.shape[0], classify=self._classify, n_classes=self.n_classes)
        yh = np.ascontiguousarray(yh, dtype=np.int64 if self._classify else np.float32)
        n = Xh.shape[0]
        if n == 0:
            return LearnReport(n_samples=0, loss=None)
        outs = self._outputs(self._to_device(Xh))
        loss = self._reweight(outs, self._to_device(yh), n)
        for member in self._learners:
            member.learn_batch(Xh, yh)
        self._n_learned += n
        return LearnReport(n_samples=n, loss=loss)

    @torch.no_grad()
    def _reweight(self, outs: torch.Tensor, yt: torch.Tensor, n: int) -> torch.Tensor:
        """Hedge with fixed share on the members' losses; returns the mixture's loss before the update."""
        if self._classify:
            # Brier score: the squared error of the probability vector, bounded in [0, 2]. Log loss
            # would reward the least confident member after a drift, not the most accurate one.
            onehot = torch.nn.functional.one_hot(yt, outs.shape[-1]).to(outs.dtype)
            losses = (outs - onehot.unsqueeze(0)).square().sum(dim=2).mean(dim=1)
            p_true = self._mixture(outs).gather(1, yt.view(-1, 1)).squeeze(1)
            mix_loss = -p_true.clamp_min(1e-12).log().mean()
        else:
            sq = (outs - yt.unsqueeze(0)).square().mean(dim=1)
            losses = sq / sq.mean().clamp_min(1e-12)  # scale-free: relative to the members' mean
            mix_loss = (self._mixture(outs) - yt).square().mean()
        if self._n_learned == 0:
            # Nothing learned yet: the losses compare random initialisations, not learners.
            return mix_loss.float()
        logits = self._weights.log() - float(self.eta) * n * losses.to(torch.float64)
        w = torch.softmax(logits, dim=0)
        a = 1.0 - (1.0 - float(self.share)) ** n
        self._weights = (1.0 - a) * w + a / len(self.members)
        return mix_loss.float()

    # ------------------------------------------------------------- predict
    def predict_proba_batch(self, X: np.ndarray) -> np.ndarray:
        """The weighted mixture of the members' class probabilities, float32 ``(n, n_classes)``.

        Raises
        ------
        ConfigError
            The learner does regression.
        """
        if not self._classify:
            raise ConfigError(
                "predict_proba_batch needs task='classification'; this learner does regression, use predict_batch"
            )
        Xt = self._to_device(check_features(X, self.n_features))
        return self._mixture(self._outputs(Xt)).float().cpu().numpy()

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        """Class indices (int64, the mixture's argmax) or weighted regression values (float32), shape ``(n,)``."""
        Xt = self._to_device(check_features(X, self.n_features))
        mix = self._mixture(self._outputs(Xt)).float()
        return (mix.argmax(dim=-1) if self._classify else mix).cpu().numpy()

    # --------------------------------------------------------------- state
    @property
    def n_learned(self) -> int:
        """Events learned since construction (or as restored by :meth:`load_state_dict`)."""
        return self._n_learned

    @property
    def weights(self) -> torch.Tensor:
        """The members' current weights (a copy; sums to 1)."""
        return self._weights.detach().clone()

    @property
    def member_learners(self) -> tuple[TorchLearner, ...]:
        """The live members (read-only use: inspection and tests)."""
        return tuple(self._learners)

    @property
    def torch_device(self) -> torch.device:
        return self._device

    def config(self) -> dict:
        """The plain-data configuration recorded in :meth:`state_dict`."""
        return {
            "format": HEDGE_FORMAT,
            "family": "hedge",  # learners.families: how serving finds this state's loader
            "members": [dict(m, model_kwargs=dict(m["model_kwargs"])) for m in self.members],
            "n_features": int(self.n_features),
            "task": self.task,
            "n_classes": int(self.n_classes) if self._classify else None,
            "eta": float(self.eta),
            "share": float(self.share),
            "seed": int(self.seed),
        }

    def state_dict(self) -> dict:
        """A snapshot: each member's model and optimizer (without its config), the weights, counters, config.

        Serialises with :func:`learners.state_io.dumps_state` (no pickle).

        >>> sorted(HedgeLearner(n_features=2, device="cpu").state_dict())
        ['config', 'model', 'n_learned', 'weights']
        """
        members = []
        for m in self._learners:
            s = m.state_dict()
            s.pop("config")
            members.append(s)
        return {
            "config": self.config(),
            "model": members,
            "weights": snapshot(self._weights),
            "n_learned": self._n_learned,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (all or nothing: the members are restored aside, then swapped in).

        Raises
        ------
        SchemaMismatchError
            The state was made with other members, features, task or classes, or does not fit.
        """
        theirs = self._check_compatible(state)
        seed = int(theirs.get("seed", self.seed))
        fresh = [self._member(k, spec) for k, spec in enumerate(self.members)]
        for k, (member, mstate) in enumerate(zip(fresh, state["model"])):
            # The saver's seed: a minibatch member continues its shuffling stream.
            config = {**member.config(), "seed": seed + k}
            member.load_state_dict({**mstate, "config": config})
        weights = torch.as_tensor(state["weights"], dtype=torch.float64).to(self._device)
        if weights.shape != (len(self.members),):
            raise SchemaMismatchError(f"hedge state has weights of shape {tuple(weights.shape)}")
        self._learners, self._weights = fresh, weights.clone()
        self._n_learned = int(state.get("n_learned", 0))

    def _check_compatible(self, state: Mapping[str, Any]) -> Mapping[str, Any]:
        if not isinstance(state, Mapping) or not {"config", "model", "weights"} <= set(state):
            raise SchemaMismatchError(
                "hedge state must be a dict with config, model and weights (as HedgeLearner.state_dict returns)"
            )
        theirs, ours = state["config"], self.config()
        if not isinstance(theirs, Mapping) or theirs.get("format") != HEDGE_FORMAT:
            raise SchemaMismatchError(f"hedge state of an unknown format; this version reads {HEDGE_FORMAT}")
        diffs = [
            f"{k}: state has {theirs.get(k)!r}, learner has {ours[k]!r}"
            for k in ("task", "n_features", "n_classes")
            if theirs.get(k) != ours[k]
        ]
        members = theirs.get("members") or []
        shape = [[canonical(m.get(k)) for k in _MEMBER_COMPAT] for m in members]
        if shape != [[canonical(m[k]) for k in _MEMBER_COMPAT] for m in ours["members"]]:
            diffs.append(f"members: state has {members!r}, learner has {ours['members']!r}")
        if len(state["model"]) != len(self.members):
            diffs.append(f"state holds {len(state['model'])} member states")
        if diffs:
            raise SchemaMismatchError(
                "hedge state does not fit this learner (" + "; ".join(diffs) + "); configure the "
                "ensemble like the one that saved the state, or start from a fresh checkpoint/model"
            )
        return theirs

    # --------------------------------------------------------------- clone
    def get_params(self) -> dict:
        """The constructor arguments."""
        return {
            "members": [dict(m) for m in self.members],
            "n_features": self.n_features,
            "task": self.task,
            "n_classes": self.n_classes,
            "eta": self.eta,
            "share": self.share,
            "device": self.device,
            "seed": self.seed,
        }

    def clone(self) -> HedgeLearner:
        """A fresh, untrained ensemble with the same configuration (and seed)."""
        return HedgeLearner(**self.get_params())

    def __repr__(self) -> str:
        return (
            f"HedgeLearner({len(self.members)} members, n_features={self.n_features}, task={self.task!r}, "
            f"eta={self.eta}, share={self.share}, device={str(self._device)!r})"
        )
