"""One optimizer for a model with sparse embedding tables: the named optimizer on dense parameters, SparseAdam on the tables.

Adam and AdamW refuse sparse gradients, and giving a table a dense gradient
would make every step cost O(table) however few rows a batch touched.
:class:`SplitOptimizer` steps the dense parameters with the configured
optimizer (fused when torch can) and the sparse tables with
``torch.optim.SparseAdam``, whose step reads and writes only the rows used.
SGD takes sparse gradients itself, so ``sgd`` needs no split.

It offers what the learner and the full retrain use: ``zero_grad``, ``step``,
``state_dict``/``load_state_dict``, ``param_groups`` (to set the learning
rate) and ``state`` (per-parameter state, read when the output layer grows).

Examples
--------
>>> from torch import nn
>>> model = nn.ModuleDict({"emb": nn.Embedding(10, 2, sparse=True), "lin": nn.Linear(2, 1)})
>>> sorted(sparse_param_names(model))
['emb.weight']
>>> opt = SplitOptimizer(torch.optim.Adam([model["lin"].weight, model["lin"].bias], lr=0.1),
...                      torch.optim.SparseAdam([model["emb"].weight], lr=0.1))
>>> model["lin"](model["emb"](torch.tensor([1, 3]))).sum().backward()
>>> opt.step(); opt.zero_grad(set_to_none=True)
>>> len(opt.param_groups), sorted(opt.state_dict())
(2, ['dense', 'sparse'])
"""

from __future__ import annotations

from collections import ChainMap
from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["SplitOptimizer", "optimizer_parts", "sparse_param_names"]


def sparse_param_names(module: nn.Module) -> frozenset[str]:
    """Names of the parameters that receive sparse gradients (tables of ``sparse=True`` embeddings)."""
    names = set()
    for prefix, m in module.named_modules():
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse:
            names.add(f"{prefix}.weight" if prefix else "weight")
    return frozenset(names)


class SplitOptimizer:
    """A dense optimizer and a sparse one stepped together; see the module docstring."""

    def __init__(self, dense: torch.optim.Optimizer, sparse: torch.optim.Optimizer) -> None:
        self.dense = dense
        self.sparse = sparse

    @property
    def parts(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        return self.dense, self.sparse

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """Both optimizers' groups (the dicts themselves: setting ``group["lr"]`` sets it)."""
        return self.dense.param_groups + self.sparse.param_groups

    @property
    def state(self) -> ChainMap:
        """Per-parameter state of both (read-only use)."""
        return ChainMap(self.dense.state, self.sparse.state)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.dense.zero_grad(set_to_none=set_to_none)
        self.sparse.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.dense.step()
        self.sparse.step()

    def state_dict(self) -> dict[str, Any]:
        return {"dense": self.dense.state_dict(), "sparse": self.sparse.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; a ``KeyError`` or ``ValueError`` when it is another optimizer's."""
        self.dense.load_state_dict(state["dense"])
        self.sparse.load_state_dict(state["sparse"])

    def __repr__(self) -> str:
        return f"SplitOptimizer(dense={type(self.dense).__name__}, sparse={type(self.sparse).__name__})"


def optimizer_parts(opt: Any) -> tuple[torch.optim.Optimizer, ...]:
    """The torch optimizers inside ``opt`` (itself, or a :class:`SplitOptimizer`'s two)."""
    return opt.parts if isinstance(opt, SplitOptimizer) else (opt,)
