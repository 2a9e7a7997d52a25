"""bench/features.py end to end on a tiny click stream with river's one-hot LR lane (timings are not asserted)."""

from __future__ import annotations

import json

from bench.features import STREAMLEARN, LaneResult, main, river_dict


def test_the_features_bench_runs_river_lr_and_reports_the_floor(tmp_path, capsys):
    out, cache = tmp_path / "features.json", tmp_path / "river.json"
    argv = ["--rows", "400", "--users", "500", "--ads", "50", "--lanes", "river-ohe-lr"]
    result = main([*argv, "--json", str(out), "--river-cache", str(cache)])
    printed = capsys.readouterr().out
    assert json.loads(out.read_text())["lanes"].keys() == {"river-ohe-lr"}
    lr = result["lanes"]["river-ohe-lr"]
    assert lr["rows"] == 400 and 0.0 <= lr["accuracy"] <= 1.0 and lr["log_loss"] > 0 and lr["memory_mb"] > 0
    floor = result["stream"]["floor"]["log_loss"]
    assert floor < result["stream"]["base_log_loss"]
    assert result["stream"]["drift_row"] == 200 and lr["log_loss_after_drift"] is not None
    assert result["verdict"]["river_best"] == "river-ohe-lr" and result["verdict"]["pass"] is None
    assert (
        "| ground truth (p) |" in printed and "| river-ohe-lr |" in printed and "target: pending" in printed
    )
    # The second run takes river's figures from the cache.
    again = main([*argv, "--river-cache", str(cache)])
    assert again["lanes"]["river-ohe-lr"] == lr


def test_a_filled_in_streamlearn_lane_gets_a_verdict(capsys):
    def lane(records, opts):
        return LaneResult(STREAMLEARN, len(records), 0.01, 0.99, 1e12, 1.0)

    result = main(
        ["--rows", "300", "--users", "300", "--ads", "30", "--lanes", "river-ohe-lr,streamlearn"], lane=lane
    )
    v = result["verdict"]
    assert v["log_loss_ok"] and v["speed_ok"] and v["memory_ok"] and v["pass"] is True
    assert "target: PASS" in capsys.readouterr().out


def test_missing_numerics_become_flags_for_river():
    x = {"user": "u_1", "ad": "a_1", "device": "web", "country": "US", "amount": 3.5, "age": None}
    d = river_dict({**x, "hour": 3, "is_new": False})
    assert "age" not in d and d["age_missing"] == 1.0 and d["amount"] == 3.5 and d["amount_missing"] == 0.0
