"""Any river classifier or regressor behind the :class:`~learners.base.Learner` contract.

:class:`RiverLearner` feeds micro-batches to a river estimator: a
``learn_one`` loop over the rows (as dicts keyed by ``feature_names``), or, on
request, one ``learn_many`` call for river's mini-batch learners (needs pandas).
Its state is the estimator's whole object graph as plain data
(:mod:`learners.river_adapter.state`, no pickle), so a river model checkpoints, rolls
back and publishes like a :class:`~learners.neural.learner.TorchLearner`.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.uniform(0, 10, size=(600, 3)).astype(np.float32)
>>> y = (X[:, 0] + X[:, 1] > 8).astype(np.int64)          # a SEA-like concept
>>> learner = RiverLearner("river.tree.HoeffdingTreeClassifier", n_features=3,
...                        model_kwargs={"grace_period": 50})
>>> report = learner.learn_batch(X[:500], y[:500])
>>> report.n_samples, learner.n_learned
(500, 500)
>>> bool((learner.predict_batch(X[500:]) == y[500:]).mean() > 0.8)
True
>>> learner.predict_proba_batch(X[:2]).shape
(2, 2)
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import re
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
from river import base as river_base

from learners.base import LearnReport
from learners.inputs import check_features, check_targets
from learners.river_adapter.state import from_plain, to_plain
from stream.core.errors import ConfigError, SchemaMismatchError

__all__ = ["STATE_FORMAT", "RiverLearner", "resolve_model_spec"]

STATE_FORMAT = 1

_TASKS = ("classification", "regression")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Config entries a state must match to load. The spec may differ (two
# factories can build one estimator class): the state carries the estimator's
# hyper-parameters along with what it learned.
_COMPAT_KEYS = ("task", "n_features", "n_classes", "feature_names", "estimator")
_EPS = 1e-15  # log-loss clip, as river.metrics.LogLoss


def resolve_model_spec(spec: str) -> type:
    """The river estimator class named ``"river.<module>.<Class>"``; nothing outside ``river.`` is imported.

    Raises
    ------
    ConfigError
        ``spec`` is outside ``river.``, cannot be imported, or is not a
        ``river.base.Estimator`` class.

    Examples
    --------
    >>> resolve_model_spec("river.forest.ARFClassifier").__name__
    'ARFClassifier'
    >>> resolve_model_spec("os.system")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stream.core.errors.ConfigError: model spec 'os.system' is not a river estimator; use a name under river., e.g. ...
    """
    hint = (
        f"model spec {spec!r} is not a river estimator; use a name under river., e.g. "
        "'river.linear_model.LogisticRegression', 'river.tree.HoeffdingAdaptiveTreeClassifier' or "
        "'river.forest.ARFClassifier', or pass a factory (lambda: Model(...))"
    )
    parts = spec.split(".")
    if len(parts) < 3 or parts[0] != "river" or not all(_IDENT.match(p) for p in parts):
        raise ConfigError(hint)
    try:
        cls = getattr(importlib.import_module(".".join(parts[:-1])), parts[-1], None)
    except ImportError as exc:
        raise ConfigError(f"{hint} ({exc})") from None
    if not isinstance(cls, type) or not issubclass(cls, river_base.Estimator):
        raise ConfigError(hint)
    return cls


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return isinstance(value, Mapping) and all(isinstance(k, str) and _is_plain(v) for k, v in value.items())


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


class RiverLearner:
    """A river estimator as an incremental micro-batch learner.

    Parameters
    ----------
    model_factory
        A zero-argument callable returning a *new* river classifier or
        regressor (``lambda: forest.ARFClassifier(seed=0)``; :meth:`clone`
        calls it again), or a spec ``"river.<module>.<Class>"`` built with
        ``model_kwargs``.
    n_features
        Input dimension (keyword-only, required).
    task
        ``"classification"`` (int class indices ``0..n_classes-1``) or
        ``"regression"`` (float targets).
    n_classes
        Number of classes (classification only). More than 2 needs a
        multiclass model (trees, forests, naive Bayes, or
        ``multiclass.OneVsRestClassifier`` around a binary one).
    feature_names
        The dict keys river sees, one per column (default ``x0, x1, ...``).
    model_kwargs
        Keyword arguments for a spec (plain data: they are recorded in the
        state's config).
    report_loss
        Report the prequential (test-then-train) loss of each batch: mean log
        loss or squared error of the prediction made just before each row is
        learned. It costs one ``predict_proba_one``/``predict_one`` per row;
        ``False`` reports ``loss=None``.
    mini_batch
        ``False`` (default): a ``learn_one`` loop. ``True``: one
        ``learn_many`` call per batch (needs pandas and a river mini-batch
        model). ``None``: ``learn_many`` when both are there, else the loop.
        Opt-in because it changes what is learned, not just how fast: a
        linear model takes one gradient step per batch instead of one per
        row (about 3.5x the rows/s for LogisticRegression at 1000-row
        batches, but a LinearRegression fed 100-row batches learns far less
        per row).

    Raises
    ------
    ConfigError
        Any argument is invalid (the message says which and why).

    Examples
    --------
    >>> from river import forest
    >>> learner = RiverLearner(lambda: forest.ARFClassifier(n_models=3, seed=1), n_features=2, n_classes=3)
    >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]], np.float32)
    >>> learner.learn_batch(X, np.array([0, 1, 2])).n_samples
    3
    >>> learner.predict_batch(X).dtype, learner.predict_proba_batch(X).shape
    (dtype('int64'), (3, 3))
    """

    def __init__(
        self,
        model_factory: str | Callable[[], Any],
        *,
        n_features: int,
        task: Literal["classification", "regression"] = "classification",
        n_classes: int = 2,
        feature_names: Sequence[str] | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        report_loss: bool = True,
        mini_batch: bool | None = False,
    ) -> None:
        self.model_factory = model_factory
        self.n_features = n_features
        self.task = task
        self.n_classes = n_classes
        self.feature_names = feature_names
        self.model_kwargs = dict(model_kwargs) if model_kwargs is not None else None
        self.report_loss = report_loss
        self.mini_batch = mini_batch

        if not _is_int(n_features) or n_features < 1:
            raise ConfigError(f"n_features must be a positive integer, got {n_features!r}")
        if task not in _TASKS:
            raise ConfigError(f"task must be one of {_TASKS}, got {task!r}")
        if task == "classification" and (not _is_int(n_classes) or n_classes < 2):
            raise ConfigError(f"n_classes must be an integer >= 2 for classification, got {n_classes!r}")
        names = tuple(f"x{i}" for i in range(n_features)) if feature_names is None else feature_names
        if (
            isinstance(names, str)
            or len(names) != n_features
            or len(set(names)) != n_features
            or not all(isinstance(n, str) for n in names)
        ):
            raise ConfigError(f"feature_names must be {n_features} distinct strings, got {feature_names!r}")
        if self.model_kwargs is not None and not (
            isinstance(model_factory, str) and _is_plain(self.model_kwargs)
        ):
            raise ConfigError(
                "model_kwargs apply only to a spec string and must be plain data (numbers, strings, "
                "lists); for anything else bake the arguments into a factory: lambda: Model(...)"
            )
        if mini_batch not in (None, True, False) or report_loss not in (True, False):
            raise ConfigError(
                f"mini_batch must be None/True/False and report_loss a bool, "
                f"got {mini_batch!r} and {report_loss!r}"
            )

        self._keys = tuple(names)
        self._classify = task == "classification"
        self._factory, self._spec = self._make_factory(model_factory, self.model_kwargs)
        self._model = self._build()
        self._estimator = f"{type(self._model).__module__}:{type(self._model).__qualname__}"
        self._mini_batch = self._use_mini_batch(mini_batch)
        self._n_learned = 0

    # ------------------------------------------------------------ building
    @staticmethod
    def _make_factory(model: Any, kwargs: Mapping[str, Any] | None) -> tuple[Callable[[], Any], str]:
        if isinstance(model, str):
            cls, kw = resolve_model_spec(model), dict(kwargs or {})

            def factory() -> Any:
                try:
                    return cls(**kw)
                except TypeError as exc:
                    raise ConfigError(f"model_kwargs {kw!r} do not fit {model}: {exc}") from None

            return factory, model
        if isinstance(
            model, river_base.Base
        ):  # STYLE 2: a live object cannot be cloned or rolled back safely
            raise ConfigError(
                "pass a factory, not a model instance: model_factory=lambda: " + " ".join(repr(model).split())
            )
        if callable(model):
            return model, f"{getattr(model, '__module__', '?')}.{getattr(model, '__qualname__', repr(model))}"
        raise ConfigError(
            f"model_factory must be a river spec string or a zero-argument factory, got {model!r}"
        )

    def _build(self) -> Any:
        model = self._factory()
        wanted = river_base.Classifier if self._classify else river_base.Regressor
        if not isinstance(model, river_base.Estimator):
            raise ConfigError(f"model_factory returned {type(model).__name__}, not a river estimator")
        if not isinstance(model, wanted):
            raise ConfigError(
                f"model_factory built a {type(model).__name__}, which is not a river "
                f"{wanted.__name__}; it does not fit task={self.task!r}"
            )
        if self._classify and self.n_classes > 2 and not getattr(model, "_multiclass", True):
            raise ConfigError(
                f"{type(model).__name__} is a binary classifier but n_classes={self.n_classes}; "
                "wrap it: lambda: multiclass.OneVsRestClassifier(Model(...))"
            )
        return model

    def _use_mini_batch(self, wanted: bool | None) -> bool:
        capable = isinstance(self._model, (river_base.MiniBatchClassifier, river_base.MiniBatchRegressor))
        usable = capable and importlib.util.find_spec("pandas") is not None
        if wanted and not usable:
            why = "pandas is not installed" if capable else f"{type(self._model).__name__} has no learn_many"
            raise ConfigError(f"mini_batch=True needs river's learn_many, but {why}; use mini_batch=False")
        return usable if wanted is None else wanted

    # ------------------------------------------------------------- inputs
    def _rows(self, X: np.ndarray) -> list[list[float]]:
        # float32 like the torch learner, so both see the same numbers; one
        # tolist() makes every Python float river needs (and never writes X).
        return check_features(X, self.n_features).tolist()

    def _targets(self, y: np.ndarray, n: int) -> list:
        y = check_targets(y, n, classify=self._classify, n_classes=self.n_classes)
        # Python ints (river keys its class statistics by them) or floats.
        return y.tolist() if self._classify else y.astype(np.float64).tolist()

    # -------------------------------------------------------------- learn
    def learn_batch(self, X: np.ndarray, y: np.ndarray) -> LearnReport:
        """Learn one micro-batch, row by row (``learn_one``) or at once (``learn_many``).

        Parameters
        ----------
        X
            Features, shape ``(n, n_features)``; read as float32, never modified.
        y
            Shape ``(n,)``: int class indices or float targets; never modified.

        Returns
        -------
        LearnReport
            ``n_samples=n`` and ``loss``: the mean prequential log loss or
            squared error as a float (``None`` for an empty batch or with
            ``report_loss=False``).

        Raises
        ------
        ValueError
            Wrong shapes, non-integer class labels or a label outside ``0..n_classes-1``.
        """
        rows = self._rows(X)
        labels, n = self._targets(y, len(rows)), len(rows)
        if n == 0:
            return LearnReport(n_samples=0, loss=None)
        keys, model, loss = self._keys, self._model, None
        if self._mini_batch:
            if self.report_loss:
                loss = sum(map(self._row_loss, (dict(zip(keys, r)) for r in rows), labels)) / n
            import pandas as pd  # optional; present whenever _mini_batch is set

            model.learn_many(pd.DataFrame(rows, columns=list(keys)), pd.Series(labels))
        elif self.report_loss:
            total, learn, row_loss = 0.0, model.learn_one, self._row_loss
            for r, t in zip(rows, labels):
                x = dict(zip(keys, r))
                total += row_loss(x, t)  # test, then train: the loss on a row not yet learned
                learn(x, t)
            loss = total / n
        else:
            learn = model.learn_one
            for r, t in zip(rows, labels):
                learn(dict(zip(keys, r)), t)
        self._n_learned += n
        return LearnReport(n_samples=n, loss=loss)

    def _row_loss(self, x: dict, target: Any) -> float:
        if not self._classify:
            pred = self._model.predict_one(x)
            return (target - (0.0 if pred is None else float(pred))) ** 2
        proba = self._proba_one(x)
        total = sum(proba.values()) if proba else 0.0
        # .get(1) finds a True key too (True == 1): binary river models key by bool.
        p = proba.get(target, 0.0) / total if total > 0 else 1.0 / self.n_classes
        return -math.log(max(p, _EPS))

    def _proba_one(self, x: dict) -> dict:
        try:
            return self._model.predict_proba_one(x)
        except NotImplementedError:  # a label-only river classifier: a one-hot "probability"
            label = self._model.predict_one(x)
            return {} if label is None else {label: 1.0}

    # ------------------------------------------------------------ predict
    def predict_proba_batch(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, float32 of shape ``(n, n_classes)``, rows summing to 1.

        Classes the model has not seen get 0; a row it cannot score yet (no
        class seen) is uniform.

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
        rows, keys, k = self._rows(X), self._keys, self.n_classes
        out = np.zeros((len(rows), k), dtype=np.float64)
        for i, r in enumerate(rows):
            for label, p in self._proba_one(dict(zip(keys, r))).items():
                if (
                    isinstance(label, (int, np.integer)) and 0 <= label < k
                ):  # bool is an int: False/True -> 0/1
                    out[i, int(label)] = p
        sums = out.sum(axis=1)
        ok = np.isfinite(sums) & (sums > 0)
        out[ok] /= sums[ok, None]
        out[~ok] = 1.0 / k
        return out.astype(np.float32)

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        """Class indices (int64) or regression values (float32), shape ``(n,)``.

        A class is the argmax of :meth:`predict_proba_batch`, ties to the
        lowest index, so an untrained model predicts class 0.

        Raises
        ------
        ValueError
            ``X`` has the wrong shape.
        """
        if self._classify:
            return self.predict_proba_batch(X).argmax(axis=1).astype(np.int64)
        rows, keys, predict = self._rows(X), self._keys, self._model.predict_one
        preds = [predict(dict(zip(keys, r))) for r in rows]
        return np.array([0.0 if p is None else p for p in preds], dtype=np.float32).reshape(len(rows))

    # -------------------------------------------------------------- state
    @property
    def n_learned(self) -> int:
        """Events learned since construction (or as restored by :meth:`load_state_dict`)."""
        return self._n_learned

    @property
    def model(self) -> Any:
        """The live river estimator (read-only use: inspection, ``debug_one``, plots)."""
        return self._model

    def config(self) -> dict:
        """The plain-data configuration recorded in :meth:`state_dict`."""
        return {
            "format": STATE_FORMAT,
            "family": "river",  # learners.families: how serving finds this state's loader
            "model": self._spec,
            "model_kwargs": dict(self.model_kwargs or {}),
            "estimator": self._estimator,
            "task": self.task,
            "n_features": int(self.n_features),
            "n_classes": int(self.n_classes) if self._classify else None,
            "feature_names": list(self._keys),
            "mini_batch": self._mini_batch,
        }

    def state_dict(self) -> dict:
        """A snapshot of the whole estimator as plain data; further learning does not change it.

        It serialises with :func:`learners.state_io.dumps_state` (no pickle).

        Raises
        ------
        CheckpointError
            The estimator holds something that cannot be saved faithfully (a
            lambda, an object of a non-river class); the message names it.

        Examples
        --------
        >>> sorted(RiverLearner("river.naive_bayes.GaussianNB", n_features=2).state_dict())
        ['config', 'model', 'n_learned']
        """
        return {"config": self.config(), "model": to_plain(self._model), "n_learned": self._n_learned}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (of this learner, a clone, or loaded from disk).

        The estimator is rebuilt aside, importing only allow-listed river
        names, then swapped in: on any error the learner is unchanged. It
        keeps the hyper-parameters it was saved with.

        Raises
        ------
        SchemaMismatchError
            The state was made for another task, feature schema, class count
            or estimator class.
        CheckpointError
            The model state is malformed or names something off the allow-list.
        """
        if not isinstance(state, Mapping) or not {"config", "model"} <= set(state):
            raise SchemaMismatchError(
                "learner state must be a dict with config and model entries "
                "(as returned by RiverLearner.state_dict)"
            )
        theirs, ours = state["config"], self.config()
        if not isinstance(theirs, Mapping) or theirs.get("format") != STATE_FORMAT:
            raise SchemaMismatchError("learner state has no RiverLearner config of a known format")
        diffs = [
            f"{k}: state has {theirs.get(k)!r}, learner has {ours[k]!r}"
            for k in _COMPAT_KEYS
            if theirs.get(k) != ours[k]
        ]
        if diffs:
            raise SchemaMismatchError(
                "learner state does not fit this learner (" + "; ".join(diffs) + "); "
                "configure the learner like the one that saved the state"
            )
        model = from_plain(state["model"])
        if type(model) is not type(self._model):  # the config said so; the tree must agree
            raise SchemaMismatchError(
                f"learner state holds a {type(model).__name__}, "
                f"this learner runs a {type(self._model).__name__}"
            )
        self._model = model
        self._n_learned = int(state.get("n_learned", 0))

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RiverLearner:
        """Rebuild a learner from a :meth:`state_dict` alone, if it was made from a spec string.

        Raises
        ------
        SchemaMismatchError
            The state has no usable config.
        ConfigError
            The recorded model is a factory, not a spec.

        Examples
        --------
        >>> a = RiverLearner("river.linear_model.LinearRegression", n_features=2, task="regression")
        >>> RiverLearner.from_state(a.state_dict()).config() == a.config()
        True
        """
        config = state.get("config") if isinstance(state, Mapping) else None
        if not isinstance(config, Mapping) or config.get("format") != STATE_FORMAT:
            raise SchemaMismatchError("state has no RiverLearner config of a known format")
        if not str(config.get("model", "")).startswith("river."):
            raise ConfigError(
                f"state was made by the factory {config.get('model')!r}; construct a RiverLearner "
                "with that factory, then call load_state_dict"
            )
        learner = cls(
            config["model"],
            n_features=int(config["n_features"]),
            task=config["task"],
            n_classes=int(config["n_classes"] or 2),
            feature_names=config["feature_names"],
            model_kwargs=config.get("model_kwargs") or None,
        )
        learner.load_state_dict(state)
        return learner

    # -------------------------------------------------------------- clone
    def get_params(self) -> dict:
        """The constructor arguments."""
        return {
            "model_factory": self.model_factory,
            "n_features": self.n_features,
            "task": self.task,
            "n_classes": self.n_classes,
            "feature_names": self.feature_names,
            "model_kwargs": self.model_kwargs,
            "report_loss": self.report_loss,
            "mini_batch": self.mini_batch,
        }

    def clone(self) -> RiverLearner:
        """A fresh, untrained learner with the same configuration (the factory is called again).

        Raises
        ------
        ConfigError
            The factory returned the same estimator again (it must build a new
            one per call).

        Examples
        --------
        >>> a = RiverLearner("river.tree.HoeffdingTreeClassifier", n_features=2)
        >>> b = a.clone()
        >>> b.model is not a.model and b.config() == a.config()
        True
        """
        twin = RiverLearner(**self.get_params())
        if twin._model is self._model:
            raise ConfigError(
                "model_factory returned the same estimator twice; it must build a new one per "
                "call (lambda: Model(...), not lambda: model)"
            )
        return twin

    def __repr__(self) -> str:
        return (
            f"RiverLearner(model={self._spec!r}, estimator={self._estimator!r}, n_features={self.n_features}, "
            f"task={self.task!r}, n_classes={self.n_classes})"
        )
