"""The model zoo: tabular PyTorch models selected by a config string.

Learners never hold a model *class* or a live model as configuration; they
hold a factory ``(n_features, n_outputs) -> nn.Module`` (see
:func:`model_factory`), so cloning, rollback and a full retrain can build a
fresh, identically shaped model at any time.

========  ==========================================================  ==========================
name      architecture                                                keyword arguments
========  ==========================================================  ==========================
logistic  one ``Linear`` (logistic / softmax / linear regression)      (only ``standardize``, ``layout``)
mlp       ``Linear`` + ReLU per hidden layer, then a ``Linear`` head   ``hidden=(64, 64)``,
                                                                      ``dropout=0.0``
resmlp    input projection, ``n_blocks`` pre-norm residual blocks      ``width=64``,
          (LayerNorm, Linear, GELU, Linear), LayerNorm + head          ``n_blocks=2``,
                                                                      ``expansion=2``,
                                                                      ``dropout=0.0``
========  ==========================================================  ==========================

Every model takes ``layout=None``: a feature layout
(:meth:`~stream.core.features.schema.FeatureSchema.layout`) makes its first
layer a :class:`~learners.neural.feature_input.FeatureInput` (missing values,
embedding tables) reading ``n_features`` = the layout's encoded width.
Without one, every model takes ``standardize=True``: its first layer is an
:class:`~learners.neural.standardize.InputStandardizer` whose running feature
statistics are buffers, so they are checkpointed, published and served with
the weights; :class:`~learners.neural.learner.TorchLearner` updates them once
per arriving micro-batch. ``standardize=False`` feeds raw features.

Dropout draws from torch's global RNG, so a learner with ``dropout > 0`` is
reproducible only when the caller seeds that RNG; the defaults are 0.

Examples
--------
>>> model = build_model("mlp", n_features=4, n_outputs=3, hidden=(8,))
>>> model
MLP(
  (scaler): InputStandardizer(n_features=4)
  (net): Sequential(
    (0): Linear(in_features=4, out_features=8, bias=True)
    (1): ReLU()
    (2): Linear(in_features=8, out_features=3, bias=True)
  )
)
>>> sorted(MODELS)
['logistic', 'mlp', 'resmlp']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from learners.neural.feature_input import FeatureInput, layout_width
from learners.neural.standardize import InputStandardizer
from stream.core.errors import ConfigError

__all__ = ["MODELS", "ModelFactory", "build_model", "model_factory", "register_model"]

#: name -> builder ``(n_features, n_outputs, **kwargs) -> nn.Module``
MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a builder ``(n_features, n_outputs, **kwargs) -> nn.Module`` to :data:`MODELS`.

    Raises
    ------
    ConfigError
        ``name`` is already registered.
    """

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ConfigError(f"model name {name!r} is already registered")
        MODELS[name] = builder
        return builder

    return deco


# -------------------------------------------------------------------- models
def _input_layer(
    n_features: int, standardize: bool, layout: Mapping[str, Any] | None
) -> tuple[nn.Module, int]:
    """The input layer and its output width: a :class:`FeatureInput` for a layout, else a standardiser."""
    if layout is not None:
        layer = FeatureInput(layout, standardize=standardize)
        if layer.in_features != n_features:
            raise ConfigError(
                f"n_features is {n_features} but the feature layout encodes {layer.in_features} columns "
                f"({layer.n_numeric} numeric + the tables' codes); build the model for the schema's width"
            )
        return layer, layer.out_features
    # Identity has no state, so a model without standardisation keeps the
    # same state_dict keys as before the option existed.
    return (InputStandardizer(n_features) if standardize else nn.Identity()), n_features


class Logistic(nn.Module):
    """One affine map; with softmax cross-entropy it is multinomial logistic regression."""

    def __init__(
        self, n_features: int, n_outputs: int, standardize: bool = True, layout: Mapping | None = None
    ) -> None:
        super().__init__()
        self.scaler, width = _input_layer(n_features, standardize, layout)
        self.linear = nn.Linear(width, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.scaler(x))


class MLP(nn.Module):
    """A plain ReLU multilayer perceptron."""

    def __init__(
        self,
        n_features: int,
        n_outputs: int,
        hidden: Sequence[int] = (64, 64),
        dropout: float = 0.0,
        standardize: bool = True,
        layout: Mapping | None = None,
    ) -> None:
        super().__init__()
        self.scaler, width = _input_layer(n_features, standardize, layout)
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.scaler(x))


class ResidualBlock(nn.Module):
    """``x + W2 · GELU(W1 · LayerNorm(x))`` (pre-norm, as in transformer MLP blocks)."""

    def __init__(self, width: int, expansion: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width * expansion)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc2 = nn.Linear(width * expansion, width)
        # Zero-init the output projection: every block starts as the identity,
        # so a deep stack trains as stably as a shallow one from the first batch.
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.drop(self.act(self.fc1(self.norm(x)))))


class ResMLP(nn.Module):
    """A residual MLP for tabular data: projection, residual blocks, normed head."""

    def __init__(
        self,
        n_features: int,
        n_outputs: int,
        width: int = 64,
        n_blocks: int = 2,
        expansion: int = 2,
        dropout: float = 0.0,
        standardize: bool = True,
        layout: Mapping | None = None,
    ) -> None:
        super().__init__()
        self.scaler, in_width = _input_layer(n_features, standardize, layout)
        self.proj = nn.Linear(in_width, width)
        self.blocks = nn.Sequential(*(ResidualBlock(width, expansion, dropout) for _ in range(n_blocks)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.proj(self.scaler(x)))))


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def _dropout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"dropout must be a number in [0, 1), got {value!r}")
    return float(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


@register_model("logistic")
def _build_logistic(
    n_features: int, n_outputs: int, standardize: bool = True, layout: Mapping | None = None
) -> nn.Module:
    return Logistic(n_features, n_outputs, standardize=_flag("standardize", standardize), layout=layout)


@register_model("mlp")
def _build_mlp(
    n_features: int,
    n_outputs: int,
    hidden: Sequence[int] = (64, 64),
    dropout: float = 0.0,
    standardize: bool = True,
    layout: Mapping | None = None,
) -> nn.Module:
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise ConfigError(f"mlp hidden must be a sequence of layer widths, got {hidden!r}")
    hidden = tuple(_positive("mlp hidden layer width", h) for h in hidden)
    return MLP(
        n_features,
        n_outputs,
        hidden=hidden,
        dropout=_dropout(dropout),
        standardize=_flag("standardize", standardize),
        layout=layout,
    )


@register_model("resmlp")
def _build_resmlp(
    n_features: int,
    n_outputs: int,
    width: int = 64,
    n_blocks: int = 2,
    expansion: int = 2,
    dropout: float = 0.0,
    standardize: bool = True,
    layout: Mapping | None = None,
) -> nn.Module:
    return ResMLP(
        n_features,
        n_outputs,
        width=_positive("resmlp width", width),
        n_blocks=_positive("resmlp n_blocks", n_blocks) if n_blocks else 0,
        expansion=_positive("resmlp expansion", expansion),
        dropout=_dropout(dropout),
        standardize=_flag("standardize", standardize),
        layout=layout,
    )


# ----------------------------------------------------------------- factories
def _builder(name: str) -> Callable[..., nn.Module]:
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}") from None


def build_model(name: str, n_features: int, n_outputs: int, **kwargs: Any) -> nn.Module:
    """Build the zoo model ``name`` for ``n_features`` inputs and ``n_outputs`` outputs.

    Parameters are initialised from torch's global RNG (wrap the call in
    ``torch.random.fork_rng`` + ``torch.manual_seed`` for a seeded model, as
    :class:`~learners.neural.learner.TorchLearner` does).

    Raises
    ------
    ConfigError
        Unknown ``name`` (the message lists the known ones), a keyword the
        model does not take, or an invalid size.

    Examples
    --------
    >>> build_model("logistic", 3, 2, standardize=False)
    Logistic(
      (scaler): Identity()
      (linear): Linear(in_features=3, out_features=2, bias=True)
    )
    >>> build_model("cnn", 3, 2)
    Traceback (most recent call last):
    ...
    stream.core.errors.ConfigError: unknown model 'cnn'; choose one of: logistic, mlp, resmlp
    """
    builder = _builder(name)
    _positive("n_features", n_features)
    _positive("n_outputs", n_outputs)
    try:
        return builder(n_features, n_outputs, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r} does not accept {sorted(kwargs)}: {exc}") from exc


@dataclass(frozen=True)
class ModelFactory:
    """A named zoo model with fixed keyword arguments, callable as ``(n_features, n_outputs)``.

    Plain data (a name and a dict), so it is cheap to copy, compares by
    value, can be recorded in a config and never captures a live model.

    Examples
    --------
    >>> make = ModelFactory("resmlp", {"width": 16, "n_blocks": 1})
    >>> make(5, 2).head
    Linear(in_features=16, out_features=2, bias=True)
    """

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _builder(self.name)
        object.__setattr__(self, "kwargs", dict(self.kwargs))

    def __call__(self, n_features: int, n_outputs: int) -> nn.Module:
        return build_model(self.name, n_features, n_outputs, **self.kwargs)


def model_factory(name: str, **kwargs: Any) -> ModelFactory:
    """A factory ``(n_features, n_outputs) -> nn.Module`` for the zoo model ``name``.

    The name and keyword arguments are checked now, by building a tiny
    instance under a forked RNG, so a typo fails at configuration time.

    Raises
    ------
    ConfigError
        Unknown ``name`` or invalid keyword arguments.

    Examples
    --------
    >>> make = model_factory("mlp", hidden=(32,))
    >>> make(10, 2)(torch.zeros(4, 10)).shape
    torch.Size([4, 2])
    """
    factory = ModelFactory(name, kwargs)
    layout = kwargs.get("layout")
    with torch.random.fork_rng(devices=[]):
        if layout is None:
            factory(1, 1)
        else:  # on the meta device: a check must not allocate the embedding tables
            with torch.device("meta"):
                factory(layout_width(layout), 1)
    return factory
