"""Test-then-train inside a micro-batch: predict a chunk, learn it, move on to the next.

A window of 500 events predicted by the model as it was before the window
serves every row a prediction up to 500 events stale: streams whose labels
follow their recent past (prices, sensors, sessions) lose what a per-sample
learner gets from the last few rows. :func:`learn_in_chunks` cuts the batch
into chunks of ``learner.score_chunk`` rows; each chunk is predicted by the
model already updated on the chunks before it, then learned exactly as
:meth:`~learners.neural.learner.TorchLearner.learn_batch` learns a batch
(input statistics, plugins, ``steps_per_batch``/``minibatch_size`` steps).
Every prediction is still made before its row is learned: prequential.

No host sync inside the loop: the batch is checked on the host and moved
to the device once, chunks are device slices, the predictions and losses
stay on the device and come back in one transfer at the end. Deterministic
under the learner's seed (minibatch shuffling is seeded by events learned).

Examples
--------
>>> import numpy as np
>>> from learners.neural.learner import TorchLearner
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(512, 2)).astype(np.float32)
>>> y = (X[:, 0] > 0).astype(np.int64)
>>> chunked = TorchLearner(n_features=2, lr=0.1, device="cpu", score_chunk=32)
>>> whole = TorchLearner(n_features=2, lr=0.1, device="cpu")
>>> hits = (chunked.learn_prequential(X, y).prediction == y).mean()
>>> bool(hits > (whole.predict_batch(X) == y).mean())  # 16 updates inside the batch, not 0
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from learners.base import LearnReport, Prequential

__all__ = ["learn_in_chunks"]


def learn_in_chunks(learner: Any, X: np.ndarray, y: np.ndarray, *, proba: bool = False) -> Prequential:
    """Predict then learn ``X, y`` chunk by chunk; every row's prediction, made before its chunk was learned.

    ``learner`` is a :class:`~learners.neural.learner.TorchLearner` (not
    imported here: it calls this module).

    ``learner.score_chunk=None`` is one chunk: the whole batch predicted,
    then learned (what the engine does without chunking). The report's loss
    is the mean over the chunks of each chunk's first-step data loss (an
    unread 0-d device tensor). ``proba`` also returns the class
    probabilities behind the predictions (classification only).

    Raises
    ------
    ValueError
        As :meth:`~learners.neural.learner.TorchLearner.learn_batch`.
    """
    X0, y0 = learner.checked_tensors(X, y)
    learner.remember_recent(X0, y0)
    n = X0.shape[0]
    if n:
        # The window's features have all arrived: its input statistics are
        # known before any of its rows is predicted (no label is used), and
        # one update per batch costs a fraction of one per chunk.
        learner.update_scalers(X0)
    classify = learner.task == "classification"
    chunk = learner.score_chunk or max(n, 1)
    outs: list[torch.Tensor] = []
    losses: list[torch.Tensor] = []
    for start in range(0, n, chunk):
        Xc, yc = X0[start : start + chunk], y0[start : start + chunk]
        outs.append(learner.forward(Xc))  # before learning it: the chunk's prequential prediction
        losses.append(learner.learn_tensors(Xc, yc, scaled=True))
    if not outs:
        empty = np.zeros(0, np.int64 if classify else np.float32)
        probs = np.zeros((0, learner.n_classes), np.float32) if proba and classify else None
        return Prequential(prediction=empty, proba=probs, report=LearnReport(n_samples=0, loss=None))
    out = torch.cat(outs)
    loss = torch.stack(losses).mean() if len(losses) > 1 else losses[0]
    probs = None
    if classify:
        pred = out.argmax(dim=-1)
        if proba:
            # One transfer: the class index rides as an extra float column (exact below 2**24).
            both = torch.cat([torch.softmax(out, dim=-1), pred.unsqueeze(-1).float()], dim=-1).cpu().numpy()
            probs, pred_host = np.ascontiguousarray(both[:, :-1]), both[:, -1].astype(np.int64)
        else:
            pred_host = pred.cpu().numpy()
    else:
        pred_host = out.squeeze(-1).cpu().numpy()
    return Prequential(prediction=pred_host, proba=probs, report=LearnReport(n_samples=n, loss=loss))
