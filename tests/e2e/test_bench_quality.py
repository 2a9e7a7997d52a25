"""bench/quality.py end to end on tiny streams: a verdict per stream and sensible numbers (timings are not asserted)."""

from __future__ import annotations

import json

import pytest
import river

from bench.quality import main


def test_the_quality_bench_gives_a_verdict_per_stream(tmp_path, capsys):
    out = tmp_path / "quality.json"
    result = main(
        [
            "--rows",
            "600",
            "--streams",
            "sea,phishing",
            "--config",
            # What the shell hands over for --config mlp4="--model mlp ...".
            "mlp4=--model mlp --steps-per-batch 4 --lr 0.01 --window count:100",
            "--json",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert json.loads(out.read_text())["streams"].keys() == {"sea", "phishing"}
    assert result["configs"]["mlp4"]["window"] == "count:100"
    for name in ("sea", "phishing"):
        r = result["streams"][name]
        assert r["n_rows"] == 600
        assert set(r["learners"]) == {"default", "mlp4", "river-lr", "river-hat", "river-arf"}
        for figures in r["learners"].values():
            assert 0.0 <= figures["accuracy"] <= 1.0
            assert figures["log_loss"] > 0 and figures["rows_per_s"] > 0
        # Every streamlearn configuration scored every row, through the replay engine.
        assert r["learners"]["default"]["events"] == r["learners"]["mlp4"]["events"] == 600
        # Learning happened: river's LR and the many-step MLP beat chance on these streams.
        assert r["learners"]["river-lr"]["accuracy"] > 0.6 and r["learners"]["mlp4"]["accuracy"] > 0.55
        v = r["verdict"]
        assert v["pass"] in (True, False) and v["best_river"] in ("river-lr", "river-hat", "river-arf")
        assert v["best"] in ("default", "mlp4")
        assert f"| {name} |" in printed.split("### verdict")[1]
    assert "streams meet the target" in printed


def test_a_bad_configuration_is_one_clear_error(capsys):
    with pytest.raises(SystemExit):
        main(["--rows", "100", "--streams", "sea", "--config", "bad=--modle mlp"])
    assert "--config bad" in capsys.readouterr().err


def test_only_the_named_learners_run(capsys):
    result = main(["--rows", "300", "--streams", "stagger", "--learners", "default,river-lr"])
    assert set(result["streams"]["stagger"]["learners"]) == {"default", "river-lr"}
    assert result["streams"]["stagger"]["verdict"]["pass"] is None  # no ARF: no verdict


def test_river_runs_once_with_a_cache(tmp_path):
    cache = tmp_path / "river.json"
    argv = [
        "--rows",
        "300",
        "--streams",
        "sea",
        "--learners",
        "default,river-lr",
        "--river-cache",
        str(cache),
    ]
    first = main(argv)["streams"]["sea"]["learners"]
    assert list(json.loads(cache.read_text())) == [f"sea/300/42/river-lr/river-{river.__version__}"]
    second = main(argv)["streams"]["sea"]["learners"]
    # The same figures to the digit, rows/s included: read back, not measured again.
    assert second["river-lr"] == first["river-lr"]
