"""bench/feedback.py end to end, small: the embedded broker, serve with a prediction log, the joining daemon.

The verdicts' PASS/MISS are timings and load (not asserted); that labels
come back, are joined and learned, and that the tables are printed, is.
"""

import re

from bench.feedback import TARGETS, main


def test_the_feedback_bench_joins_labels_and_prints_its_verdicts(capsys):
    met = main(["--duration", "4", "--rate", "30", "--tail", "3", "--warm-rows", "600", "--clients", "2"])
    out = capsys.readouterr().out
    assert set(met) == set(TARGETS)
    for text in TARGETS.values():
        assert re.search(rf"^\| {re.escape(text)} \| .+ \| (PASS|MISS) \|$", out, re.M), out
    rate = re.search(
        r"^\| join rate \(on-time labels learned\) \| ([0-9.]+) \(([0-9,]+) / ([0-9,]+)\) \|$", out, re.M
    )
    assert rate is not None, out
    assert float(rate[1]) > 0 and int(rate[2].replace(",", "")) > 0, out
    assert re.search(r"^\| version \| answered \| live n \|", out, re.M), out
    # The daemon's live count of the served version's answers is the bench's own count of them.
    rows = re.findall(r"^\| (\d+) \| ([0-9,]+) \| (\d+|-) \| [0-9.-]+ \| ([0-9,]+) \|", out, re.M)
    assert rows and sum(int(n) for _v, _a, n, _m in rows if n != "-") == sum(
        int(m.replace(",", "")) for *_x, m in rows
    ), out
