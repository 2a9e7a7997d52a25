"""Shadow versions: loaded beside the served one and scored on the same rows, off the response path.

``streamlearn serve --shadow 9`` keeps version 9 loaded in a :class:`ShadowModels`;
the prediction log's thread (:mod:`serving.api.prediction_log`) calls
:func:`score_shadows` on each batch of answered rows before it writes them, so
what version 9 would have answered lands in each logged record's ``shadow``
field and no request waits for it. A version that cannot be loaded now (the
registry is down) is retried by the log thread at most every ``retry_s``.

Examples
--------
>>> from learners.neural.learner import TorchLearner
>>> from serving.api.model import ServedModel
>>> from serving.registry.versions import Version
>>> shadow = ServedModel.from_state(Version(number=9), TorchLearner(n_features=2, device="cpu").state_dict())
>>> answers, failed = score_shadows([[0.5, 1.0], [1.0, 2.0], [1.0]], [shadow])
>>> sorted(answers[0]), answers[2], failed  # the third row does not fit version 9
([9], {}, 1)
>>> len(answers[0][9].probabilities), answers[0][9].classes
(2, None)
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

from serving.api.inputs import rows_to_matrix
from serving.api.model import ServedModel
from serving.registry.base import ModelRegistry
from stream.core.errors import RegistryError
from stream.core.feedback import ShadowAnswer

log = logging.getLogger(__name__)

__all__ = ["ShadowModels", "score_shadows"]

_ROWS = ("body", "rows")


class ShadowModels:
    """The shadow versions, loaded from ``registry``; call it for those loaded so far.

    Loading happens in the caller's thread: :meth:`load_missing` at start, and
    ``__call__`` (from the prediction log's thread) for the ones still missing,
    at most every ``retry_s``.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        versions: Sequence[int],
        *,
        device: str = "cpu",
        retry_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry, self.versions, self.device = registry, tuple(versions), device
        self.retry_s, self.clock = retry_s, clock
        self.loaded: dict[int, ServedModel] = {}
        self.errors: dict[int, str] = {}
        self._next_try = 0.0

    def load_missing(self) -> None:
        """Try to load every version not loaded yet; failures are kept in :attr:`errors` and logged."""
        self._next_try = self.clock() + self.retry_s
        for number in self.versions:
            if number in self.loaded:
                continue
            try:
                self.loaded[number] = ServedModel.load(self.registry, number, device=self.device)
                self.errors.pop(number, None)
            except RegistryError as exc:  # unreachable, unknown, weights gone: retried later
                if self.errors.get(number) != str(exc):
                    log.warning("shadow version %d is not loaded: %s", number, exc)
                self.errors[number] = str(exc)

    def __call__(self) -> list[ServedModel]:
        if len(self.loaded) < len(self.versions) and self.clock() >= self._next_try:
            self.load_missing()
        return list(self.loaded.values())


def _answers(model: ServedModel, rows: Sequence[Any]) -> list[ShadowAnswer]:
    """``model``'s answer for each row; raises (422 or any error) when some row does not fit it."""
    X = rows_to_matrix(rows, model, _ROWS)
    predictions, probabilities, classes = model.answers(*model.predict(X))
    if probabilities is None:
        return [ShadowAnswer(p) for p in predictions]
    return [ShadowAnswer(p, q, classes) for p, q in zip(predictions, probabilities)]


def score_shadows(
    rows: Sequence[Any], shadows: Sequence[ServedModel]
) -> tuple[list[dict[int, ShadowAnswer]], int]:
    """Each row's ``{version: answer}`` over ``shadows``, and how many (row, version) pairs failed.

    All rows go through one forward pass per version; if some row does not fit
    a version (another width or feature schema), that version scores the rows
    one by one and leaves out those it cannot answer.
    """
    out: list[dict[int, ShadowAnswer]] = [{} for _ in rows]
    failed = 0
    for model in shadows:
        number = model.version.number
        try:
            answers = _answers(model, rows)
        except Exception:  # noqa: BLE001 -- a row it cannot take: find which, below
            answers = []
            for row in rows:
                try:
                    answers.append(_answers(model, [row])[0])
                except Exception:  # noqa: BLE001 -- this row is not for this version
                    answers.append(None)
                    failed += 1
        for row_answers, answer in zip(out, answers):
            if answer is not None:
                row_answers[number] = answer
    return out, failed
