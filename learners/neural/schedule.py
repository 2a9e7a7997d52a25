"""How much compute a :class:`~learners.neural.learner.TorchLearner` spends beyond one step per update.

Two levers, both counted in events or steps, never in seconds, so a replay
with the same configuration takes exactly the same steps:

* **young steps**: while the model is young -- its first ``young_events``
  events, and again for ``young_events`` after each *adapt* decision of the
  drift policy (the world changed) -- every update takes ``young_steps``
  optimizer steps instead of ``steps_per_batch``. A fresh network needs many
  updates to reach the concept; a settled one needs few.
* **rehearsal**: :meth:`~learners.neural.learner.TorchLearner.rehearse` takes
  ``rehearse_steps`` extra steps on shuffled ``rehearse_rows``-row samples of
  the latest learned batch (mixed with a replay buffer's rows when one is
  configured). The engine calls it when it has time to spare: after each batch
  while the source is caught up in ``run``, after every batch in ``replay``
  (:class:`~stream.engine.config.EngineConfig` ``rehearse``). Rehearsal
  learns no new event: ``n_learned``, the input statistics and the replay
  buffer are unchanged.

Measured on bench/quality.py's streams (docs/learners.md): young steps
lift short streams and the first rows after a drift (ImageSegments +0.05,
Bananas +0.02); rehearsal adds 0.005-0.035 on noisy and gradual streams at
~8% of the learning time per 8 steps.

>>> Schedule(young_events=1000, young_steps=4).steps(1, n_learned=10, young_until=1000)
4
>>> Schedule(young_events=1000, young_steps=4).steps(1, n_learned=1000, young_until=1000)
1
>>> Schedule(rehearse_steps=-1)
Traceback (most recent call last):
...
stream.core.errors.ConfigError: rehearse_steps must be an integer >= 0, got -1
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np
import torch

from stream.core.errors import ConfigError

__all__ = ["Schedule"]


@dataclass(frozen=True)
class Schedule:
    """Extra steps while young and rehearsal steps after a batch (all off by default)."""

    young_events: int = 0
    young_steps: int = 1
    rehearse_steps: int = 0
    rehearse_rows: int = 128

    def __post_init__(self) -> None:
        for name, low in (
            ("young_events", 0),
            ("young_steps", 1),
            ("rehearse_steps", 0),
            ("rehearse_rows", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")

    def steps(self, steps_per_batch: int, *, n_learned: int, young_until: int) -> int:
        """Optimizer steps for the next update: ``young_steps`` (if more) while ``n_learned < young_until``."""
        if n_learned < young_until:
            return max(steps_per_batch, self.young_steps)
        return steps_per_batch

    def rehearsal_samples(
        self, X: torch.Tensor, y: torch.Tensor, *, key: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``rehearse_steps`` samples of ``rehearse_rows`` rows of ``X, y``, shuffled by a generator seeded with ``key``.

        The learner's key is (seed, events learned): the same run takes the same
        samples. The latest batch is not checkpointed: after a restore,
        rehearsal resumes with the next batch.

        >>> X, y = torch.arange(10.0).reshape(5, 2), torch.arange(5)
        >>> [len(s) for s, _ in Schedule(rehearse_steps=2, rehearse_rows=3).rehearsal_samples(X, y, key=1)]
        [3, 3]
        """
        gen = torch.Generator(device=X.device).manual_seed(int(key))
        n = X.shape[0]
        rows = min(self.rehearse_rows, n)
        for _ in range(self.rehearse_steps):
            idx = torch.randperm(n, device=X.device, generator=gen)[:rows]
            yield X[idx], y[idx]

    def to_dict(self) -> dict:
        """Plain ints, for a learner's config."""
        return {k: int(v) for k, v in asdict(self).items()}
