"""The report of ``streamlearn replay``: one self-contained HTML file, PNG plots, a JSON summary.

The replay driver hands :func:`write_report` its result dict (schema in
``stream.testing.report.sample_result``; lists under ``windows`` are per
micro-batch, in order). The report directory then holds ``summary.json`` (the
result, NaN as ``null``), ``metric.png``, ``per_class.png`` (classification
only), ``throughput.png`` and ``report.html``, which embeds the PNGs as data
URIs so it can be mailed or archived alone. :func:`format_table` is the plain
text comparison the CLI prints after a replay.

Examples
--------
>>> import tempfile
>>> from stream.testing.report import sample_result
>>> tmp = tempfile.TemporaryDirectory()
>>> files = write_report(sample_result(n_windows=40), tmp.name)
>>> files.html.name, files.json.name, sorted(files.plots)
('report.html', 'summary.json', ['metric', 'per_class', 'throughput'])
>>> load_result(files.json.parent)["configs"][1]["summary"]["rollbacks"]
1
>>> tmp.cleanup()
>>> print(format_table(sample_result(n_windows=40)))
config  events  accuracy  log loss  events/s  alarms  rollbacks  adapts  validated/published
a       20,000    0.8854    0.2191    39,626       1          0       1                 9/10
b       20,000    0.8535    0.2760    19,319       1          1       0                 9/10
"""

from __future__ import annotations

import base64
import functools
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import Any

import jinja2
import numpy as np
import orjson

from stream.replay.plots import config_color, write_plots

__all__ = ["ReportFiles", "write_report", "render_html", "format_table", "load_result", "dumps"]

SUMMARY_NAME = "summary.json"
HTML_NAME = "report.html"
MAX_MARKER_ROWS = 200  # per configuration in the HTML; summary.json keeps them all


@dataclass(frozen=True)
class ReportFiles:
    """Where :func:`write_report` put things; ``plots`` holds only the figures drawn."""

    html: Path
    json: Path
    plots: dict[str, Path] = field(default_factory=dict, hash=False)


def write_report(result: dict, out_dir: str | Path) -> ReportFiles:
    """Write ``summary.json``, the PNG plots and ``report.html`` into ``out_dir`` (created)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw = dumps(result)
    # Everything below reads the JSON form: the HTML then shows exactly what
    # summary.json holds, and numpy values and NaN are already plain.
    plain = orjson.loads(raw)
    json_path = out / SUMMARY_NAME
    json_path.write_bytes(raw)
    plots = {name: path for name, path in write_plots(plain, out).items() if path is not None}
    html_path = out / HTML_NAME
    html_path.write_text(
        render_html(plain, {name: path.read_bytes() for name, path in plots.items()}), encoding="utf-8"
    )
    return ReportFiles(html=html_path, json=json_path, plots=plots)


def load_result(path: str | Path) -> dict:
    """A result read back from ``summary.json``, or from the report directory holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY_NAME
    return orjson.loads(path.read_bytes())


def dumps(result: Any) -> bytes:
    """Pretty, valid JSON: numpy arrays and scalars as numbers, NaN and infinities as ``null``.

    >>> dumps({"x": np.array([1.5, np.nan]), "n": np.int64(3)}).decode().split()
    ['{', '"x":', '[', '1.5,', 'null', '],', '"n":', '3', '}']
    """
    return orjson.dumps(
        result,
        default=_default,
        option=(
            orjson.OPT_INDENT_2
            | orjson.OPT_SERIALIZE_NUMPY
            | orjson.OPT_NON_STR_KEYS
            | orjson.OPT_APPEND_NEWLINE
        ),
    )


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):  # orjson declines non-contiguous or object arrays
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


# --------------------------------------------------------------------------- #
# The terminal table
# --------------------------------------------------------------------------- #


def format_table(result: dict) -> str:
    """One aligned row per configuration: the numbers to compare after a replay."""
    regression = result.get("task") == "regression"
    metrics = (
        (("rmse", "RMSE"), ("mae", "MAE"))
        if regression
        else (("accuracy", "accuracy"), ("log_loss", "log loss"))
    )
    header = [
        "config",
        "events",
        metrics[0][1],
        metrics[1][1],
        "events/s",
        "alarms",
        "rollbacks",
        "adapts",
        "validated/published",
    ]
    rows = []
    for config in result.get("configs") or []:
        s = config.get("summary") or {}
        rows.append(
            [
                _clip(str(config.get("name", "?")), 32),
                _fmt(s.get("events"), "{:,.0f}"),
                _fmt(s.get(metrics[0][0]), "{:.4f}"),
                _fmt(s.get(metrics[1][0]), "{:.4f}"),
                _fmt(s.get("events_per_second"), "{:,.0f}"),
                _fmt(s.get("alarms"), "{:,.0f}"),
                _fmt(s.get("rollbacks"), "{:,.0f}"),
                _fmt(s.get("adapts"), "{:,.0f}"),
                f"{_fmt(s.get('versions_validated'), '{:,.0f}')}/{_fmt(s.get('versions_published'), '{:,.0f}')}",
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        # The name column reads left to right; numbers line up on the right.
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` (missing, NaN, not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: Any, spec: str) -> str:
    number = _number(value)
    return "-" if number is None else spec.format(number)


# --------------------------------------------------------------------------- #
# The HTML page
# --------------------------------------------------------------------------- #

# (summary key, header, format, which value is best: max, min or None)
_COMMON_HEAD = [("events", "events", "{:,.0f}", None), ("batches", "batches", "{:,.0f}", None)]
_METRICS = {
    "classification": [("accuracy", "accuracy", "{:.4f}", max), ("log_loss", "log loss", "{:.4f}", min)],
    "regression": [("rmse", "RMSE", "{:.4f}", min), ("mae", "MAE", "{:.4f}", min)],
}
_COMMON_TAIL = [
    ("events_per_second", "events/s", "{:,.0f}", max),
    ("engine_seconds", "engine s", "{:,.2f}", min),
    ("alarms", "alarms", "{:,.0f}", None),
    ("rollbacks", "rollbacks", "{:,.0f}", None),
    ("adapts", "adapts", "{:,.0f}", None),
    ("dismissed", "dismissed", "{:,.0f}", None),
]
_KNOWN_MARKERS = {"alarm", "rollback", "adapt", "drift_dismissed", "validated", "rejected"}

_CAPTIONS = {
    "metric": "Each line is one configuration's prequential (test-then-train) {what} per window, smoothed "
    "with a rolling mean; vertical lines mark drift alarms (dashed), rollbacks (solid, R), "
    "adaptations (dash-dot) and dismissed alarms (dotted), and the ticks along the bottom are "
    "validated (|) and rejected (x) model versions.",
    "per_class": "Each group is one class (n = its events); a bar is the share of that class the "
    "configuration predicted correctly, so a short bar is a class the model neglects.",
    "throughput": "Events learned per second of engine time in each window; the dashed line is the rate "
    "the reader fetched records at, so engine lines above it mean a live run is bound by "
    "reading, not learning.",
}
_TITLES = {
    "metric": "Prequential metric over the stream",
    "per_class": "Per-class accuracy",
    "throughput": "Throughput",
}


def render_html(result: dict, images: dict[str, bytes]) -> str:
    """The report page for a plain (JSON-form) ``result`` with ``images`` name -> PNG bytes."""
    return _environment().get_template("report.html.j2").render(**_context(result, images))


@functools.cache
def _environment() -> jinja2.Environment:
    # Autoescape: configuration names, settings and marker details come from
    # user files and broker data, and end up in the page.
    return jinja2.Environment(
        loader=jinja2.PackageLoader("stream.replay", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _context(result: dict, images: dict[str, bytes]) -> dict:
    task = result.get("task") or "classification"
    source = result.get("source") or {}
    configs = result.get("configs") or []
    topics = [str(t) for t in source.get("topics") or []]
    return {
        "title": f"Backtest of {', '.join(topics) or 'an unnamed source'}",
        "range": f"{_show(source.get('from'), 'earliest')} → {_show(source.get('to'), 'latest')}",
        "task": task,
        "meta": _meta(result, source, topics),
        "partitions": _partitions(source.get("partitions")),
        "command": result.get("command") or "",
        "seed": result.get("seed"),
        "version": result.get("streamlearn_version") or "",
        "created_at": result.get("created_at") or "",
        "dead_letter_alarm": _dead_letter_alarm(result.get("dead_letter_rate")),
        "summary": _summary_table(configs, task),
        "figures": _figures(result, images, task),
        "configs": [_config_view(i, c) for i, c in enumerate(configs)],
    }


def _meta(result: dict, source: dict, topics: list[str]) -> list[tuple[str, str]]:
    read = result.get("read") or {}
    kind = source.get("kind") or "?"
    items = [("source", str(kind))]
    if source.get("bootstrap"):
        items.append(("bootstrap", str(source["bootstrap"])))
    items += [
        ("topics" if kind == "kafka" else "files", ", ".join(topics) or "-"),
        ("range", f"from {_show(source.get('from'), 'earliest')} to {_show(source.get('to'), 'latest')}"),
        ("records in range", _fmt(source.get("records"), "{:,.0f}")),
        (
            "read",
            f"{_fmt(read.get('records'), '{:,.0f}')} records in {_fmt(read.get('seconds'), '{:,.2f}')} s "
            f"({_fmt(read.get('records_per_second'), '{:,.0f}')} records/s)",
        ),
        ("dead letters", _fmt(read.get("dead_letters"), "{:,.0f}")),
        ("not learned", _rate_text(result.get("dead_letter_rate"))),
        ("task", str(result.get("task") or "?")),
        ("seed", _show(result.get("seed"), "-")),
        ("created", str(result.get("created_at") or "-")),
        ("streamlearn", str(result.get("streamlearn_version") or "-")),
    ]
    return items


def _rate_text(verdict: Any) -> str:
    """``33.3% (400 of 1,200; threshold 0.05)``, or ``-`` for a result from before the check."""
    if not isinstance(verdict, dict) or _number(verdict.get("rate")) is None:
        return "-"
    return (
        f"{_fmt(verdict.get('rate'), '{:.1%}')} ({_fmt(verdict.get('rejected'), '{:,.0f}')} of "
        f"{_fmt(verdict.get('records'), '{:,.0f}')}; threshold {_fmt(verdict.get('threshold'), '{:g}')})"
    )


def _dead_letter_alarm(verdict: Any) -> dict | None:
    """What the report's warning box says when the range's dead-letter rate passed its threshold, else None."""
    if not isinstance(verdict, dict) or not verdict.get("exceeded"):
        return None
    reasons = [
        (str(pair[0]), _fmt(pair[1], "{:,.0f}"))
        for pair in verdict.get("top_reasons") or []
        if isinstance(pair, (list, tuple)) and len(pair) == 2
    ]
    return {"rate": _rate_text(verdict), "reasons": reasons}


def _partitions(partitions: Any) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, span in (partitions or {}).items():
        start, end = (list(span) + [None, None])[:2] if isinstance(span, (list, tuple)) else (None, None)
        count = (
            _number(end) - _number(start) if _number(start) is not None and _number(end) is not None else None
        )
        rows.append((str(name), _fmt(start, "{:.0f}"), _fmt(end, "{:.0f}"), _fmt(count, "{:,.0f}")))
    # "t:10" after "t:9": sort on the partition number, not the text.
    return sorted(rows, key=lambda r: (r[0].rpartition(":")[0], _int_or_text(r[0].rpartition(":")[2])))


def _int_or_text(text: str) -> tuple:
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def _summary_table(configs: list[dict], task: str) -> dict:
    columns = _COMMON_HEAD + _METRICS.get(task, _METRICS["classification"]) + _COMMON_TAIL
    values = [[_number((c.get("summary") or {}).get(key)) for key, *_ in columns] for c in configs]
    best = []
    for j, (_, _, _, pick) in enumerate(columns):
        known = [row[j] for row in values if row[j] is not None]
        # A best value needs a comparison: one configuration is not "best".
        best.append(pick(known) if pick is not None and len(known) > 1 and len(set(known)) > 1 else None)
    rows = []
    for i, (config, row) in enumerate(zip(configs, values)):
        cells = [
            {"text": "-" if v is None else spec.format(v), "best": v is not None and v == best[j]}
            for j, (v, (_, _, spec, _)) in enumerate(zip(row, columns))
        ]
        summary = config.get("summary") or {}
        versions = "/".join(
            _fmt(summary.get(k), "{:,.0f}")
            for k in ("versions_validated", "versions_rejected", "versions_published")
        )
        cells.append({"text": versions, "best": False})
        rows.append(
            {
                "name": str(config.get("name", "?")),
                "color": config_color(i),
                "cells": cells,
                "stopped": str(summary.get("stopped_because") or ""),
            }
        )
    # Versions share one cell, validated/rejected/published: three counts of one thing.
    return {"headers": [header for _, header, _, _ in columns] + ["versions ok/rej/all"], "rows": rows}


def _figures(result: dict, images: dict[str, bytes], task: str) -> list[dict]:
    what = "MAE (top) and RMSE (bottom)" if task == "regression" else "accuracy (top) and log loss (bottom)"
    figures = []
    for name in ("metric", "per_class", "throughput"):
        png = images.get(name)
        reason = None
        if png is None:
            reason = (
                "Per-class accuracy applies to classification; this is a regression backtest, so there "
                "is no figure here."
                if name == "per_class" and task == "regression"
                else "No configuration recorded per-class counts."
                if name == "per_class"
                else "This figure was not drawn."
            )
        figures.append(
            {
                "name": name,
                "title": _TITLES[name],
                "caption": _CAPTIONS[name].format(what=what),
                "uri": None
                if png is None
                else "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
                "reason": reason,
            }
        )
    return figures


def _config_view(i: int, config: dict) -> dict:
    markers = [m for m in config.get("markers") or [] if isinstance(m, dict)]
    return {
        "name": str(config.get("name", "?")),
        "color": config_color(i),
        "file": config.get("file"),
        "settings": _flatten(config.get("settings") or {}),
        "stopped": str((config.get("summary") or {}).get("stopped_because") or ""),
        "markers": [_marker_row(m) for m in markers[:MAX_MARKER_ROWS]],
        "more_markers": max(len(markers) - MAX_MARKER_ROWS, 0),
    }


def _marker_row(marker: dict) -> dict:
    kind = str(marker.get("kind", "?"))
    return {
        "kind": kind,
        "css": kind if kind in _KNOWN_MARKERS else "other",
        "event": _fmt(marker.get("event"), "{:,.0f}"),
        "batch": _fmt(marker.get("batch"), "{:.0f}"),
        "time": _iso_ms(marker.get("ts")),
        "detail": str(marker.get("detail") or ""),
    }


def _flatten(settings: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``{"replay": {"size": 2}}`` as ``[("replay.size", "2")]``; lists stay one compact JSON cell."""
    if not isinstance(settings, dict):
        return [(prefix or "value", _setting(settings))]
    rows = []
    for key, value in settings.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        rows.extend(_flatten(value, name) if isinstance(value, dict) and value else [(name, _setting(value))])
    return rows


def _setting(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=_default, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _iso_ms(ts: Any) -> str:
    """Epoch milliseconds as ISO 8601 UTC, e.g. ``2023-11-14T22:13:20.000Z``; blank if unknown."""
    number = _number(ts)
    if number is None:
        return ""
    try:
        moment = datetime.fromtimestamp(number / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _show(value: Any, missing: str) -> str:
    return missing if value is None or value == "" else str(value)
