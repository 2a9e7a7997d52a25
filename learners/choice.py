"""Which learner ``streamlearn run`` and ``demo`` build: the configuration behind the learner options.

A frozen, validated description (STYLE 4) of every learner option -- model,
optimizer, continual-learning plugins, a river estimator or an Avalanche
strategy -- that builds a fresh learner for a feature dimension. The engine
needs a builder per dimension because the dimension may be locked only by the
first valid record.

Examples
--------
>>> choice = LearnerChoice(model="mlp", model_options=("hidden=[32]",), minibatch_size=64, ewc_strength=10.0)
>>> learner = choice.factory()(8)
>>> type(learner).__name__, learner.minibatch_size, [type(p).__name__ for p in learner.plugins]
('TorchLearner', 64, ['EWC'])
>>> LearnerChoice(model="river.linear_model.LogisticRegression").factory()(3).n_features
3
>>> hedge = LearnerChoice(model="hedge", model_options=('members=[{"model": "logistic", "lr": 0.05}]', "eta=0.05"))
>>> hedge.kind, len(hedge.factory()(4).members)
('hedge', 1)
>>> LearnerChoice(score_chunk=16).factory()(3).score_chunk
16

With no options, the learner is the best general setting bench/quality.py
found (docs/learners.md): an MLP at lr 0.01, tested-then-trained 32 rows at a
time, with extra steps while young and rehearsal when there is time:

>>> default = LearnerChoice().factory()(3)
>>> default.config()["model"], default.lr, default.score_chunk, default.schedule.young_steps
('mlp', 0.01, 32, 4)
>>> LearnerChoice(model="logistic").factory()(3).lr, LearnerChoice(score_chunk=0).factory()(3).score_chunk
(0.05, None)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from stream.core.errors import ConfigError

__all__ = ["DEFAULT_LR", "DEFAULT_SCORE_CHUNK", "LearnerChoice", "parse_options"]

#: The learning rate of a torch model when ``--lr`` is not given. Logistic regression is convex
#: and wants large steps; a (64, 64) MLP at 0.05 can stall after a drift (LED 0.32 vs 0.67 at 0.01).
DEFAULT_LR = {"logistic": 0.05, "mlp": 0.01, "resmlp": 0.01}
#: Rows per test-then-train chunk of a torch model when ``--score-chunk`` is not given (0: off).
DEFAULT_SCORE_CHUNK = 32


def parse_options(items: tuple[str, ...] | list[str], what: str) -> dict[str, Any]:
    """``("hidden=[64,32]", "dropout=0.1", "mode=online")`` -> a dict; values are JSON, else strings.

    Examples
    --------
    >>> parse_options(("hidden=[64, 32]", "standardize=false", "mode=online"), "--model-option")
    {'hidden': [64, 32], 'standardize': False, 'mode': 'online'}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} takes KEY=VALUE (VALUE as JSON or a bare string), got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def _parse_plugin(item: str) -> tuple[str, dict]:
    name, sep, raw = item.partition(":")
    if not sep:
        return name.strip(), {}
    try:
        kwargs = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"--avalanche-plugin takes NAME or NAME:{{json kwargs}}, got {item!r} ({exc})"
        ) from None
    if not isinstance(kwargs, dict):
        raise ConfigError(f"--avalanche-plugin kwargs must be a JSON object, got {raw!r}")
    return name.strip(), kwargs


@dataclass(frozen=True)
class LearnerChoice:
    """Every learner option of the CLI, validated by building a tiny learner on construction."""

    model: str = "mlp"
    model_options: tuple[str, ...] = ()
    optimizer: str = "adam"
    lr: float | None = None  # None: DEFAULT_LR for the model (0.01 for one not listed)
    steps_per_batch: int = 1
    minibatch_size: int | None = None
    score_chunk: int | None = None  # None: DEFAULT_SCORE_CHUNK for torch models; 0: off
    young_events: int = 1000
    young_steps: int = 4
    rehearse_steps: int = 8
    task: str = "classification"
    #: ``None``: the stream's labels decide (the engine passes the count it has seen to the builder).
    n_classes: int | None = 2
    n_features: int | None = None
    device: str = "auto"
    seed: int = 0
    torch_threads: int = 1
    max_model_mb: float = 1024.0
    ewc_strength: float = 0.0
    ewc_decay: float = 0.9
    ewc_every: int = 50
    replay: str = "none"
    replay_capacity: int = 2000
    replay_mix: float = 1.0
    avalanche: str | None = None
    avalanche_options: tuple[str, ...] = ()
    avalanche_plugins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.torch_threads < 1:
            raise ConfigError("--torch-threads must be at least 1")
        if (
            isinstance(self.max_model_mb, bool)
            or not isinstance(self.max_model_mb, (int, float))
            or not self.max_model_mb > 0
        ):
            raise ConfigError(f"--max-model-mb must be a positive number, got {self.max_model_mb!r}")
        self._build(2)  # fail fast on a bad model/optimizer/strategy, before touching Kafka

    @property
    def kind(self) -> str:
        """``torch``, ``river``, ``avalanche`` or ``hedge``."""
        if self.model.startswith("river."):
            return "river"
        if self.model == "hedge":
            return "hedge"
        return "avalanche" if self.avalanche else "torch"

    def _plugins(self, n_classes: int | None = None):
        from learners.neural.plugins import PluginSpec

        return PluginSpec(
            ewc_strength=self.ewc_strength,
            ewc_decay=self.ewc_decay,
            ewc_every=self.ewc_every,
            replay=self.replay,
            replay_capacity=self.replay_capacity,
            replay_mix=self.replay_mix,
            seed=self.seed,
        ).build(task=self.task, n_classes=(self.n_classes or 2) if n_classes is None else n_classes)

    @property
    def learning_rate(self) -> float:
        """``--lr``, else the model's :data:`DEFAULT_LR`."""
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.model, 0.01)

    def _schedule(self) -> Any:
        from learners.neural.schedule import Schedule

        return Schedule(
            young_events=self.young_events, young_steps=self.young_steps, rehearse_steps=self.rehearse_steps
        )

    def _build(self, n_features: int, *, layout: dict | None = None, n_classes: int | None = None) -> Any:
        kind = self.kind
        n_classes = (self.n_classes or 2) if n_classes is None else n_classes
        model_kwargs = parse_options(self.model_options, "--model-option")
        if layout is not None:
            _check_layout_fits(kind, layout)
            model_kwargs["layout"] = layout
        if kind != "avalanche" and (self.avalanche_options or self.avalanche_plugins):
            raise ConfigError("--avalanche-option/--avalanche-plugin need --avalanche STRATEGY")
        if kind != "torch" and self.score_chunk:
            raise ConfigError(
                "--score-chunk applies to torch models (not --model hedge, --avalanche or a river.* model)"
            )
        if kind == "river":
            from learners.river_adapter.learner import RiverLearner

            if self._plugins() or self.avalanche:
                raise ConfigError(
                    "--ewc-*, --replay and --avalanche apply to torch models, not to river models"
                )
            model_kwargs.pop("layout", None)  # numeric rows: nothing for river to build
            return RiverLearner(
                self.model,
                n_features=n_features,
                task=self.task,
                n_classes=n_classes,
                model_kwargs=model_kwargs or None,
            )
        if kind == "hedge":
            return self._build_hedge(n_features, model_kwargs, n_classes)
        if kind == "avalanche":
            from learners.avalanche_adapter.learner import AvalancheLearner

            if self._plugins():
                raise ConfigError(
                    "--ewc-* and --replay are streamlearn's own plugins; with --avalanche use its "
                    "strategies (EWC, Replay, ...) or --avalanche-plugin"
                )
            if self.task != "classification":
                raise ConfigError("Avalanche strategies are for classification (--task classification)")
            return AvalancheLearner(
                self.avalanche,
                self.model,
                n_features=n_features,
                n_classes=n_classes,
                strategy_kwargs=parse_options(self.avalanche_options, "--avalanche-option"),
                plugins=[_parse_plugin(p) for p in self.avalanche_plugins],
                optimizer=self.optimizer,
                lr=self.learning_rate,
                train_epochs=self.steps_per_batch,
                minibatch_size=self.minibatch_size,
                model_kwargs=model_kwargs or None,
                device=self.device,
                seed=self.seed,
            )
        from learners.neural.learner import TorchLearner

        self._check_budget([(self.model, model_kwargs, self.optimizer)], n_features, n_classes)
        return TorchLearner(
            model=self.model,
            n_features=n_features,
            task=self.task,
            n_classes=n_classes,
            optimizer=self.optimizer,
            lr=self.learning_rate,
            steps_per_batch=self.steps_per_batch,
            minibatch_size=self.minibatch_size,
            score_chunk=DEFAULT_SCORE_CHUNK if self.score_chunk is None else (self.score_chunk or None),
            schedule=self._schedule(),
            device=self.device,
            seed=self.seed,
            model_kwargs=model_kwargs or None,
            plugins=self._plugins(n_classes),
        )

    def _check_budget(self, models: list[tuple[str, dict, str]], n_features: int, n_classes: int) -> None:
        """Raise :class:`ConfigError` when the torch models ``(name, kwargs, optimizer)`` exceed ``max_model_mb``."""
        from learners.neural.budget import model_megabytes
        from learners.neural.models import ModelFactory

        n_outputs = n_classes if self.task == "classification" else 1
        sizes = [model_megabytes(ModelFactory(m, kw), n_features, n_outputs, opt) for m, kw, opt in models]
        params_mb, state_mb = sum(p for p, _ in sizes), sum(o for _, o in sizes)
        if params_mb + state_mb > self.max_model_mb:
            raise ConfigError(
                f"the model needs {params_mb + state_mb:,.0f} MB ({params_mb:,.0f} MB of parameters + "
                f"{state_mb:,.0f} MB of optimizer state) but --max-model-mb is {self.max_model_mb:g}; use fewer "
                "buckets or a smaller dim in the feature schema, or raise --max-model-mb"
            )

    def _build_hedge(self, n_features: int, options: dict[str, Any], n_classes: int) -> Any:
        from learners.hedge.learner import HedgeLearner
        from learners.hedge.members import check_members

        if self._plugins() or self.avalanche:
            raise ConfigError("--ewc-*, --replay and --avalanche apply to torch models, not to --model hedge")
        layout = options.pop("layout", None)
        unknown = set(options) - {"members", "eta", "share"}
        if unknown:
            raise ConfigError(
                f"--model hedge takes --model-option members=[...], eta=..., share=...; unknown: {sorted(unknown)}"
            )
        # Each member sets its own lr, steps and optimizer: say so rather than ignore the options.
        defaults = LearnerChoice.__dataclass_fields__
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("lr", "steps_per_batch", "minibatch_size", "optimizer")
            if getattr(self, name) != defaults[name].default
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)} do(es) not apply to --model hedge: each member sets its own, e.g. "
                '--model-option \'members=[{"model": "mlp", "lr": 0.01, "steps": 4}]\''
            )
        members = check_members(options.get("members"))
        if layout is not None:  # every member reads the named features through its own FeatureInput
            members = tuple(
                {**m, "model_kwargs": {**(m["model_kwargs"] or {}), "layout": layout}} for m in members
            )
        self._check_budget(
            [(m["model"], m["model_kwargs"] or {}, m["optimizer"]) for m in members], n_features, n_classes
        )
        return HedgeLearner(
            members,
            n_features=n_features,
            task=self.task,
            n_classes=n_classes,
            eta=options.get("eta", 0.02),
            share=options.get("share", 1e-4),
            device=self.device,
            seed=self.seed,
        )

    def factory(self) -> Callable[..., Any]:
        """A builder ``(n_features, *, layout=None, n_classes=None) -> learner``; sets torch's CPU threads.

        ``layout``: the feature schema's :meth:`~stream.core.features.schema.FeatureSchema.layout`
        (torch models read it through a :class:`~learners.neural.feature_input.FeatureInput`);
        ``n_classes``: the class count to build for (``None``: the choice's own), e.g.
        a checkpoint's after its classes grew. The thread count is a process-wide setting.
        """
        import torch

        torch.set_num_threads(self.torch_threads)
        return self._build


#: Why a river or Avalanche learner cannot take a layout with embedding tables.
_NEEDS_TORCH = {
    "river": "river.* models take numeric rows",
    "avalanche": "Avalanche strategies train with a dense optimizer",
}


def _check_layout_fits(kind: str, layout: dict) -> None:
    """Raise :class:`ConfigError` when learners of ``kind`` cannot read a feature ``layout``."""
    from learners.neural.feature_input import check_layout

    _, tables = check_layout(layout)
    if tables and kind in _NEEDS_TORCH:
        raise ConfigError(
            f"{_NEEDS_TORCH[kind]}; a feature schema with categorical/text fields needs a torch model "
            "(mlp, logistic, resmlp) without --avalanche"
        )
