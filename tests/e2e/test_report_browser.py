"""The replay report rendered by headless Chromium (a browser subprocess).

The screenshot must be a page with figures on it, not a blank or broken one;
the report's files themselves are checked in process in tests/unit/test_report.py.
"""

from __future__ import annotations

import pytest

from stream.replay.report import write_report
from stream.testing.report import page_problems, sample_result, screenshot


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report of ``sample_result()``, written once for the module (as in tests/unit/test_report.py)."""
    result = sample_result()
    return result, write_report(result, tmp_path_factory.mktemp("report"))


# --------------------------------------------------------------------------- #
# What a reader sees: the page rendered by a real browser
# --------------------------------------------------------------------------- #


def test_report_renders_in_a_browser(report, chromium, tmp_path):
    _, files = report
    image = screenshot(chromium, files.html, tmp_path / "shot.png", size=(1200, 2400))
    assert image.shape[:2] == (2400, 1200)
    assert page_problems(image, n_configs=2) == []


def test_the_page_check_fails_on_a_page_without_figures(chromium, tmp_path):
    """The browser check above can fail: the same page without its images does not pass it."""
    html = tmp_path / "bare.html"
    html.write_text(
        "<html><body><h1>Backtest</h1><table><tr><td>a</td><td>0.9</td></tr></table></body></html>"
    )
    image = screenshot(chromium, html, tmp_path / "bare.png", size=(1200, 800))
    assert page_problems(image, n_configs=2)
