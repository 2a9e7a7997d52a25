"""The replay report: summary.json, the PNG figures, the self-contained HTML, the terminal table.

Rendering the page in headless Chromium (a browser subprocess) is
tests/e2e/test_report_browser.py.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from matplotlib.image import imread

from stream.replay.plots import MAX_POINTS, config_color, metric_figure, smooth
from stream.replay.report import MAX_MARKER_ROWS, format_table, load_result, write_report
from stream.testing.report import sample_result

# An attribute inside a tag that loads from elsewhere (escaped text has no "<").
EXTERNAL_REF = re.compile(
    r"""<[^<>]*\b(?:src|href|action|poster)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE
)
PNG_URI = 'src="data:image/png;base64,'


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report of ``sample_result()``, written once for the module."""
    result = sample_result()
    return result, write_report(result, tmp_path_factory.mktemp("report"))


def _strict_json(text: str):
    def reject(name):
        raise ValueError(f"{name} is not valid JSON")

    return json.loads(text, parse_constant=reject)


# --------------------------------------------------------------------------- #
# summary.json
# --------------------------------------------------------------------------- #


def test_summary_json_round_trips(report):
    result, files = report
    assert files.json.name == "summary.json"
    assert _strict_json(files.json.read_text()) == result
    assert load_result(files.json) == load_result(files.json.parent) == result


def test_nan_and_numpy_become_valid_json(tmp_path):
    result = sample_result(n_windows=20)
    windows = result["configs"][0]["windows"]
    windows["accuracy"][3] = float("nan")
    windows["log_loss"] = np.asarray(windows["log_loss"])
    windows["log_loss"][4] = np.inf
    result["configs"][0]["summary"]["events"] = np.int64(10_000)
    result["configs"][0]["summary"]["accuracy"] = np.float32("nan")

    files = write_report(result, tmp_path)

    back = _strict_json(files.json.read_text())
    config = back["configs"][0]
    assert config["windows"]["accuracy"][3] is None
    assert config["windows"]["log_loss"][4] is None
    assert config["windows"]["log_loss"][5] == pytest.approx(float(windows["log_loss"][5]))
    assert config["summary"]["events"] == 10_000 and config["summary"]["accuracy"] is None
    # The table and the page take the missing summary value as "-", not "nan".
    assert "nan" not in format_table(result).lower()
    assert ">nan<" not in files.html.read_text().lower()


def test_sample_result_is_deterministic_per_seed():
    assert sample_result(n_windows=30, seed=1) == sample_result(n_windows=30, seed=1)
    assert sample_result(n_windows=30, seed=1) != sample_result(n_windows=30, seed=2)


# --------------------------------------------------------------------------- #
# HTML
# --------------------------------------------------------------------------- #


def test_html_is_self_contained_with_three_figures(report):
    result, files = report
    html = files.html.read_text()
    assert not EXTERNAL_REF.search(html), EXTERNAL_REF.search(html)
    assert "<script" not in html.lower() and "<link" not in html.lower() and "url(" not in html.lower()
    assert html.count(PNG_URI) == 3
    assert sorted(files.plots) == ["metric", "per_class", "throughput"]
    for config in result["configs"]:
        assert f">{config['name']}<" in html
    assert result["command"] in html
    assert "clicks:0" in html and "50102" in html  # per-partition offsets
    assert "<details" in html


def test_regression_report_has_two_figures_and_says_why(tmp_path):
    files = write_report(sample_result(n_windows=60, configs=("x", "y", "z"), task="regression"), tmp_path)
    html = files.html.read_text()
    assert html.count(PNG_URI) == 2
    assert sorted(files.plots) == ["metric", "throughput"]
    assert not (tmp_path / "per_class.png").exists()
    assert "regression backtest" in html
    assert ">RMSE<" in html and ">MAE<" in html and ">accuracy<" not in html


def test_best_value_per_column_is_highlighted(report):
    result, files = report
    html = files.html.read_text()
    accuracy = max(c["summary"]["accuracy"] for c in result["configs"])
    log_loss = min(c["summary"]["log_loss"] for c in result["configs"])
    assert f'<td class="best">{accuracy:.4f}</td>' in html
    assert f'<td class="best">{log_loss:.4f}</td>' in html
    worst = min(c["summary"]["accuracy"] for c in result["configs"])
    assert f"<td>{worst:.4f}</td>" in html


def test_user_text_is_escaped(tmp_path):
    result = sample_result(n_windows=30, configs=("<script>alert(1)</script>", "b"))
    config = result["configs"][0]
    config["settings"]["model"] = "</td><b>bold</b>"
    config["markers"][0]["detail"] = "<img src=https://evil.example/x.png onerror=alert(2)>"
    result["command"] = "streamlearn replay --topic '<i>t</i>'"

    html = write_report(result, tmp_path).html.read_text()

    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "<img src=https" not in html and not EXTERNAL_REF.search(html)
    assert "<i>t</i>" not in html


def test_marker_table_is_truncated_with_a_note(tmp_path):
    result = sample_result(n_windows=40, configs=("busy",))
    extra = MAX_MARKER_ROWS + 50 - len(result["configs"][0]["markers"])
    result["configs"][0]["markers"] += [
        {"kind": "alarm", "event": 100 + i, "batch": None, "ts": None, "detail": f"alarm {i}"}
        for i in range(extra)
    ]

    html = write_report(result, tmp_path).html.read_text()

    assert html.count('<span class="kind ') == MAX_MARKER_ROWS
    assert "50 more in summary.json" in html
    assert len(load_result(tmp_path)["configs"][0]["markers"]) == MAX_MARKER_ROWS + 50


def test_marker_times_are_iso_utc(report):
    _, files = report
    # 1_700_000_000_000 ms is 2023-11-14T22:13:20Z; the sample's first validation is 20 windows of 5 s later.
    assert "2023-11-14T22:14:55.000Z" in files.html.read_text()


# --------------------------------------------------------------------------- #
# Odd but legal results
# --------------------------------------------------------------------------- #


def _ragged() -> dict:
    result = sample_result(n_windows=50, configs=("full", "empty", "holes"))
    empty = result["configs"][1]
    empty["windows"] = {key: [] for key in empty["windows"]}
    empty["markers"], empty["per_class"] = [], None
    empty["summary"] = {key: None for key in empty["summary"]}
    holes = result["configs"][2]["windows"]
    for key in ("accuracy", "log_loss", "events_per_second", "ts_start", "ts_end"):
        holes[key] = [None if i % 3 == 0 else v for i, v in enumerate(holes[key])]
    result["configs"][2]["markers"][0]["ts"] = None
    return result


@pytest.mark.parametrize(
    "result",
    [
        pytest.param(_ragged(), id="empty-and-none-entries"),
        pytest.param(sample_result(n_windows=30, configs=("solo",)), id="single-config"),
        pytest.param(sample_result(n_windows=30, configs=tuple("abcdefgh")), id="eight-configs"),
        pytest.param(sample_result(n_windows=0, configs=("a", "b")), id="no-windows-at-all"),
        pytest.param(sample_result(n_windows=30, configs=()), id="no-configs"),
    ],
)
def test_odd_results_still_make_a_report(tmp_path, result):
    files = write_report(result, tmp_path)
    html = files.html.read_text()
    assert "metric" in files.plots and "throughput" in files.plots
    for config in result["configs"]:
        assert f">{config['name']}<" in html
    table = format_table(result)
    assert len(table.splitlines()) == 1 + len(result["configs"])


def test_legend_keeps_underscore_and_dollar_names():
    result = sample_result(n_windows=20, configs=("_base", "cost $5 and $10"))
    labels = [t.get_text() for t in metric_figure(result).legends[0].texts]
    assert "_base" in labels and r"cost \$5 and \$10" in labels


# --------------------------------------------------------------------------- #
# Plots
# --------------------------------------------------------------------------- #


def test_pngs_decode_to_nontrivial_images(report):
    _, files = report
    for name, path in files.plots.items():
        image = imread(path)
        height, width = image.shape[:2]
        assert width >= 800 and height >= 300, (name, image.shape)
        pixels = (image[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
        packed = (pixels[:, 0].astype(np.int64) << 16) | (pixels[:, 1].astype(np.int64) << 8) | pixels[:, 2]
        assert len(np.unique(packed)) > 50, name
        # The first configuration's tab10 colour is drawn (a line or a bar).
        blue = np.array([int(config_color(0)[i : i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels.astype(int) - blue).max(axis=1) < 30).sum() > 200, name


def test_long_runs_are_downsampled():
    result = sample_result(n_windows=5 * MAX_POINTS, configs=("a",))
    fig = metric_figure(result)
    lengths = [
        len(line.get_xdata()) for ax in fig.axes for line in ax.get_lines() if len(line.get_xdata()) > 100
    ]
    assert lengths and max(lengths) <= MAX_POINTS + 1


def test_smoothing_skips_missing_values():
    assert smooth([1.0, None, 3.0, float("nan"), None, None], 2).tolist()[:4] == [1.0, 1.0, 3.0, 3.0]
    assert np.isnan(smooth([1.0, None, None], 2)[-1])
    assert smooth([], 3).tolist() == []


# --------------------------------------------------------------------------- #
# Terminal table
# --------------------------------------------------------------------------- #


def test_format_table_lists_every_config_aligned():
    result = sample_result(n_windows=40, configs=("mlp-ewc", "logreg", "hoeffding-tree"))
    result["configs"][2]["summary"]["log_loss"] = None
    lines = format_table(result).splitlines()
    assert lines[0].split()[:4] == ["config", "events", "accuracy", "log"]
    assert [line.split()[0] for line in lines[1:]] == ["mlp-ewc", "logreg", "hoeffding-tree"]
    assert len({len(line) for line in lines}) == 1  # right-aligned last column: equal widths
    first = result["configs"][0]["summary"]
    assert f"{first['accuracy']:.4f}" in lines[1] and f"{first['events']:,}" in lines[1]
    assert f"{first['versions_validated']}/{first['versions_published']}" in lines[1]
    assert " - " in lines[3]


def test_format_table_regression_columns():
    result = sample_result(n_windows=40, task="regression")
    header, *rows = format_table(result).splitlines()
    assert "RMSE" in header and "MAE" in header and "accuracy" not in header
    assert f"{result['configs'][1]['summary']['rmse']:.4f}" in rows[1]


def test_a_range_above_the_dead_letter_threshold_gets_a_warning_box_with_the_top_reasons(tmp_path):
    result = sample_result(n_windows=20)
    result["dead_letter_rate"] = {
        "records": 1200,
        "rejected": 400,
        "rate": 400 / 1200,
        "threshold": 0.05,
        "min_records": 200,
        "exceeded": True,
        "alarmed": True,
        "top_reasons": [["bad label: 2 is outside [0, 2)", 400]],
    }
    html = write_report(result, tmp_path / "bad").html.read_text()
    assert 'id="dead-letters"' in html and "33.3% (400 of 1,200; threshold 0.05)" in html
    assert "<code>bad label: 2 is outside [0, 2)</code> × 400" in html
    assert html.index('id="dead-letters"') < html.index('id="summary"')  # before the numbers it questions
    result["dead_letter_rate"] = {
        **result["dead_letter_rate"],
        "rejected": 10,
        "rate": 0.008,
        "exceeded": False,
    }
    fine = write_report(result, tmp_path / "fine").html.read_text()
    assert 'id="dead-letters"' not in fine and "0.8% (10 of 1,200; threshold 0.05)" in fine
