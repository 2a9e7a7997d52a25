"""stream.testing.click_stream: determinism, record shape, missing rates, the drift, and a learnable ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream.testing.click_stream import COUNTRIES, DEVICES, ClickStream, click_columns, click_records

SMALL = {"n_users": 2_000, "n_ads": 200}


def test_the_same_seed_gives_the_same_records_and_another_seed_does_not():
    a = list(click_records(500, seed=7, **SMALL))
    assert a == list(click_records(500, seed=7, **SMALL))
    assert [r["y"] for r in a] != [r["y"] for r in click_records(500, seed=8, **SMALL)]
    # Records before the drift do not depend on how long the stream is.
    assert list(click_records(9000, seed=7, drift_at=None, **SMALL))[:500] == list(
        click_records(500, seed=7, drift_at=None, **SMALL)
    )


def test_fields_have_the_documented_types():
    recs = list(click_records(2000, seed=0, **SMALL))
    ids = [r["id"] for r in recs]
    assert len(set(ids)) == len(ids) and all(isinstance(i, str) for i in ids)
    assert all(b["ts"] >= a["ts"] for a, b in zip(recs, recs[1:]))
    for r in recs:
        x = r["x"]
        assert isinstance(r["ts"], int) and r["y"] in (0, 1) and 0.0 < r["p"] < 1.0
        assert "p" not in x and "y" not in x
        assert x["user"].startswith("u_") and int(x["user"][2:]) < SMALL["n_users"]
        assert x["ad"].startswith("a_") and int(x["ad"][2:]) < SMALL["n_ads"]
        assert x["device"] in DEVICES and x["country"] in COUNTRIES
        assert x["amount"] is None or (isinstance(x["amount"], float) and x["amount"] > 0)
        assert x["age"] is None or (isinstance(x["age"], int) and 18 <= x["age"] < 75)
        assert isinstance(x["hour"], int) and 0 <= x["hour"] < 24
        assert isinstance(x["is_new"], bool)


def test_missing_rates_are_roughly_as_configured():
    recs = list(click_records(20_000, seed=1, missing_amount=0.25, missing_age=0.05, **SMALL))
    assert np.mean([r["x"]["amount"] is None for r in recs]) == pytest.approx(0.25, abs=0.02)
    assert np.mean([r["x"]["age"] is None for r in recs]) == pytest.approx(0.05, abs=0.01)
    default = list(click_records(20_000, seed=1, **SMALL))
    assert np.mean([r["x"]["amount"] is None for r in default]) == pytest.approx(0.10, abs=0.015)
    assert np.mean([r["x"]["age"] is None for r in default]) == pytest.approx(0.20, abs=0.015)


def test_missing_age_is_informative():
    cols = next(click_columns(8192, seed=2, **SMALL))
    missing = np.isnan(cols["age"])
    assert cols["p"][missing].mean() > cols["p"][~missing].mean() + 0.02


def test_the_drift_changes_the_click_rate_of_drifted_ads_only():
    cfg = ClickStream(seed=3, n_users=2_000, n_ads=50, drift_at=0.5, drift_fraction=0.5)
    world = cfg.world()
    cols = {k: np.concatenate([c[k] for c in cfg.columns(40_000, world)]) for k in ("ad", "p", "after_drift")}
    assert cols["after_drift"].sum() == 20_000 and cols["after_drift"][20_000:].all()
    shift = np.zeros(cfg.n_ads)
    for a in range(cfg.n_ads):
        seen = cols["ad"] == a
        before, after = cols["p"][seen & ~cols["after_drift"]], cols["p"][seen & cols["after_drift"]]
        if len(before) >= 30 and len(after) >= 30:
            shift[a] = abs(after.mean() - before.mean())
    drifted, kept = world.drifted & (shift > 0), ~world.drifted & (shift > 0)
    assert drifted.sum() >= 5 and kept.sum() >= 5
    assert shift[drifted].mean() > 3 * shift[kept].mean()
    assert shift[drifted].mean() > 0.05
    # No drift: the same world, the same rates on both halves.
    still = ClickStream(seed=3, n_users=2_000, n_ads=50, drift_at=None).columns(100)
    assert not next(still)["after_drift"].any()


def test_the_ground_truth_is_clearly_better_than_the_base_rate():
    recs = list(click_records(20_000, seed=4, **SMALL))
    y = np.array([r["y"] for r in recs])
    p = np.clip(np.array([r["p"] for r in recs]), 1e-7, 1 - 1e-7)
    floor = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    rate = y.mean()
    base = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    assert 0.1 < rate < 0.5
    assert floor < base - 0.1
    assert p.mean() == pytest.approx(rate, abs=0.01)  # the labels are drawn from p


def test_bad_configuration_is_a_value_error():
    with pytest.raises(ValueError, match="drift_at"):
        ClickStream(drift_at=1.5)
    with pytest.raises(ValueError, match="missing_age"):
        ClickStream(missing_age=-0.1)
    with pytest.raises(ValueError, match="n must be"):
        list(ClickStream(**SMALL).columns(-1))
