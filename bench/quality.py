"""Prequential accuracy, log loss and rows/s of streamlearn configurations against river's per-sample learners, with a verdict per stream.

The yardstick of issue 18. Every stream (:mod:`bench.quality_streams`: river's
bundled Phishing, Bananas, ImageSegments and Shuttle; SEA, Agrawal, STAGGER
and LED with abrupt drift, Agrawal and Sine with gradual drift, Hyperplane and
RandomRBFDrift with incremental drift) is materialised once; every learner sees
the same rows in the same order.

* **streamlearn**: the rows are written to a JSONL file and replayed through
  the engine path of ``streamlearn replay --file`` -- one
  :class:`~stream.replay.driver.Backtest` over a
  :class:`~stream.sources.files.FileSource`, one engine per configuration
  (codec, window, learner, drift policy, gate), each window scored before it
  is learned. rows/s is the engine's own time (decode, window, score, drift,
  gate, learn; the backtest's extra per-window scoring is not counted).
  ``default`` is ``streamlearn replay`` with no options, i.e. the learner,
  window (``count:1000``), drift policy and gate of ``streamlearn run`` with no
  options. ``--config NAME="OPTIONS"`` adds a configuration from the command
  line options of ``streamlearn run`` / ``replay`` (learner, drift, window and
  gate options, parsed by the CLI's own option table), e.g.
  ``--config mlp8="--model mlp --steps-per-batch 8 --lr 0.01"``. ``--classes``
  is set per stream.
* **river**, per sample (``predict_proba_one`` then ``learn_one``; the
  prediction is the most probable class, as river's ``predict_one``):
  ``StandardScaler | LogisticRegression`` (one-vs-rest for multi-class),
  ``HoeffdingAdaptiveTreeClassifier``, ``ARFClassifier(n_models=10)``
  (:func:`bench.learners.river_model`). One pass each: ARF runs ~500-2,000 rows/s.

Target per stream (issue 18): the **default**'s accuracy >= ARF's - 0.01 at
>= 20x ARF's rows/s, and the **best** streamlearn configuration's accuracy >=
the best river learner's. Rows/s ratios are within one run on one machine.

    python -m bench.quality                                     # 20k rows per stream, ~15 min
    python -m bench.quality --rows 2000 --streams sea,phishing
    python -m bench.quality --config mlp8="--model mlp --steps-per-batch 8 --lr 0.01" --json out.json
    python -m bench.quality --river-cache river.json --learners default,river-arf   # river once, then cached
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import tempfile
import time
from dataclasses import replace

from bench.quality_streams import STREAMS, make

RIVER = ("river-lr", "river-hat", "river-arf")
DEFAULT = "default"
#: The target: default accuracy >= ARF - SLACK at >= SPEEDUP x ARF's rows/s.
SLACK, SPEEDUP = 0.01, 20.0


# ------------------------------------------------------------ configurations
def _options():
    from stream.cli.options import (
        DRIFT,
        HOLDOUT_MIN_EVENTS,
        LEARNER,
        PUBLISH_EVERY_BATCHES,
        REPLAY_WINDOW,
        VALIDATION_TOLERANCE,
    )

    return (REPLAY_WINDOW, PUBLISH_EVERY_BATCHES, VALIDATION_TOLERANCE, HOLDOUT_MIN_EVENTS, *LEARNER, *DRIFT)


def parse_config(name: str, argv: list[str]):
    """A :class:`~stream.replay.config.ReplayConfig` from ``streamlearn replay``'s learner, drift, window and gate options.

    >>> cfg = parse_config("mlp8", ["--model", "mlp", "--steps-per-batch", "8", "--lr", "0.01"])
    >>> cfg.name, cfg.learner.model, cfg.learner.steps_per_batch, cfg.learner.lr, cfg.window
    ('mlp8', 'mlp', 8, 0.01, 'count:1000')
    >>> parse_config("default", []) == parse_config("default", [])
    True
    """
    import click

    from stream.cli.options import drift_from, gate_from, learner_from
    from stream.cli.table import resolve
    from stream.replay.config import ReplayConfig

    options = _options()
    command = click.Command(name, params=[])
    for opt in reversed(options):
        if opt.flag is not None:
            command = opt.click_option()(command)
    with command.make_context(f"--config {name}", list(argv)) as ctx:
        opts = resolve(ctx.params, options, ctx)
    return ReplayConfig.base(
        name=name,
        learner=learner_from(opts),
        window=opts.window,
        drift=drift_from(opts),
        gate=gate_from(opts),
    )


def named_configs(items: list[str]) -> list:
    """``["NAME=OPTIONS", ...]`` -> configurations, ``default`` first; a bad item is a ValueError naming it."""
    import click

    from stream.core.errors import ConfigError

    configs = {DEFAULT: parse_config(DEFAULT, [])}
    for item in items:
        name, sep, rest = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f'--config takes NAME="OPTIONS", got {item!r}')
        if name in configs or name in RIVER:
            raise ValueError(f"--config {name!r}: the name is taken")
        try:
            configs[name] = parse_config(name, shlex.split(rest))
        except (click.ClickException, ConfigError) as exc:
            raise ValueError(f"--config {name}: {getattr(exc, 'message', None) or exc}") from None
    return list(configs.values())


# ------------------------------------------------------------------ runners
def run_streamlearn(s, configs: list, work: str) -> dict[str, dict]:
    """Every configuration over stream ``s`` in one replay of a JSONL file; name -> figures."""
    import orjson

    from stream.codec.json_codec import CodecConfig
    from stream.replay.driver import Backtest
    from stream.sources.files import FileSource

    path = os.path.join(work, f"{s.name}.jsonl")
    with open(path, "wb") as f:
        for i, (x, y) in enumerate(zip(s.X.tolist(), s.y.tolist())):
            f.write(orjson.dumps({"id": str(i), "x": x, "y": y}) + b"\n")
    lanes = [replace(c, learner=replace(c.learner, n_classes=s.n_classes)) for c in configs]
    decode = CodecConfig(task="classification", n_classes=s.n_classes, n_features=int(s.X.shape[1]))
    result = Backtest(
        FileSource([path]),
        lanes,
        os.path.join(work, f"out-{s.name}"),
        decode=decode,
        progress=False,
        dead_letters=None,
    ).run()
    out = {}
    for cfg in result["configs"]:
        m = cfg["summary"]
        out[cfg["name"]] = {
            "accuracy": m["accuracy"],
            "log_loss": m["log_loss"],
            "rows_per_s": m["events_per_second"],
            "events": m["events"],
            "alarms": m["alarms"],
        }
    return out


def run_river(name: str, s, seed: int) -> dict:
    """Per-sample prequential pass of river learner ``name``: accuracy, log loss, rows/s."""
    from bench.learners import river_model

    model = river_model(name, s.n_classes, seed)
    keys = [f"x{i}" for i in range(s.X.shape[1])]
    dicts = [dict(zip(keys, row)) for row in s.X.tolist()]
    labels = s.y.tolist()
    correct, loss = 0, 0.0
    t0 = time.perf_counter()
    for x, y in zip(dicts, labels):
        proba = model.predict_proba_one(x)
        if proba and max(proba, key=proba.get) == y:
            correct += 1
        loss -= math.log(min(max(proba.get(y, 0.0), 1e-15), 1.0))
        model.learn_one(x, y)
    elapsed = time.perf_counter() - t0
    n = len(labels)
    return {"accuracy": correct / n, "log_loss": loss / n, "rows_per_s": n / elapsed}


class RiverCache:
    """River's figures by stream, rows, seed, learner and river version, kept in a JSON file (``None``: no file).

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "river.json")
    >>> c = RiverCache(path); c.put("sea/100/1/river-lr", {"accuracy": 0.9}); c.save()
    >>> RiverCache(path).get("sea/100/1/river-lr")
    {'accuracy': 0.9}
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.entries: dict[str, dict] = {}
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                self.entries = json.load(f)

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, figures: dict) -> None:
        self.entries[key] = figures

    def save(self) -> None:
        if self.path:
            with open(self.path, "w", encoding="utf-8") as f:
                json.dump(self.entries, f, indent=1, sort_keys=True)


def cached_river(cache: RiverCache, name: str, s, seed: int) -> dict:
    """River learner ``name`` on ``s``: from ``cache`` when it holds this exact run, else run (and cached)."""
    import river

    key = f"{s.name}/{len(s.y)}/{seed}/{name}/river-{river.__version__}"
    figures = cache.get(key)
    if figures is None:
        figures = run_river(name, s, seed)
        cache.put(key, figures)
    return dict(figures)


# ------------------------------------------------------------------ verdict
def verdict(learners: dict[str, dict]) -> dict:
    """The target against river on one stream, from each learner's figures (missing learners: ``None``).

    >>> L = {"default": {"accuracy": 0.90, "rows_per_s": 20000}, "river-arf": {"accuracy": 0.905, "rows_per_s": 500},
    ...      "river-lr": {"accuracy": 0.88, "rows_per_s": 3000}, "mlp8": {"accuracy": 0.91, "rows_per_s": 9000}}
    >>> v = verdict(L); v["default_accuracy_ok"], v["default_speed_ok"], v["best_ok"], v["best"], v["pass"]
    (True, True, True, 'mlp8', True)
    """
    ours = {k: v for k, v in learners.items() if k not in RIVER}
    river = {k: v for k, v in learners.items() if k in RIVER}
    out: dict = {"default_accuracy_ok": None, "default_speed_ok": None, "best_ok": None}
    default, arf = ours.get(DEFAULT), river.get("river-arf")
    if default and arf:
        out["default_vs_arf_accuracy"] = default["accuracy"] - arf["accuracy"]
        out["default_vs_arf_speed"] = default["rows_per_s"] / arf["rows_per_s"]
        out["default_accuracy_ok"] = out["default_vs_arf_accuracy"] >= -SLACK - 1e-12
        out["default_speed_ok"] = out["default_vs_arf_speed"] >= SPEEDUP
    if ours and river:
        best = max(ours, key=lambda k: ours[k]["accuracy"])
        best_river = max(river, key=lambda k: river[k]["accuracy"])
        out.update(best=best, best_river=best_river)
        out["best_vs_river_accuracy"] = ours[best]["accuracy"] - river[best_river]["accuracy"]
        out["best_ok"] = out["best_vs_river_accuracy"] >= 0
    checks = [out[k] for k in ("default_accuracy_ok", "default_speed_ok", "best_ok")]
    out["pass"] = None if any(c is None for c in checks) else all(checks)
    return out


def _mark(ok) -> str:
    return "-" if ok is None else ("PASS" if ok else "MISS")


def report(results: dict, learners: list[str], rows: int) -> str:
    """The markdown tables: accuracy (log loss) and rows/s per learner, then the verdicts."""
    lines = [f"### prequential accuracy (log loss) -- at most {rows} rows per stream", ""]
    lines += ["| stream | drift | rows | " + " | ".join(learners) + " |"]
    lines += ["|---|---|--:|" + "|".join("--:" for _ in learners) + "|"]
    for name, r in results.items():
        cells = [f"{r['learners'][k]['accuracy']:.3f} ({r['learners'][k]['log_loss']:.3f})" for k in learners]
        lines.append(f"| {name} | {r['drift']} | {r['n_rows']} | " + " | ".join(cells) + " |")
    lines += ["", "### rows/s", "", "| stream | " + " | ".join(learners) + " |"]
    lines += ["|---|" + "|".join("--:" for _ in learners) + "|"]
    for name, r in results.items():
        lines.append(
            f"| {name} | " + " | ".join(f"{r['learners'][k]['rows_per_s']:,.0f}" for k in learners) + " |"
        )
    lines += [
        "",
        f"### verdict: default accuracy >= ARF - {SLACK} at >= {SPEEDUP:g}x ARF's rows/s; best streamlearn >= best river",
        "",
        "| stream | default - ARF acc | default / ARF rows/s | best (ours) - best river acc | verdict |",
        "|---|--:|--:|--:|:-:|",
    ]
    for name, r in results.items():
        v = r["verdict"]
        acc = (
            f"{v['default_vs_arf_accuracy']:+.3f} {_mark(v['default_accuracy_ok'])}"
            if "default_vs_arf_accuracy" in v
            else "-"
        )
        speed = (
            f"{v['default_vs_arf_speed']:.1f}x {_mark(v['default_speed_ok'])}"
            if "default_vs_arf_speed" in v
            else "-"
        )
        best = (
            f"{v['best_vs_river_accuracy']:+.3f} ({v['best']} vs {v['best_river']}) {_mark(v['best_ok'])}"
            if "best" in v
            else "-"
        )
        lines.append(f"| {name} | {acc} | {speed} | {best} | {_mark(v['pass'])} |")
    passed = sum(1 for r in results.values() if r["verdict"]["pass"])
    lines += ["", f"{passed}/{len(results)} streams meet the target."]
    return "\n".join(lines)


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=20000, help="rows per stream (real sets: at most this many)")
    p.add_argument("--streams", default=",".join(STREAMS), help=f"comma list of {', '.join(STREAMS)}")
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar='NAME="OPTIONS"',
        help='a streamlearn configuration from `streamlearn run` options, e.g. mlp8="--model mlp '
        '--steps-per-batch 8 --lr 0.01" (repeatable; `default` is always there)',
    )
    p.add_argument(
        "--learners",
        "--configs",
        default=None,
        help=f"comma list of what to run: default, the --config names, {', '.join(RIVER)} (default: all)",
    )
    p.add_argument(
        "--seed", type=int, default=42, help="seed of the synthetic streams and the river learners"
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
    streams = [v.strip() for v in args.streams.split(",") if v.strip()]
    for v in streams:
        if v not in STREAMS:
            p.error(f"unknown stream {v!r}; known: {', '.join(STREAMS)}")
    try:
        configs = named_configs(args.config)
    except ValueError as exc:
        p.error(str(exc))
    known = [c.name for c in configs] + list(RIVER)
    learners = [v.strip() for v in args.learners.split(",") if v.strip()] if args.learners else known
    for v in learners:
        if v not in known:
            p.error(f"unknown learner {v!r}; known: {', '.join(known)}")
    configs = [c for c in configs if c.name in learners]

    import torch

    torch.set_num_threads(1)  # one core, like river
    cache = RiverCache(args.river_cache)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as work:
        for name in streams:
            t0 = time.perf_counter()
            s = make(name, args.rows, args.seed)
            print(
                f"stream {name}: {len(s.y)} rows x {s.X.shape[1]} features, {s.n_classes} classes "
                f"({s.note}); built in {time.perf_counter() - t0:.1f} s (not timed)",
                flush=True,
            )
            figures = run_streamlearn(s, configs, work) if configs else {}
            for k in RIVER:
                if k in learners:
                    figures[k] = cached_river(cache, k, s, args.seed)
            figures = {k: figures[k] for k in learners}
            for k, f in figures.items():
                print(
                    f"  {k:<16} {f['rows_per_s']:>10,.0f} rows/s  acc {f['accuracy']:.4f}  log loss {f['log_loss']:.4f}",
                    flush=True,
                )
            results[name] = {
                "n_rows": len(s.y),
                "n_features": int(s.X.shape[1]),
                "n_classes": s.n_classes,
                "drift": STREAMS[name][0],
                "note": s.note,
                "learners": figures,
                "verdict": verdict(figures),
            }
    cache.save()
    table = report(results, learners, args.rows)
    print()
    print(table)
    print(
        f"\ntorch {torch.__version__}, torch.set_num_threads(1); {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}; one pass per learner; ratios are within this run."
    )
    out = {
        "rows": args.rows,
        "seed": args.seed,
        "configs": {c.name: c.settings() for c in configs},
        "streams": results,
    }
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2, default=str)
    return out


if __name__ == "__main__":
    main()
