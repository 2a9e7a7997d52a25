"""A synthetic ``streamlearn replay`` result, for the report's tests and doctests.

:func:`sample_result` follows the replay result schema (see
:mod:`stream.replay.report`): every configuration sees the same stream of count
windows, its metric dips at a change point in the middle and recovers, a drift
alarm fires just after the change, the first configuration adapts and the
second rolls back, and versions are validated (or rejected) along the way.

Examples
--------
>>> result = sample_result(n_windows=50, configs=("a", "b"))
>>> [c["name"] for c in result["configs"]], len(result["configs"][0]["windows"]["end_event"])
(['a', 'b'], 50)
>>> sorted({m["kind"] for m in result["configs"][1]["markers"]})
['alarm', 'drift_dismissed', 'rejected', 'rollback', 'validated']
>>> sample_result(n_windows=50) == sample_result(n_windows=50)
True
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["sample_result"]

_EVENTS_PER_WINDOW = 500
_T0_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
_MS_PER_WINDOW = 5_000
_MODELS = ("mlp", "logreg", "hoeffding", "mlp-wide", "linear", "forest", "knn", "naive-bayes")


def sample_result(
    n_windows: int = 200,
    configs: Sequence[str] = ("a", "b"),
    task: str = "classification",
    seed: int = 0,
) -> dict:
    """A plausible replay result over ``n_windows`` windows of 500 events each.

    Deterministic for a ``seed``. ``task`` is ``"classification"`` or
    ``"regression"``; ``n_windows=0`` gives configurations with empty windows.
    """
    if task not in ("classification", "regression"):
        raise ValueError(f"task {task!r}: choose classification or regression")
    rng = np.random.default_rng(seed)
    n = int(n_windows)
    events = np.full(n, _EVENTS_PER_WINDOW, dtype=np.int64)
    end_event = np.cumsum(events)
    ts_start = _T0_MS + np.arange(n, dtype=np.int64) * _MS_PER_WINDOW
    total = int(end_event[-1]) if n else 0
    half = total // 2
    partitions = {"clicks:0": [100, 100 + half + 2], "clicks:1": [90, 90 + total - half + 1]}
    records = sum(end - start for start, end in partitions.values())
    return {
        "streamlearn_version": "0.1.0",
        "created_at": "2026-11-24T10:00:00Z",
        "command": "streamlearn replay --topic clicks --from -2h "
        + " ".join(f"--config {name}.yaml" for name in configs),
        "task": task,
        "seed": seed,
        "source": {
            "kind": "kafka",
            "bootstrap": "127.0.0.1:9092",
            "topics": ["clicks"],
            "from": "-2h",
            "to": "latest",
            "partitions": partitions,
            "records": records,
        },
        "read": {
            "records": records,
            "seconds": round(records / 5242.1, 3),
            "records_per_second": 5242.1,
            "dead_letters": records - total,
        },
        # The worst configuration's share of records not learned (stream.engine.rejects); here all
        # read the same records with count windows, so one verdict, well within the threshold.
        "dead_letter_rate": {
            "records": records,
            "rejected": records - total,
            "rate": (records - total) / records if records else 0.0,
            "threshold": 0.05,
            "min_records": 200,
            "exceeded": False,
            "alarmed": False,
            "top_reasons": [["bad json: unexpected end of input", records - total]]
            if records > total
            else [],
        },
        "configs": [
            _config(i, name, task, rng, events, end_event, ts_start) for i, name in enumerate(configs)
        ],
    }


def _config(i, name, task, rng, events, end_event, ts_start) -> dict:
    n = len(events)
    change = n // 2
    steps = np.arange(n)
    # The metric falls at the change and recovers over ~n/10 windows; later
    # configurations are a little worse and a little slower, so the report has
    # a best value per column to highlight.
    since = np.where(steps >= change, steps - change, -1)
    dip = np.where(since >= 0, np.exp(-since / max(n / 10, 1)), 0.0)
    noise = rng.normal(0.0, 1.0, n)
    if task == "classification":
        accuracy = np.clip(0.92 - 0.03 * i - 0.3 * dip + 0.015 * noise, 0.0, 1.0)
        log_loss = -np.log(np.clip(accuracy, 0.05, None)) * 1.6 + 0.02 * np.abs(rng.normal(size=n))
        mae = rmse = [None] * n
        accuracy, log_loss = _rounded(accuracy), _rounded(log_loss)
    else:
        mae_arr = 0.4 + 0.05 * i + 0.8 * dip + 0.03 * np.abs(noise)
        mae, rmse = _rounded(mae_arr), _rounded(mae_arr * 1.25 + 0.02 * np.abs(rng.normal(size=n)))
        accuracy = log_loss = [None] * n
    eps = 40_000.0 / (1 + i) * np.exp(rng.normal(0.0, 0.15, n))
    windows = {
        "end_event": end_event.tolist(),
        "events": events.tolist(),
        "ts_start": ts_start.tolist(),
        "ts_end": (ts_start + _MS_PER_WINDOW - 1).tolist(),
        "accuracy": accuracy,
        "log_loss": log_loss,
        "mae": mae,
        "rmse": rmse,
        "events_per_second": _rounded(eps, 1),
    }
    markers = _markers(i, n, change, end_event, ts_start, task)
    count = {
        kind: sum(m["kind"] == kind for m in markers)
        for kind in ("alarm", "rollback", "adapt", "drift_dismissed", "validated", "rejected")
    }
    total = int(end_event[-1]) if n else 0
    seconds = float(np.sum(events / eps)) if n else 0.0
    summary = {
        "events": total,
        "batches": n,
        "accuracy": _weighted(accuracy, events),
        "log_loss": _weighted(log_loss, events),
        "mae": _weighted(mae, events),
        "rmse": None
        if task == "classification" or not n
        else round(float(np.sqrt(np.average(np.square(rmse), weights=events))), 4),
        "events_per_second": round(total / seconds, 1) if seconds else None,
        "engine_seconds": round(seconds, 3),
        "alarms": count["alarm"],
        "rollbacks": count["rollback"],
        "adapts": count["adapt"],
        "dismissed": count["drift_dismissed"],
        "versions_published": count["validated"] + count["rejected"],
        "versions_validated": count["validated"],
        "versions_rejected": count["rejected"],
        "stopped_because": "end of range",
    }
    per_class = None
    if task == "classification" and n:
        support = rng.multinomial(total, [0.5, 0.3, 0.2])
        per_class = {
            "classes": [0, 1, 2],
            "support": support.tolist(),
            "accuracy": _rounded(
                np.clip(summary["accuracy"] + np.array([0.04, -0.02, -0.08]) - 0.01 * i, 0, 1)
            ),
        }
    return {
        "name": name,
        "file": f"{name}.yaml",
        "settings": {
            "model": _MODELS[i % len(_MODELS)],
            "lr": round(0.01 / (1 + i), 5),
            "window": f"count:{_EVENTS_PER_WINDOW}",
            "ewc_lambda": 0.0 if i % 2 else 10.0,
            "replay": {"kind": "reservoir", "size": 2000},
            "drift": ["adwin"],
        },
        "summary": summary,
        "windows": windows,
        "per_class": per_class,
        "markers": markers,
    }


def _markers(i, n, change, end_event, ts_start, task) -> list[dict]:
    def at(kind: str, batch: int, detail: str) -> dict:
        return {
            "kind": kind,
            "event": int(end_event[batch]),
            "batch": batch,
            "ts": int(ts_start[batch]),
            "detail": detail,
        }

    if n < 8:
        return []
    out = []
    metric, level = ("accuracy", 0.9 - 0.03 * i) if task == "classification" else ("mae", 0.4 + 0.05 * i)
    every = max(n // 10, 1)
    for version, batch in enumerate(range(every - 1, n, every), start=1):
        # The first candidate after the change is trained on the old world and
        # fails the gate; the others pass.
        if change <= batch < change + every:
            out.append(at("rejected", batch, f"v{version} {metric} worse than the validated version"))
        else:
            out.append(at("validated", batch, f"v{version} {metric} {level:.2f}"))
    out.append(at("alarm", change + 2, f"adwin drift: error rate {0.08 + 0.03 * i:.2f} -> 0.35"))
    if i % 2 == 0:
        out.append(at("adapt", change + 4, "both degraded: ewc_lambda 10 -> 1, retrain scheduled"))
    else:
        out.append(at("drift_dismissed", n // 4, "warmup: fewer than 5 batches since the last decision"))
        out.append(at("rollback", change + 3, f"snapshot v{max(change // every, 1)} better by 0.21"))
    return sorted(out, key=lambda m: (m["event"], m["kind"]))


def _rounded(values, digits: int = 4) -> list[float]:
    return [round(float(v), digits) for v in values]


def _weighted(values, weights) -> float | None:
    if not len(weights) or values[0] is None:
        return None
    return round(float(np.average(values, weights=weights)), 4)


# --------------------------------------------------------------------------- #
# What a reader sees: the page rendered by a real browser
# --------------------------------------------------------------------------- #


def screenshot(
    browser: str,
    html: str | os.PathLike,
    png: str | os.PathLike,
    *,
    size=(1200, 2400),
    scratch: str | os.PathLike | None = None,
) -> np.ndarray:
    """Render ``html`` in headless Chromium (``browser``), save ``png``; its (height, width, 3) 0..255 pixels."""
    from matplotlib.image import imread

    scratch = Path(scratch or Path(png).parent)
    env = {
        **os.environ,
        "HOME": str(scratch),
        "XDG_CONFIG_HOME": str(scratch / "config"),
        "XDG_CACHE_HOME": str(scratch / "cache"),
    }
    proc = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={scratch / 'profile'}",
            f"--window-size={size[0]},{size[1]}",
            f"--screenshot={png}",
            Path(html).resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    if proc.returncode != 0 or not Path(png).exists():
        raise RuntimeError(
            f"chromium could not take the screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
        )
    return (imread(png)[..., :3] * 255).astype(np.int16)


def page_problems(image: np.ndarray, n_configs: int, *, header_rows: int = 300) -> list[str]:
    """Why a report screenshot does not look like a report with figures (an empty list: it does).

    Checks that the page is not one colour, has many colours, and that every
    configuration's line colour (saturated, not grey) is drawn on a few hundred
    rows below the header -- far more than the colour chips of the table.
    """
    from stream.replay.plots import config_color

    problems = []
    pixels = image.reshape(-1, 3).astype(np.int64)
    counts = np.bincount((pixels[:, 0] << 16) | (pixels[:, 1] << 8) | pixels[:, 2])
    if counts.max() >= 0.9 * len(pixels):
        problems.append("the page is mostly one colour: blank or unstyled")
    if np.count_nonzero(counts) < 50:
        problems.append(f"only {np.count_nonzero(counts)} colours on the page")
    saturated = (image.max(axis=2) - image.min(axis=2)) > 60
    rows = []
    for i in range(n_configs):
        rgb = np.array([int(config_color(i)[j : j + 2], 16) for j in (1, 3, 5)])
        near = (np.abs(image - rgb).max(axis=2) < 40) & saturated
        rows.append(np.flatnonzero(near.any(axis=1)))
    common = rows[0]
    for r in rows[1:]:
        common = np.intersect1d(common, r)
    common = common[common > header_rows]
    if len(common) < 200:
        problems.append(
            f"the configurations' line colours appear on only {len(common)} rows: no figures drawn"
        )
    return problems
