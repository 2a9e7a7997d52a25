"""Learner throughput and prequential accuracy beside river's per-sample learners, on the same streams, in one run.

Every stream is materialised first (``X`` float32 ``(n, d)``, ``y`` int64;
river's dict features in their fixed key order; river learners get the same
rows as prebuilt dicts), so only learning and prediction are timed, never data
generation. Each learner sees the stream once, prequentially (test, then
train):

* **ours** (``learners.neural.learner.TorchLearner``, CPU): per micro-batch of
  ``--batch`` rows, ``predict_batch`` then ``learn_batch`` (see
  :data:`OURS_CONFIG`): ``logistic`` (lr 0.05) and ``mlp`` (lr 0.01) with one
  Adam step per micro-batch, plain and with ``PluginSpec(ewc_strength=10,
  ewc_every=10, replay="reservoir")``; and ``ours-mlp-8steps`` (8 steps per
  micro-batch, lr 0.02), the accuracy end of the speed/accuracy trade-off;
  ``ours-hedge`` (``learners.hedge.learner.HedgeLearner`` with its default
  members: logistic and small MLPs at several learning rates, weighted online).
  Raw features go in: the zoo models standardise their inputs online
  (:mod:`learners.neural.standardize`; Agrawal's raw salaries reach ~150k).
* **river** per-sample baselines: ``predict_one`` then ``learn_one`` per row on
  dicts -- ``StandardScaler | LogisticRegression`` (one-vs-rest for
  multi-class streams; river's LogisticRegression is binary),
  ``HoeffdingAdaptiveTreeClassifier``, ``ARFClassifier(n_models=10)``.
* **adapter**: ``learners.river_adapter.learner.RiverLearner`` wrapping the same HAT,
  fed numpy micro-batches like ours (rows -> dicts inside the adapter, timed),
  to show the adapter costs ~nothing over the bare river loop. Its accuracy is
  batch-prequential (the whole micro-batch is predicted before any of it is
  learned), so it can sit below the per-row river loop on short streams; only
  its rows/s is the point of the row.
* **avalanche** (``learners.avalanche_adapter.learner.AvalancheLearner``): Avalanche's
  ``Naive`` and ``Replay(mem_size=2000)`` strategies training the same MLP
  with the same lr on the same micro-batches, one Avalanche experience per
  micro-batch -- how Avalanche runs inside ``streamlearn run``. Same work as
  ``ours-mlp`` and ``ours-mlp+ewc+replay`` respectively; the target is ours
  >= 10x their rows/s.

Streams (seeded, deterministic): river's Agrawal (classification function 0 ->
1 at mid-stream via ``ConceptDriftStream``, through
``stream.sources.produce.synthetic_rows``; its categorical attributes -- elevel, car,
zipcode -- are integer codes in river and are used as numbers), SEA (variant
0 -> 1 at mid-stream, same helper), Hyperplane (``mag_change=0.001``, 10
features, 5% noise), RandomRBFDrift (``change_speed=0.001``, 10 features, 50
centroids, 10 drifting), and river's bundled real datasets that need no
download: Phishing (1,250 rows), Bananas (5,300), ImageSegments (2,310, 7
classes; string labels -> sorted indices). Elec2, CreditCard, HTTP, SMTP and
MaliciousURL need a download and are left out. All bundled features are
numeric, nothing is skipped. Real streams are capped at ``--rows``.

``torch.set_num_threads(1)``: ours runs on one core, like river (pure Python,
one core). Ours runs ``--repeats`` times (median rows/s; accuracy is identical
across repeats, the learner is seeded); river runs once (a single pass is
seconds long). Targets (DESIGN.md "Performance targets"): ours >= 20x river's
per-sample throughput with prequential accuracy no worse than river's best.
Per stream, "ours" in the verdicts is our most accurate learner on that
stream; its speed is compared with river's LogisticRegression and with the
fastest river learner, its accuracy with river's most accurate one.

    python -m bench.learners                      # 20k rows per stream, all learners
    python -m bench.learners --quick              # 5k rows, fewer learners
    python -m bench.learners --streams sea,agrawal --learners ours-logistic,river-lr --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from stream.core import metrics

SYNTH_STREAMS = ("agrawal", "sea", "hyperplane", "rbf")
REAL_STREAMS = ("phishing", "bananas", "segments")
STREAMS = SYNTH_STREAMS + REAL_STREAMS

# Our learners: (model, lr, steps_per_batch, with EWC + replay).
OURS_CONFIG = {
    "ours-logistic": ("logistic", 0.05, 1, False),
    "ours-mlp": ("mlp", 0.01, 1, False),
    "ours-mlp-8steps": ("mlp", 0.02, 8, False),
    "ours-logistic+ewc+replay": ("logistic", 0.05, 1, True),
    "ours-mlp+ewc+replay": ("mlp", 0.01, 1, True),
    # learners.hedge: its default members (each with its own lr and steps) weighted by Hedge.
    "ours-hedge": ("hedge", None, None, False),
}
OURS = tuple(OURS_CONFIG)
RIVER = ("river-lr", "river-hat", "river-arf")
ADAPTER = ("adapter-hat",)
# Avalanche strategies through AvalancheLearner: the same MLP, lr and micro-batches as ours-mlp.
AVALANCHE = ("avalanche-naive", "avalanche-replay")
LEARNERS = OURS + RIVER + ADAPTER + AVALANCHE
QUICK_LEARNERS = (
    "ours-logistic",
    "ours-mlp",
    "ours-mlp-8steps",
    "ours-mlp+ewc+replay",
    "ours-hedge",
    "river-lr",
    "river-hat",
    "river-arf",
    "avalanche-naive",
)
# Same-work pairs for the Avalanche speed target.
AVALANCHE_PAIRS = {"avalanche-naive": "ours-mlp", "avalanche-replay": "ours-mlp+ewc+replay"}


# ------------------------------------------------------------------ streams
@dataclass
class Stream:
    name: str
    X: np.ndarray  # float32 (n, d)
    y: np.ndarray  # int64 (n,)
    n_classes: int
    note: str


def _from_river(items, n: int) -> tuple[np.ndarray, np.ndarray, list]:
    keys = None
    xs, ys = [], []
    for x, y in itertools.islice(items, n):
        if keys is None:
            keys = list(x)
        xs.append([float(x[k]) for k in keys])
        ys.append(y)
    return np.asarray(xs, dtype=np.float32), ys, keys


def _encode(labels: list) -> tuple[np.ndarray, int]:
    classes = sorted(set(labels), key=lambda v: (str(type(v)), v))
    index = {c: i for i, c in enumerate(classes)}
    return np.asarray([index[v] for v in labels], dtype=np.int64), max(2, len(classes))


def make_stream(name: str, n: int, seed: int) -> Stream:
    from river import datasets
    from river.datasets import synth

    if name in ("agrawal", "sea"):
        from stream.sources.produce import synthetic_rows

        rows = list(synthetic_rows(name, n, seed=seed, drift_at=n // 2, drift_width=max(1, n // 100)))
        X = np.asarray([r["x"] for r in rows], dtype=np.float32)
        y = np.asarray([r["y"] for r in rows], dtype=np.int64)
        note = ("function 0->1" if name == "agrawal" else "variant 0->1") + f" at row {n // 2}"
        return Stream(name, X, y, 2, note)
    if name == "hyperplane":
        gen = synth.Hyperplane(
            seed=seed, n_features=10, n_drift_features=5, mag_change=0.001, noise_percentage=0.05
        )
        X, labels, _ = _from_river(gen, n)
        return Stream(name, X, _encode(labels)[0], 2, "mag_change 0.001, 5% noise")
    if name == "rbf":
        gen = synth.RandomRBFDrift(
            seed_model=seed,
            seed_sample=seed + 1,
            n_classes=2,
            n_features=10,
            n_centroids=50,
            change_speed=0.001,
            n_drift_centroids=10,
        )
        X, labels, _ = _from_river(gen, n)
        return Stream(name, X, _encode(labels)[0], 2, "change_speed 0.001, 10/50 centroids drift")
    ds = {"phishing": datasets.Phishing, "bananas": datasets.Bananas, "segments": datasets.ImageSegments}[
        name
    ]()
    X, labels, _ = _from_river(iter(ds), n)
    y, k = _encode(labels)
    return Stream(name, X, y, k, f"river bundled, {len(y)} rows, {k} classes")


# ----------------------------------------------------------------- learners
def prequential(learner, s: Stream, batch: int) -> tuple[float, float]:
    """Test-then-train over the stream in micro-batches: (rows/s, accuracy)."""
    X, y, n = s.X, s.y, len(s.y)
    correct = 0
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        xb, yb = X[i : i + batch], y[i : i + batch]
        correct += metrics.count_correct(learner.predict_batch(xb), yb)
        learner.learn_batch(xb, yb)
    elapsed = time.perf_counter() - t0
    return n / elapsed, correct / n


def run_ours(name: str, s: Stream, batch: int, seed: int) -> tuple[float, float]:
    from learners.neural.learner import TorchLearner
    from learners.neural.plugins import PluginSpec

    model, lr, steps, continual = OURS_CONFIG[name]
    if model == "hedge":
        from learners.hedge.learner import HedgeLearner

        hedge = HedgeLearner(n_features=s.X.shape[1], n_classes=s.n_classes, device="cpu", seed=seed)
        return prequential(hedge, s, batch)
    plugins = []
    if continual:
        plugins = PluginSpec(
            ewc_strength=10.0, ewc_every=10, replay="reservoir", replay_capacity=2000, seed=seed
        ).build(task="classification", n_classes=s.n_classes)
    learner = TorchLearner(
        model,
        n_features=s.X.shape[1],
        n_classes=s.n_classes,
        device="cpu",
        lr=lr,
        seed=seed,
        plugins=plugins,
        steps_per_batch=steps,
    )
    return prequential(learner, s, batch)


def run_avalanche(name: str, s: Stream, batch: int, seed: int) -> tuple[float, float]:
    from learners.avalanche_adapter.learner import AvalancheLearner

    strategy, kwargs = {"avalanche-naive": ("Naive", {}), "avalanche-replay": ("Replay", {"mem_size": 2000})}[
        name
    ]
    learner = AvalancheLearner(
        strategy,
        "mlp",
        n_features=s.X.shape[1],
        n_classes=s.n_classes,
        device="cpu",
        lr=OURS_CONFIG["ours-mlp"][1],
        seed=seed,
        strategy_kwargs=kwargs,
    )
    return prequential(learner, s, batch)


def river_model(name: str, n_classes: int, seed: int):
    from river import forest, linear_model, multiclass, preprocessing, tree

    if name == "river-lr":
        lr = linear_model.LogisticRegression()
        return preprocessing.StandardScaler() | (lr if n_classes == 2 else multiclass.OneVsRestClassifier(lr))
    if name in ("river-hat", "adapter-hat"):
        return tree.HoeffdingAdaptiveTreeClassifier(seed=seed)
    if name == "river-arf":
        return forest.ARFClassifier(n_models=10, seed=seed)
    raise ValueError(name)


def run_river(name: str, s: Stream, dicts: list[dict], seed: int) -> tuple[float, float]:
    model = river_model(name, s.n_classes, seed)
    labels = s.y.tolist()
    correct = 0
    t0 = time.perf_counter()
    for x, y in zip(dicts, labels):
        if model.predict_one(x) == y:
            correct += 1
        model.learn_one(x, y)
    elapsed = time.perf_counter() - t0
    return len(labels) / elapsed, correct / len(labels)


def run_adapter(name: str, s: Stream, batch: int, seed: int) -> tuple[float, float]:
    from learners.river_adapter.learner import RiverLearner

    learner = RiverLearner(
        lambda: river_model(name, s.n_classes, seed),
        n_features=s.X.shape[1],
        n_classes=s.n_classes,
        report_loss=False,
    )
    return prequential(learner, s, batch)


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--rows", type=int, default=None, help="rows per stream (default 20000; 5000 with --quick)"
    )
    p.add_argument("--batch", type=int, default=500, help="micro-batch size for ours and the adapter")
    p.add_argument("--streams", default=",".join(STREAMS), help=f"comma list of {', '.join(STREAMS)}")
    p.add_argument("--learners", default=None, help=f"comma list of {', '.join(LEARNERS)}")
    p.add_argument("--repeats", type=int, default=3, help="passes per ours learner (median rows/s)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--quick", action="store_true", help="5000 rows, fewer learners")
    args = p.parse_args(argv)

    rows = args.rows or (5000 if args.quick else 20000)
    streams = [v.strip() for v in args.streams.split(",") if v.strip()]
    learners = [
        v.strip()
        for v in (args.learners or ",".join(QUICK_LEARNERS if args.quick else LEARNERS)).split(",")
        if v.strip()
    ]
    for v in streams:
        if v not in STREAMS:
            p.error(f"unknown stream {v!r}")
    for v in learners:
        if v not in LEARNERS:
            p.error(f"unknown learner {v!r}")
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    # Avalanche's deprecation chatter: its `deprecated` decorator re-enables the
    # warning locally, so filters do not silence it; drop warning output instead.
    warnings.showwarning = lambda *args, **kwargs: None

    results: dict[str, dict] = {}
    for sname in streams:
        t0 = time.perf_counter()
        s = make_stream(sname, rows, args.seed)
        keys = [f"x{i}" for i in range(s.X.shape[1])]
        dicts = [dict(zip(keys, row)) for row in s.X.tolist()]
        print(
            f"stream {sname}: {len(s.y)} rows x {s.X.shape[1]} features, {s.n_classes} classes "
            f"({s.note}); built in {time.perf_counter() - t0:.1f} s (not timed)",
            flush=True,
        )
        res: dict[str, dict] = {}
        for lname in learners:
            if lname in OURS:
                runs = [run_ours(lname, s, args.batch, args.seed) for _ in range(args.repeats)]
                rps, acc = statistics.median(r[0] for r in runs), runs[0][1]
            elif lname in RIVER:
                rps, acc = run_river(lname, s, dicts, args.seed)
            elif lname in AVALANCHE:
                rps, acc = run_avalanche(lname, s, args.batch, args.seed)
            else:
                rps, acc = run_adapter(lname.replace("adapter-", "river-"), s, args.batch, args.seed)
            res[lname] = {"rows_per_s": rps, "accuracy": acc}
            print(f"  {lname:<26} {rps:>12,.0f} rows/s  acc {acc:.4f}", flush=True)
        results[sname] = {
            "n_rows": len(s.y),
            "n_features": int(s.X.shape[1]),
            "n_classes": s.n_classes,
            "note": s.note,
            "learners": res,
        }

    summary = report(results, learners, args, rows)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "rows": rows,
                    "batch": args.batch,
                    "repeats": args.repeats,
                    "seed": args.seed,
                    "streams": results,
                    "summary": summary,
                },
                fh,
                indent=2,
            )
    return {"streams": results, "summary": summary}


def report(results: dict, learners: list[str], args, rows: int) -> dict:
    print()
    print(
        f"### rows/s (prequential accuracy) -- {rows} rows per stream max, ours in micro-batches of {args.batch}"
    )
    print()
    print("| stream | " + " | ".join(learners) + " |")
    print("|---|" + "|".join("---:" for _ in learners) + "|")
    for sname, r in results.items():
        cells = [
            f"{r['learners'][name]['rows_per_s']:,.0f} ({r['learners'][name]['accuracy']:.3f})"
            for name in learners
        ]
        print(f"| {sname} | " + " | ".join(cells) + " |")

    summary: dict[str, dict] = {}
    ours = [name for name in learners if name in OURS]
    river = [name for name in learners if name in RIVER]
    if ours and river:
        print()
        print(
            "### targets: ours >= 20x river per-sample rows/s, accuracy >= river's best "
            "(ours = our most accurate learner on the stream)"
        )
        print()
        print(
            "| stream | ours (best acc) | speedup vs river LogisticRegression | speedup vs fastest river "
            "| slowest ours vs fastest river | accuracy gap vs best river (ours best - river best) "
            "| throughput >= 20x | accuracy >= river best |"
        )
        print("|---|---|---:|---:|---:|---:|:---:|:---:|")
        for sname, r in results.items():
            L = r["learners"]
            best_ours = max(ours, key=lambda name: L[name]["accuracy"])
            fastest_river = max(river, key=lambda name: L[name]["rows_per_s"])
            best_river = max(river, key=lambda name: L[name]["accuracy"])
            slowest_ours = min(ours, key=lambda name: L[name]["rows_per_s"])
            rps = L[best_ours]["rows_per_s"]
            vs_lr = rps / L["river-lr"]["rows_per_s"] if "river-lr" in L else float("nan")
            vs_fast = rps / L[fastest_river]["rows_per_s"]
            slow_vs_fast = L[slowest_ours]["rows_per_s"] / L[fastest_river]["rows_per_s"]
            gap = L[best_ours]["accuracy"] - L[best_river]["accuracy"]
            thr_ok, acc_ok = vs_fast >= 20, gap >= 0
            summary[sname] = {
                "ours_best": best_ours,
                "speedup_vs_river_lr": vs_lr,
                "speedup_vs_fastest_river": vs_fast,
                "fastest_river": fastest_river,
                "slowest_ours_vs_fastest_river": slow_vs_fast,
                "best_river": best_river,
                "accuracy_gap": gap,
                "throughput_pass": thr_ok,
                "accuracy_pass": acc_ok,
            }
            print(
                f"| {sname} | {best_ours} | {vs_lr:,.1f}x | {vs_fast:,.1f}x ({fastest_river}) "
                f"| {slow_vs_fast:,.1f}x ({slowest_ours}) | {gap:+.4f} ({best_river} {L[best_river]['accuracy']:.3f}) "
                f"| {'PASS' if thr_ok else 'MISS'} | {'PASS' if acc_ok else 'MISS'} |"
            )
        if "adapter-hat" in learners and "river-hat" in learners:
            ratios = [
                r["learners"]["adapter-hat"]["rows_per_s"] / r["learners"]["river-hat"]["rows_per_s"]
                for r in results.values()
            ]
            print(
                f"\nadapter overhead: RiverLearner(HAT) rows/s / bare HAT loop rows/s, median over streams "
                f"{statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})"
            )
    pairs = [(a, o) for a, o in AVALANCHE_PAIRS.items() if a in learners and o in learners]
    if pairs:
        print()
        print("### target: ours >= 10x Avalanche's rows/s on the same work (same MLP, lr, micro-batches)")
        print()
        print("| stream | " + " | ".join(f"{o} / {a}" for a, o in pairs) + " | >= 10x |")
        print("|---|" + "|".join("---:" for _ in pairs) + "|:---:|")
        for sname, r in results.items():
            L = r["learners"]
            ratios = [L[o]["rows_per_s"] / L[a]["rows_per_s"] for a, o in pairs]
            summary.setdefault(sname, {})["speedup_vs_avalanche"] = dict(zip([a for a, _ in pairs], ratios))
            cells = [
                f"{x:,.1f}x (acc {L[o]['accuracy']:.3f} vs {L[a]['accuracy']:.3f})"
                for x, (a, o) in zip(ratios, pairs)
            ]
            print(f"| {sname} | " + " | ".join(cells) + f" | {'PASS' if min(ratios) >= 10 else 'MISS'} |")
    print(
        f"\ntorch {torch.__version__}, torch.set_num_threads(1); {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}; ours: median of {args.repeats} passes, river and "
        "Avalanche: one pass. Other processes may share the CPU: ratios are within this run."
    )
    return summary


if __name__ == "__main__":
    main()
