"""A synthetic ``streamlearn replay`` result, for the report's tests and doctests.

:func:`sample_result` follows the replay result schema (see
:mod:`stream.report`): every configuration sees the same stream of count
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
    count = {kind: sum(m["kind"] == kind for m in markers)
             for kind in ("alarm", "rollback", "adapt", "drift_dismissed", "validated", "rejected")}
    total = int(end_event[-1]) if n else 0
    seconds = float(np.sum(events / eps)) if n else 0.0
    summary = {
        "events": total,
        "batches": n,
        "accuracy": _weighted(accuracy, events),
        "log_loss": _weighted(log_loss, events),
        "mae": _weighted(mae, events),
        "rmse": None if task == "classification" or not n
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
            "accuracy": _rounded(np.clip(summary["accuracy"] + np.array([0.04, -0.02, -0.08]) - 0.01 * i, 0, 1)),
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
        return {"kind": kind, "event": int(end_event[batch]), "batch": batch,
                "ts": int(ts_start[batch]), "detail": detail}

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
