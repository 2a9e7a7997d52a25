"""Log loss, accuracy, rows/s and model memory on a click-like stream over categorical ids: streamlearn vs river.

Issue 19 item 6. The stream is :mod:`stream.testing.click_stream`: user x ad x
device x country with ~10^5 users and ~10^4 ads (Zipf), two numeric fields with
missing values (missing age is informative), an hour, a flag, and a drift of
the preferences of 30% of the ads halfway through. Its labels are drawn from a
known logistic model, so the mean log loss of that model's own probability is
the **ground-truth floor**; a constant base-rate prediction is the ceiling.

Every lane sees the same records in the same order, test-then-train, one
record at a time for river:

* ``river-ohe-lr``: ``(Select(categoricals) | OneHotEncoder(drop_zeros=True)) +
  (Discard(categoricals) | StandardScaler()) | LogisticRegression()`` (river's
  default optimizer, SGD at 0.01). ``drop_zeros=True`` is what makes one-hot
  usable at this cardinality: without it the encoder emits a zero for every
  category seen so far and runs at ~300 rows/s.
* ``river-ohe-adagrad``: the same with ``optim.AdaGrad(0.05)`` (per-weight
  rates suit sparse ids; the best river linear model in a small sweep).
* ``river-hash-lr``: ``FeatureHasher(n_features=2**20)`` in place of the
  one-hot encoder.
* ``river-fm``: ``facto.FMClassifier(n_factors=8)`` on the one-hot features --
  river's own factorisation machine, the river model that can learn a user x ad
  affinity through latent vectors as the hashed embeddings do.
* ``river-arf``: ``forest.ARFClassifier(n_models=10)`` on the same dicts,
  strings as nominal attributes. It runs at ~30-80 rows/s and grows by ~50 MB per
  1,000 rows on 10^5-valued ids, so it runs on the first ``--arf-rows`` rows
  only; its figures are over that prefix (before the drift), flagged as such,
  and not used for "river's best".

The categoricals are ``user``, ``ad``, ``device``, ``country`` and ``hour``
(as a string). **Missing values**: river's ``Select`` raises on an absent key
and its linear models read an absent key as 0, so a missing ``amount`` / ``age``
is dropped from the dict -- after ``StandardScaler`` that is mean imputation --
and ``amount_missing`` / ``age_missing`` (0/1) are added, so a linear model can
also learn what missingness says. The dicts are built before the timed loop.

**Model memory**: river's ``_raw_memory_usage`` (a gc walk of the model) does
not see inside river's Rust ``VectorDict`` (the linear weights), so
:func:`river_bytes` adds, for each, its keys' sizes plus 32 bytes per entry (an
f64, a key pointer and the hash table's slot) -- an estimate, not a measure.
For streamlearn it is every tensor of the learner's ``state_dict()`` (model and
optimizer state).

**streamlearn**: :func:`streamlearn_lane`, one function. Until the feature
pipeline (``FeatureSchema``, hashed ``EmbeddingBag`` inputs in the torch
learner) lands it is a *placeholder* -- categoricals hashed into dense one-hot
blocks fed to today's ``TorchLearner`` -- whose figures are printed as
``pending`` and never given a verdict.

Target (issue 19): streamlearn's log loss <= river's best (lowest log loss over
the full-stream river lanes), at >= 20x that lane's rows/s, with a model of at
most ``--memory-budget-mb`` MB.

    python -m bench.features                                    # 200k rows, ~8 min of river
    python -m bench.features --rows 5000 --lanes river-ohe-lr,streamlearn
    python -m bench.features --river-cache river_cache.json --json out.json   # river once, then cached
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import time
import types
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from bench.quality import RiverCache
from stream.core.metrics import accuracy, log_loss
from stream.testing.click_stream import ClickStream

CATEGORICALS = ("user", "ad", "device", "country", "hour")
NUMERIC = ("amount", "age")
#: Probabilities are clipped to [CLIP, 1 - CLIP] before every log loss here.
CLIP = 1e-7
#: The target: log loss <= river's best, at >= SPEEDUP x that lane's rows/s.
SPEEDUP = 20.0
STREAMLEARN = "streamlearn"


@dataclass(frozen=True)
class LaneOptions:
    """What a lane may read besides the records: the run's seed and budget, and free-form settings.

    ``settings`` holds the ``--streamlearn KEY=VALUE`` pairs, for the streamlearn lane to interpret.
    """

    seed: int = 0
    memory_budget_mb: float = 256.0
    batch: int = 1000
    settings: dict[str, str] = field(default_factory=dict)


@dataclass
class LaneResult:
    """One lane's figures. ``p1``: its predicted P(y=1) per scored row (not written to JSON).

    ``pending``: a stand-in whose figures are not the lane's result (no verdict is given on it).
    """

    name: str
    rows: int
    log_loss: float
    accuracy: float
    rows_per_s: float
    memory_mb: float | None
    log_loss_before_drift: float | None = None
    log_loss_after_drift: float | None = None
    note: str = ""
    pending: bool = False
    p1: np.ndarray | None = field(default=None, repr=False)

    def figures(self) -> dict:
        out = asdict(self)
        out.pop("p1")
        return out


# ------------------------------------------------------------------ scoring
def score(p1: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Log loss (probabilities clipped to [1e-7, 1 - 1e-7]) and accuracy (predict 1 when p > 0.5).

    >>> ll, acc = score(np.array([0.9, 0.2, 1.0]), np.array([1, 0, 0]))
    >>> round(ll, 4), round(acc, 4)
    (5.4822, 0.6667)
    """
    p = np.clip(np.asarray(p1, dtype=np.float64), CLIP, 1.0 - CLIP)
    return log_loss(np.stack([1.0 - p, p], axis=1), y), accuracy((p > 0.5).astype(y.dtype), y)


def result_from(
    name: str,
    p1: np.ndarray,
    y: np.ndarray,
    seconds: float,
    memory_bytes: float | None,
    drift: int | None,
    **kw,
) -> LaneResult:
    """A :class:`LaneResult` from per-row probabilities; log loss before/after ``drift`` where it falls inside."""
    n = len(p1)
    ll, acc = score(p1, y[:n])
    before = after = None
    if drift is not None and 0 < drift < n:
        before, _ = score(p1[:drift], y[:drift])
        after, _ = score(p1[drift:], y[drift:n])
    return LaneResult(
        name=name,
        rows=n,
        log_loss=ll,
        accuracy=acc,
        rows_per_s=n / seconds if seconds > 0 else math.inf,
        memory_mb=None if memory_bytes is None else memory_bytes / 2**20,
        log_loss_before_drift=before,
        log_loss_after_drift=after,
        p1=np.asarray(p1, dtype=np.float64),
        **kw,
    )


# -------------------------------------------------------------------- river
def river_dict(x: dict) -> dict:
    """A click record's ``x`` as river reads it: hour as a category, missing numerics dropped and flagged.

    >>> river_dict({"user": "u_1", "ad": "a_2", "device": "ios", "country": "FR", "amount": None,
    ...             "age": 31, "hour": 7, "is_new": True})  # doctest: +NORMALIZE_WHITESPACE
    {'user': 'u_1', 'ad': 'a_2', 'device': 'ios', 'country': 'FR', 'hour': '7', 'is_new': 1.0,
     'amount_missing': 1.0, 'age': 31.0, 'age_missing': 0.0}
    """
    d = {
        "user": x["user"],
        "ad": x["ad"],
        "device": x["device"],
        "country": x["country"],
        "hour": str(x["hour"]),
    }
    d["is_new"] = float(x["is_new"])
    for k in NUMERIC:
        v = x[k]
        if v is None:
            d[f"{k}_missing"] = 1.0
        else:
            d[k] = float(v)
            d[f"{k}_missing"] = 0.0
    return d


def _linear(encoder, optimizer=None):
    from river import compose, linear_model, preprocessing

    cats = compose.Select(*CATEGORICALS) | encoder
    nums = compose.Discard(*CATEGORICALS) | preprocessing.StandardScaler()
    return (cats + nums) | linear_model.LogisticRegression(optimizer=optimizer)


def _ohe():
    from river import preprocessing

    return preprocessing.OneHotEncoder(drop_zeros=True)


def river_model(name: str, seed: int):
    """A fresh river pipeline for lane ``name`` (see the module docstring)."""
    from river import compose, facto, forest, optim, preprocessing

    if name == "river-ohe-lr":
        return _linear(_ohe())
    if name == "river-ohe-adagrad":
        return _linear(_ohe(), optim.AdaGrad(0.05))
    if name == "river-hash-lr":
        return _linear(preprocessing.FeatureHasher(n_features=2**20, seed=seed))
    if name == "river-fm":
        cats = compose.Select(*CATEGORICALS) | _ohe()
        nums = compose.Discard(*CATEGORICALS) | preprocessing.StandardScaler()
        return (cats + nums) | facto.FMClassifier(n_factors=8, seed=seed)
    if name == "river-arf":
        return forest.ARFClassifier(n_models=10, seed=seed)
    raise ValueError(f"unknown river lane {name!r}")


RIVER = ("river-ohe-lr", "river-ohe-adagrad", "river-hash-lr", "river-fm", "river-arf")
#: River lanes that run on a prefix of the stream only (rows from --arf-rows).
PREFIX_LANES = ("river-arf",)


def river_bytes(model) -> int:
    """Bytes held by a river model: river's gc walk, plus an estimate inside its Rust ``VectorDict`` weights.

    >>> from river import linear_model
    >>> m = linear_model.LogisticRegression()
    >>> for i in range(1000): m.learn_one({f"f{i}": 1.0}, i % 2)
    >>> river_bytes(m) > 1000 * 32 > m._raw_memory_usage
    True
    """
    skip = (type, types.ModuleType, types.FunctionType)
    seen: set[int] = set()
    size = 0
    pending: list[Any] = [model]
    while pending:
        nxt = []
        for obj in pending:
            if isinstance(obj, skip) or id(obj) in seen:
                continue
            seen.add(id(obj))
            size += sys.getsizeof(obj)
            if isinstance(obj, np.ndarray):
                size += obj.nbytes
            if type(obj).__name__ == "VectorDict" and type(obj).__module__.startswith("river"):
                keys = list(obj.keys())
                size += 32 * len(keys) + sum(sys.getsizeof(k) for k in keys if id(k) not in seen)
            nxt.append(obj)
        pending = gc.get_referents(*nxt)
    return size


def run_river(name: str, dicts: list[dict], y: np.ndarray, seed: int, drift: int | None) -> LaneResult:
    """Test-then-train, one dict at a time: ``predict_proba_one`` then ``learn_one``."""
    model = river_model(name, seed)
    labels = y.tolist()
    p1 = []
    t0 = time.perf_counter()
    for x, label in zip(dicts, labels):
        proba = model.predict_proba_one(x)
        p1.append(proba.get(1, 0.0) if proba else 0.5)
        model.learn_one(x, label)
    seconds = time.perf_counter() - t0
    note = f"first {len(dicts)} rows only" if name in PREFIX_LANES else ""
    return result_from(name, np.array(p1), y, seconds, river_bytes(model), drift, note=note)


def cached_river(
    cache: RiverCache, key: str, name: str, dicts: list[dict], y: np.ndarray, seed: int, drift: int | None
) -> LaneResult:
    """River lane ``name``: from ``cache`` when it holds this exact run, else run (and cached, without ``p1``)."""
    import river

    key = f"{key}/{name}/{len(dicts)}/river-{river.__version__}"
    figures = cache.get(key)
    if figures is None:
        result = run_river(name, dicts, y, seed, drift)
        cache.put(key, result.figures())
        return result
    return LaneResult(**figures)


# -------------------------------------------------------------- streamlearn
def streamlearn_lane(records: list[dict], opts: LaneOptions) -> LaneResult:
    """streamlearn on the click records as the daemon runs them: figures per :class:`LaneResult`.

    Timed: each micro-batch of ``opts.batch`` records goes from JSON bytes through
    the codec (the feature schema's encoding; labels through the label map) into
    the default learner (``LearnerChoice()``: an MLP over the schema's
    ``FeatureInput`` -- hashed embeddings with sparse updates, masked standardiser,
    missing indicators), which tests-then-trains it in chunks and then rehearses,
    as ``replay`` does. Serialising the records to JSON is not timed (river gets
    dicts too). Settings (``--streamlearn KEY=VALUE``):

    - ``schema``: ``inferred`` (default: from the first batch, as ``run`` does) or
      ``declared`` (user/ad tables of ``2**user_bits``/``2**ad_bits`` rows, ``dim``);
    - ``user_bits`` (18), ``ad_bits`` (16), ``dim`` (16): the declared schema's sizes;
    - any ``LearnerChoice`` field, e.g. ``lr=0.003``, ``rehearse_steps=0``.
    """
    import orjson

    from stream.codec.json_codec import CodecConfig, JsonCodec
    from stream.core.records import RawRecord, TopicPartition

    settings = dict(opts.settings)
    codec = JsonCodec(CodecConfig(n_classes=None, schema=_declared_schema(settings)))
    codec.on_inferred = lambda *_: None
    choice = _learner_choice(settings, opts)
    build = choice.factory()
    values = [orjson.dumps({"id": r["id"], "ts": r["ts"], "x": r["x"], "y": r["y"]}) for r in records]
    tp = TopicPartition("clicks", 0)
    y_all = np.array([r["y"] for r in records], dtype=np.int64)
    learner, p1 = None, []
    t0 = time.perf_counter()
    for start in range(0, len(values), opts.batch):
        chunk = [
            RawRecord("clicks", 0, start + i, 0, None, v)
            for i, v in enumerate(values[start : start + opts.batch])
        ]
        events = codec.decode({tp: chunk}).events
        if learner is None:
            learner = build(events.X.shape[1], layout=codec.schema.layout(), n_classes=2)
        out = learner.learn_prequential(events.X, events.y, proba=True)
        p1.append(out.proba[:, 1])
        learner.rehearse()
    seconds = time.perf_counter() - t0
    schema = codec.schema
    tables = ", ".join(f"{f.name} {f.buckets}x{f.dim}" for f in schema.embedded)
    return result_from(
        STREAMLEARN,
        np.concatenate(p1) if p1 else np.zeros(0),
        y_all,
        seconds,
        _tensor_bytes(learner.state_dict()) if learner is not None else None,
        _drift_row(records),
        note=f"{settings.get('schema', 'inferred')} schema ({tables}); {choice.model}, JSON -> codec -> learner",
    )


def _declared_schema(settings: dict[str, str]):
    """The bench's declared schema (``schema=declared``), or ``None`` to infer it as ``run`` does."""
    from stream.core.features import FeatureSchema, FieldSpec

    kind = settings.pop("schema", "inferred")
    bits = {k: int(settings.pop(k, d)) for k, d in (("user_bits", 18), ("ad_bits", 16), ("dim", 16))}
    if kind == "inferred":
        return None
    if kind != "declared":
        raise SystemExit(f"--streamlearn schema={kind}: use inferred or declared")
    dim = bits["dim"]
    return FeatureSchema(
        (
            FieldSpec("user", "categorical", buckets=1 << bits["user_bits"], dim=dim),
            FieldSpec("ad", "categorical", buckets=1 << bits["ad_bits"], dim=dim),
            FieldSpec("device", "categorical", buckets=64, dim=4),
            FieldSpec("country", "categorical", buckets=256, dim=4),
            FieldSpec("hour", "categorical", buckets=64, dim=4),
            FieldSpec("amount"),
            FieldSpec("age"),
            FieldSpec("is_new", "boolean"),
        )
    )


def _learner_choice(settings: dict[str, str], opts: LaneOptions):
    """``LearnerChoice()`` with the remaining settings applied (numbers parsed as JSON)."""
    from learners.choice import LearnerChoice

    fields_ = {}
    for key, raw in settings.items():
        try:
            fields_[key] = json.loads(raw)
        except ValueError:
            fields_[key] = raw
    return LearnerChoice(
        n_classes=None, device="cpu", seed=opts.seed, max_model_mb=opts.memory_budget_mb * 4, **fields_
    )


def _tensor_bytes(state: Any) -> int:
    """Bytes of every tensor / array in a nested state dict."""
    import torch

    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, np.ndarray):
        return state.nbytes
    if isinstance(state, dict):
        return sum(_tensor_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_tensor_bytes(v) for v in state)
    return 0


def _drift_row(records: list[dict]) -> int | None:
    return getattr(records, "drift_row", None)


class Records(list):
    """The materialised records, with the row where the drift starts (``None``: none) attached."""

    drift_row: int | None = None


# ------------------------------------------------------------------ verdict
def verdict(lanes: dict[str, LaneResult], budget_mb: float) -> dict:
    """The target, from each lane's result (a missing or pending streamlearn lane: every check ``None``).

    >>> R = lambda n, ll, rps, mb=None, **kw: LaneResult(n, 100, ll, 0.8, rps, mb, **kw)
    >>> L = {"river-ohe-lr": R("river-ohe-lr", 0.52, 10000), "river-fm": R("river-fm", 0.50, 800),
    ...      "river-arf": R("river-arf", 0.40, 30, note="first 5000 rows only"), "streamlearn": R("streamlearn", 0.49, 20000, 40)}
    >>> v = verdict(L, 256); v["river_best"], v["log_loss_ok"], v["speed_ok"], v["memory_ok"], v["pass"]
    ('river-fm', True, True, True, True)
    >>> L["streamlearn"].pending = True; verdict(L, 256)["pass"] is None
    True
    """
    full = {k: v for k, v in lanes.items() if k in RIVER and k not in PREFIX_LANES}
    out: dict = {"log_loss_ok": None, "speed_ok": None, "memory_ok": None, "memory_budget_mb": budget_mb}
    if full:
        best = min(full, key=lambda k: full[k].log_loss)
        out.update(
            river_best=best,
            river_best_log_loss=full[best].log_loss,
            river_best_rows_per_s=full[best].rows_per_s,
        )
    ours = lanes.get(STREAMLEARN)
    out["pending"] = ours is None or ours.pending
    if ours is not None and not ours.pending:
        if full:
            out["log_loss_vs_river"] = ours.log_loss - full[best].log_loss
            out["speed_vs_river"] = ours.rows_per_s / full[best].rows_per_s
            out["log_loss_ok"] = out["log_loss_vs_river"] <= 1e-12
            out["speed_ok"] = out["speed_vs_river"] >= SPEEDUP
        if ours.memory_mb is not None:
            out["memory_ok"] = ours.memory_mb <= budget_mb
    checks = [out[k] for k in ("log_loss_ok", "speed_ok", "memory_ok")]
    out["pass"] = None if any(c is None for c in checks) else all(checks)
    return out


def _mark(ok) -> str:
    return "pending" if ok is None else ("PASS" if ok else "MISS")


def _f(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def report(stream: dict, lanes: dict[str, LaneResult], v: dict) -> str:
    """The markdown tables: one row per lane (ground truth and base rate first), then the verdict."""
    lines = [
        f"### click stream: {stream['rows']:,} rows, {stream['distinct_users']:,} of {stream['n_users']:,} users "
        f"and {stream['distinct_ads']:,} of {stream['n_ads']:,} ads seen, click rate {stream['base_rate']:.3f}, "
        f"{stream['drifted_ads']:,} ads drift at row {stream['drift_row']}",
        "",
        "| lane | rows | log loss | before drift | after drift | accuracy | rows/s | memory MB | note |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    fl = stream["floor"]
    lines.append(
        f"| ground truth (p) | {stream['rows']} | {fl['log_loss']:.4f} | {_f(fl['before'], '.4f')} | "
        f"{_f(fl['after'], '.4f')} | {fl['accuracy']:.4f} | - | - | the floor: Bayes-optimal |"
    )
    lines.append(
        f"| base rate | {stream['rows']} | {stream['base_log_loss']:.4f} | - | - | "
        f"{max(stream['base_rate'], 1 - stream['base_rate']):.4f} | - | - | constant, in hindsight |"
    )
    for r in lanes.values():
        lines.append(
            f"| {r.name} | {r.rows} | {r.log_loss:.4f} | {_f(r.log_loss_before_drift, '.4f')} | "
            f"{_f(r.log_loss_after_drift, '.4f')} | {r.accuracy:.4f} | {r.rows_per_s:,.0f} | "
            f"{_f(r.memory_mb, ',.1f')} | {r.note} |"
        )
    ours = lanes.get(STREAMLEARN)
    best = v.get("river_best")
    lines += [
        "",
        f"### verdict: log loss <= river's best, at >= {SPEEDUP:g}x its rows/s, in <= {v['memory_budget_mb']:g} MB",
        "",
        "| target | streamlearn | river's best | verdict |",
        "|---|--:|--:|:-:|",
    ]
    shown = ours is not None and not ours.pending
    lines.append(
        f"| log loss <= river's best | {_f(ours.log_loss if shown else None, '.4f')} | "
        f"{_f(v.get('river_best_log_loss'), '.4f')} ({best or '-'}) | {_mark(v['log_loss_ok'])} |"
    )
    lines.append(
        f"| rows/s >= {SPEEDUP:g}x river's best | {_f(ours.rows_per_s if shown else None, ',.0f')} | "
        f"{_f(v.get('river_best_rows_per_s'), ',.0f')} (x{SPEEDUP:g} = "
        f"{_f(v['river_best_rows_per_s'] * SPEEDUP if best else None, ',.0f')}) | {_mark(v['speed_ok'])} |"
    )
    lines.append(
        f"| model <= {v['memory_budget_mb']:g} MB | {_f(ours.memory_mb if shown else None, ',.1f')} | - | "
        f"{_mark(v['memory_ok'])} |"
    )
    lines += [
        "",
        f"target: {_mark(v['pass'])}" + (" (the streamlearn lane is a placeholder)" if v["pending"] else ""),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------- main
def make_records(rows: int, cfg: ClickStream) -> Records:
    """The stream, materialised once (not timed)."""
    records = Records(cfg.records(rows))
    records.drift_row = cfg.drift_row(rows)
    return records


def stream_summary(records: Records, cfg: ClickStream) -> dict:
    y = np.array([r["y"] for r in records], dtype=np.int64)
    p = np.array([r["p"] for r in records])
    drift = records.drift_row
    ll, acc = score(p, y)
    before = after = None
    if drift is not None and 0 < drift < len(y):
        before, _ = score(p[:drift], y[:drift])
        after, _ = score(p[drift:], y[drift:])
    rate = float(y.mean())
    base = -(rate * math.log(max(rate, CLIP)) + (1 - rate) * math.log(max(1 - rate, CLIP)))
    return {
        "rows": len(y),
        "n_users": cfg.n_users,
        "n_ads": cfg.n_ads,
        "distinct_users": len({r["x"]["user"] for r in records}),
        "distinct_ads": len({r["x"]["ad"] for r in records}),
        "drift_row": drift,
        "drifted_ads": int(cfg.world().drifted.sum()) if drift is not None else 0,
        "base_rate": rate,
        "base_log_loss": base,
        "missing_amount": float(np.mean([r["x"]["amount"] is None for r in records])),
        "missing_age": float(np.mean([r["x"]["age"] is None for r in records])),
        "floor": {"log_loss": ll, "accuracy": acc, "before": before, "after": after},
    }


def main(
    argv: list[str] | None = None, lane: Callable[[list[dict], LaneOptions], LaneResult] | None = None
) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000, help="records in the stream")
    p.add_argument("--users", type=int, default=100_000, help="distinct user ids (Zipf)")
    p.add_argument("--ads", type=int, default=10_000, help="distinct ad ids (Zipf)")
    p.add_argument(
        "--drift-at", type=float, default=0.5, help="where 30%% of the ads drift (fraction; <0: none)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the stream and the learners")
    p.add_argument(
        "--lanes", default=None, help=f"comma list of {', '.join((*RIVER, STREAMLEARN))} (default: all)"
    )
    p.add_argument(
        "--arf-rows", type=int, default=5000, help="ARF runs on this many first rows (~30-80 rows/s)"
    )
    p.add_argument("--memory-budget-mb", type=float, default=256.0, help="the model's memory budget")
    p.add_argument("--batch", type=int, default=1000, help="the streamlearn lane's micro-batch")
    p.add_argument(
        "--streamlearn",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for the streamlearn lane (repeatable)",
    )
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument(
        "--river-cache",
        default=None,
        metavar="FILE",
        help="reuse river's figures from this JSON file (same stream, rows, seed and river version) and add "
        "new ones to it: river runs once across your runs (its rows/s then comes from an earlier run)",
    )
    args = p.parse_args(argv)

    if args.rows < 1:
        p.error("--rows must be >= 1")
    known = (*RIVER, STREAMLEARN)
    lanes = [v.strip() for v in args.lanes.split(",") if v.strip()] if args.lanes else list(known)
    for v in lanes:
        if v not in known:
            p.error(f"unknown lane {v!r}; known: {', '.join(known)}")
    settings = {}
    for item in args.streamlearn:
        k, sep, val = item.partition("=")
        if not sep or not k.strip():
            p.error(f"--streamlearn takes KEY=VALUE, got {item!r}")
        settings[k.strip()] = val.strip()
    try:
        cfg = ClickStream(
            n_users=args.users,
            n_ads=args.ads,
            seed=args.seed,
            drift_at=None if args.drift_at < 0 else args.drift_at,
        )
    except ValueError as exc:
        p.error(str(exc))

    import torch

    torch.set_num_threads(1)  # one core, like river
    t0 = time.perf_counter()
    records = make_records(args.rows, cfg)
    summary = stream_summary(records, cfg)
    print(
        f"click stream: {len(records):,} records in {time.perf_counter() - t0:.1f} s (not timed); "
        f"ground-truth log loss {summary['floor']['log_loss']:.4f}, base rate {summary['base_log_loss']:.4f}",
        flush=True,
    )
    y = np.array([r["y"] for r in records], dtype=np.int64)
    drift = records.drift_row
    results: dict[str, LaneResult] = {}
    river_lanes = [k for k in RIVER if k in lanes]
    if river_lanes:
        dicts = [river_dict(r["x"]) for r in records]
        cache = RiverCache(args.river_cache)
        # The labels' checksum in the key: a changed generator never reads an old stream's figures.
        key = f"click/{args.rows}/{args.seed}/{cfg.n_users}/{cfg.n_ads}/{cfg.drift_at}/y{zlib.crc32(y.tobytes()):08x}"
        for name in river_lanes:
            n = min(args.arf_rows, len(dicts)) if name in PREFIX_LANES else len(dicts)
            results[name] = cached_river(cache, key, name, dicts[:n], y[:n], args.seed, drift)
            _progress(results[name])
            cache.save()
        del dicts
    if STREAMLEARN in lanes:
        opts = LaneOptions(
            seed=args.seed, memory_budget_mb=args.memory_budget_mb, batch=args.batch, settings=settings
        )
        results[STREAMLEARN] = (lane or streamlearn_lane)(records, opts)
        _progress(results[STREAMLEARN])
    v = verdict(results, args.memory_budget_mb)
    print()
    print(report(summary, results, v))
    print(
        f"\ntorch {torch.__version__}, torch.set_num_threads(1); {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}; one pass per lane; ratios are within this run "
        f"(or against cached river figures)."
    )
    out = {
        "rows": args.rows,
        "seed": args.seed,
        "stream": {**summary, "config": asdict(cfg)},
        "lanes": {k: r.figures() for k, r in results.items()},
        "verdict": v,
    }
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2, default=str)
    return out


def _progress(r: LaneResult) -> None:
    print(
        f"  {r.name:<18} {r.rows:>8} rows {r.rows_per_s:>10,.0f} rows/s  log loss {r.log_loss:.4f}  "
        f"acc {r.accuracy:.4f}  {_f(r.memory_mb, ',.1f')} MB{'  (pending)' if r.pending else ''}",
        flush=True,
    )


if __name__ == "__main__":
    main()
