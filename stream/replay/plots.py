"""The backtest report's figures: prequential metric, per-class accuracy, throughput.

Figures are built on :class:`matplotlib.figure.Figure` directly, never through
pyplot: no global figure registry, no backend switch, so reports can be
rendered from any thread. Each configuration keeps one tab10 colour across all
figures (:func:`config_color`).

Examples
--------
>>> from stream.testing.report import sample_result
>>> fig = metric_figure(sample_result(n_windows=100))
>>> [ax.get_ylabel() for ax in fig.axes]
['accuracy', 'log loss']
>>> per_class_figure(sample_result(n_windows=100, task="regression")) is None
True
>>> smooth([1.0, None, 3.0, 5.0], 2).tolist()
[1.0, 1.0, 3.0, 4.0]
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, FuncFormatter, NullFormatter

__all__ = [
    "PLOTS",
    "config_color",
    "smooth",
    "downsample",
    "metric_figure",
    "per_class_figure",
    "throughput_figure",
    "write_plots",
]

PLOTS = ("metric", "per_class", "throughput")
MAX_POINTS = 2000  # per line: a 1100 px wide PNG cannot show more
SMOOTH_FRACTION = 0.01

_TAB10 = [mcolors.to_hex(c) for c in mcolors.TABLEAU_COLORS.values()]
_FIGSIZE = (11.0, 6.6)
_DPI = 100

# Kind -> (colour for a single configuration, line style, width, legend label).
# With several configurations a vertical marker takes its configuration's
# colour instead, so the line style alone has to tell the kinds apart.
_VERTICAL = {
    "alarm": ("#f28e2b", (0, (4, 3)), 0.9, "drift alarm"),
    "rollback": ("#d62728", "solid", 1.6, "rollback (R)"),
    "adapt": ("#9467bd", (0, (8, 3, 2, 3)), 1.1, "adapt"),
    "drift_dismissed": ("#7f7f7f", (0, (1, 2)), 1.1, "drift dismissed"),
}
_TICKS = {  # kind -> (single-config colour, marker, size, legend label)
    "validated": ("#2ca02c", "|", 9, "validated version"),
    "rejected": ("#7f7f7f", "x", 5, "rejected version"),
}
_NEUTRAL = "#444444"
_ENG = EngFormatter(sep="")
_MAX_R_LABELS = 60  # past this, the "R" labels are noise; the red lines remain


def config_color(index: int) -> str:
    """The tab10 colour of the ``index``-th configuration (cycles after ten).

    >>> config_color(0), config_color(10)
    ('#1f77b4', '#1f77b4')
    """
    return _TAB10[index % len(_TAB10)]


def smooth(values: Sequence[float | None], k: int | None = None) -> np.ndarray:
    """Trailing rolling mean over ``k`` windows (default ~1% of them, at least 1).

    ``None`` and NaN entries are left out of each mean rather than poisoning it;
    a point stays NaN only when its whole window of ``k`` values is missing.
    """
    v = np.asarray(values, dtype=float) if len(values) else np.zeros(0)
    if k is None:
        k = smoothing_windows(len(v))
    ok = ~np.isnan(v)
    sums = np.concatenate(([0.0], np.cumsum(np.where(ok, v, 0.0))))
    counts = np.concatenate(([0], np.cumsum(ok)))
    hi = np.arange(1, len(v) + 1)
    lo = np.maximum(hi - k, 0)
    n = counts[hi] - counts[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[hi] - sums[lo]) / n, np.nan)


def smoothing_windows(n: int) -> int:
    return max(1, round(n * SMOOTH_FRACTION))


def downsample(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Every k-th point (and the last) so a line has at most ~``max_points``.

    Applied after :func:`smooth`, so striding loses no trend the eye could see.

    >>> x, y = downsample(np.arange(10), np.arange(10), max_points=4)
    >>> x.tolist()
    [0, 3, 6, 9]
    """
    if len(x) <= max_points:
        return x, y
    step = math.ceil(len(x) / max_points)
    idx = np.arange(0, len(x), step)
    if idx[-1] != len(x) - 1:
        idx = np.append(idx, len(x) - 1)
    return x[idx], y[idx]


# --------------------------------------------------------------------------- #
# Figures
# --------------------------------------------------------------------------- #


def metric_figure(result: dict) -> Figure:
    """The prequential metric against events seen, one line per configuration, with markers."""
    configs = result.get("configs") or []
    if result.get("task") == "regression":
        panels = (("mae", "MAE"), ("rmse", "RMSE"))
    else:
        panels = (("accuracy", "accuracy"), ("log_loss", "log loss"))
    fig = Figure(figsize=_FIGSIZE, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    several = len(configs) > 1
    ks = {smoothing_windows(len(_windows(c).get("end_event") or [])) for c in configs}
    k = ks.pop() if len(ks) == 1 else None
    k_text = "~1% of the windows" if k is None else f"{k} window" if k == 1 else f"{k} windows"
    for ax, (key, label) in zip((top, bottom), panels):
        drawn = False
        shown: list[np.ndarray] = []
        for i, config in enumerate(configs):
            x, y = _series(config, key)
            if np.isfinite(y).any():
                ax.plot(x, y, color=config_color(i), lw=1.4, solid_joinstyle="round")
                drawn = True
                shown.append(y[np.isfinite(y)])
            _vertical_markers(ax, config, i, several, label_rollbacks=ax is top, n_configs=len(configs))
        if key != "accuracy" and shown:
            _clip_spikes(ax, np.concatenate(shown))
        ax.set_ylabel(label)
        ax.grid(True, color="#e3e3e3", lw=0.6)
        ax.set_axisbelow(True)
        if not drawn:
            _empty(ax, f"no {label} recorded")
    title = f"Prequential metric (rolling mean over {k_text})"
    if several and _kinds_present(configs):
        title += "; markers take their configuration's colour"
    top.set_title(title, loc="left", fontsize=11)
    rows = len(configs) if several else 1
    if any(_markers_of(c, _TICKS) for c in configs):
        _reserve_bottom(bottom, 0.06 + 0.045 * rows)
        for i, config in enumerate(configs):
            _version_ticks(bottom, config, i, several)
    bottom.set_xlabel("events seen")
    bottom.xaxis.set_major_formatter(EngFormatter(sep=""))
    _legend(fig, configs, kinds=_kinds_present(configs), several=several)
    return fig


def per_class_figure(result: dict) -> Figure | None:
    """Grouped bars of per-class accuracy (recall), or ``None`` for regression or no counts."""
    if result.get("task") == "regression":
        return None
    configs = [(i, c) for i, c in enumerate(result.get("configs") or []) if c.get("per_class")]
    if not configs:
        return None
    # The union of classes, in first-seen order; a configuration that never
    # saw a class simply has no bar there.
    support: dict = {}
    for _, config in configs:
        pc = config["per_class"]
        for cls, n in zip(pc.get("classes") or [], pc.get("support") or []):
            support.setdefault(_key(cls), []).append(n)
    classes = list(support)
    limit = 40
    shown = (
        classes
        if len(classes) <= limit
        else sorted(classes, key=lambda c: -max(v or 0 for v in support[c]))[:limit]
    )
    pos = {cls: j for j, cls in enumerate(shown)}
    fig = Figure(figsize=(_FIGSIZE[0], 4.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(configs)
    label_bars = len(shown) * len(configs) <= 24
    for slot, (i, config) in enumerate(configs):
        pc = config["per_class"]
        xs, ys = [], []
        for cls, acc in zip(pc.get("classes") or [], pc.get("accuracy") or []):
            if _key(cls) in pos and acc is not None and np.isfinite(acc):
                xs.append(pos[_key(cls)] - 0.4 + width * (slot + 0.5))
                ys.append(float(acc))
        bars = ax.bar(xs, ys, width=width * 0.92, color=config_color(i))
        if label_bars:
            ax.bar_label(bars, fmt="%.2f", fontsize=7.5, padding=2, color="#333333")
    ax.set_xticks(range(len(shown)))
    ax.set_xticklabels(
        [f"{_text(c)}\nn={_support_text(support[c])}" for c in shown], fontsize=8 if len(shown) > 12 else 9
    )
    ax.set_xlim(-0.6, len(shown) - 0.4)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("accuracy (recall)")
    ax.grid(True, axis="y", color="#e3e3e3", lw=0.6)
    ax.set_axisbelow(True)
    title = "Per-class accuracy (recall); n = support"
    if len(shown) < len(classes):
        title += f" — the {len(shown)} largest of {len(classes)} classes"
    ax.set_title(title, loc="left", fontsize=11)
    _legend(
        fig, [c for _, c in configs], kinds=(), several=False, colors=[config_color(i) for i, _ in configs]
    )
    return fig


def throughput_figure(result: dict) -> Figure:
    """Engine events/s per window against events seen, plus the reader's rate."""
    configs = result.get("configs") or []
    fig = Figure(figsize=(_FIGSIZE[0], 4.2), layout="constrained")
    ax = fig.subplots()
    positive = []
    for i, config in enumerate(configs):
        x, y = _series(config, "events_per_second")
        if np.isfinite(y).any():
            ax.plot(x, y, color=config_color(i), lw=1.3)
            positive.append(y[np.isfinite(y) & (y > 0)])
    rate = (result.get("read") or {}).get("records_per_second")
    extra = []
    if rate is not None and np.isfinite(rate) and rate > 0:
        ax.axhline(rate, color=_NEUTRAL, ls=(0, (5, 3)), lw=1.1)
        positive.append(np.array([float(rate)]))
        extra.append(
            (Line2D([], [], color=_NEUTRAL, ls=(0, (5, 3)), lw=1.1), f"reader {rate:,.0f} records/s")
        )
    values = np.concatenate(positive) if positive else np.zeros(0)
    if len(values) and values.max() > 10 * values.min():
        ax.set_yscale("log")  # an order of magnitude apart: linear would flatten the slow ones
        # Within two decades the minor ticks 2x and 5x are labelled too, else a
        # short log axis would carry a single label.
        few_decades = values.max() < 100 * values.min()
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_log_label) if few_decades else NullFormatter())
    else:
        ax.set_ylim(bottom=0)
    if not len(values):
        _empty(ax, "no throughput recorded")
    ax.set_ylabel("events/s")
    ax.yaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_xlabel("events seen")
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.grid(True, which="major", color="#e3e3e3", lw=0.6)
    ax.set_axisbelow(True)
    ax.set_title("Engine throughput per window (smoothed like the metric)", loc="left", fontsize=11)
    _legend(fig, configs, kinds=(), several=False, extra=extra)
    return fig


def write_plots(result: dict, out_dir: str | Path, *, dpi: int = _DPI) -> dict[str, Path | None]:
    """Save ``metric.png``, ``per_class.png`` (classification only) and ``throughput.png``.

    Returns name -> path, with ``None`` for a figure that does not apply.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "metric": metric_figure(result),
        "per_class": per_class_figure(result),
        "throughput": throughput_figure(result),
    }
    paths: dict[str, Path | None] = {}
    for name, fig in figures.items():
        if fig is None:
            paths[name] = None
            continue
        path = out / f"{name}.png"
        fig.savefig(path, dpi=dpi, facecolor="white")
        paths[name] = path
    return paths


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def _windows(config: dict) -> dict:
    return config.get("windows") or {}


def _series(config: dict, key: str) -> tuple[np.ndarray, np.ndarray]:
    w = _windows(config)
    x = np.asarray(w.get("end_event") or [], dtype=float)
    values = w.get(key) or []
    n = min(len(x), len(values))
    if not n:
        return np.zeros(0), np.zeros(0)
    return downsample(x[:n], smooth(values[:n]))


def _markers_of(config: dict, kinds: Iterable[str]) -> list[dict]:
    kinds = set(kinds)
    return [
        m
        for m in config.get("markers") or []
        if m.get("kind") in kinds and isinstance(m.get("event"), (int, float))
    ]


def _kinds_present(configs: Sequence[dict]) -> list[str]:
    present = {m["kind"] for c in configs for m in _markers_of(c, (*_VERTICAL, *_TICKS))}
    return [k for k in (*_VERTICAL, *_TICKS) if k in present]


def _vertical_markers(
    ax, config: dict, i: int, several: bool, *, label_rollbacks: bool, n_configs: int
) -> None:
    for kind, (color, ls, lw, _) in _VERTICAL.items():
        xs = [m["event"] for m in _markers_of(config, (kind,))]
        if not xs:
            continue
        c = config_color(i) if several else color
        # A line collection per kind: one artist, however many markers.
        ax.vlines(
            xs,
            0,
            1,
            transform=ax.get_xaxis_transform(),
            colors=c,
            linestyles=[ls],
            linewidths=lw,
            alpha=0.85,
            zorder=1.5,
        )
        if kind == "rollback" and label_rollbacks and len(xs) <= _MAX_R_LABELS:
            # Staggered per configuration so two configs' labels never overlap.
            y = 0.98 - 0.07 * (i if n_configs > 1 else 0)
            for x in xs:
                ax.text(
                    x,
                    y,
                    "R",
                    transform=ax.get_xaxis_transform(),
                    color=c,
                    fontsize=8,
                    fontweight="bold",
                    ha="center",
                    va="top",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": c, "lw": 0.8},
                )


def _version_ticks(ax, config: dict, i: int, several: bool) -> None:
    row = 0.035 + 0.045 * (i if several else 0)
    for kind, (color, marker, size, _) in _TICKS.items():
        xs = [m["event"] for m in _markers_of(config, (kind,))]
        if xs:
            ax.plot(
                xs,
                [row] * len(xs),
                transform=ax.get_xaxis_transform(),
                ls="none",
                marker=marker,
                ms=size,
                mew=1.5,
                color=config_color(i) if several else color,
                zorder=3,
            )


def _clip_spikes(ax, values: np.ndarray) -> None:
    """Keep an unbounded metric readable: a fresh model's first windows (log loss ~20) would flatten the rest."""
    typical = float(np.percentile(values, 98))
    if typical > 0 and values.max() > 2 * typical:
        ax.set_ylim(min(0.0, float(values.min())), typical * 1.25)
        ax.annotate(
            "first windows off scale",
            xy=(0.005, 0.97),
            xycoords="axes fraction",
            va="top",
            fontsize=8,
            color="#666666",
        )


def _reserve_bottom(ax, fraction: float) -> None:
    """Lower the y limit so the bottom ``fraction`` of the panel is free for version ticks."""
    lo, hi = ax.get_ylim()
    fraction = min(fraction, 0.5)
    ax.set_ylim(lo - (hi - lo) * fraction / (1 - fraction), hi)


def _legend(
    fig: Figure,
    configs: Sequence[dict],
    *,
    kinds: Sequence[str],
    several: bool,
    colors: Sequence[str] | None = None,
    extra: Sequence[tuple] = (),
) -> None:
    if not configs and not extra:
        return
    colors = colors or [config_color(i) for i in range(len(configs))]
    # Handles and labels passed explicitly: matplotlib would otherwise drop a
    # configuration whose name starts with "_".
    lines = [
        (Line2D([], [], color=c, lw=2.2), _text(cfg.get("name", "?"))) for c, cfg in zip(colors, configs)
    ]
    marks = []
    for kind in kinds:
        if kind in _VERTICAL:
            color, ls, lw, label = _VERTICAL[kind]
            handle = Line2D([], [], color=_NEUTRAL if several else color, ls=ls, lw=max(lw, 1.2))
        else:
            color, marker, size, label = _TICKS[kind]
            handle = Line2D(
                [], [], color=_NEUTRAL if several else color, ls="none", marker=marker, ms=size, mew=1.5
            )
        marks.append((handle, label))
    marks.extend(extra)
    ncols = max(1, min(max(len(lines), len(marks)), 7))
    handles, labels = _row_major([*_rows(lines, ncols), *_rows(marks, ncols)], ncols)
    fig.legend(
        handles, labels, loc="outside lower center", ncols=ncols, frameon=False, fontsize=9, handlelength=2.6
    )


def _rows(items: list[tuple], ncols: int) -> list[list[tuple]]:
    """``items`` cut into rows of ``ncols``, the last padded with blank entries."""
    blank = (Line2D([], [], alpha=0), "")
    rows = [list(items[i : i + ncols]) for i in range(0, len(items), ncols)]
    if rows:
        rows[-1] += [blank] * (ncols - len(rows[-1]))
    return rows


def _row_major(rows: list[list[tuple]], ncols: int) -> tuple[list, list]:
    # matplotlib fills a legend column by column; with a full grid, listing the
    # grid column-major makes it read row by row: configurations on the first
    # row(s), marker kinds below.
    cells = [rows[r][c] for c in range(ncols) for r in range(len(rows))]
    return [h for h, _ in cells], [label for _, label in cells]


def _minor_log_label(value: float, _pos=None) -> str:
    mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9) if value > 0 else 0
    return _ENG(value) if round(mantissa) in (2, 5) and abs(mantissa - round(mantissa)) < 1e-6 else ""


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="#888888")


def _text(value) -> str:
    # A "$" pair would switch matplotlib to mathtext; user names are literal.
    return str(value).replace("$", r"\$")


def _key(cls):
    return cls if isinstance(cls, (int, float, str, bool)) or cls is None else str(cls)


def _support_text(counts: list) -> str:
    known = [int(n) for n in counts if n is not None]
    if not known:
        return "?"
    if len(set(known)) == 1:
        return f"{known[0]:,}"
    return f"{min(known):,}–{max(known):,}"
