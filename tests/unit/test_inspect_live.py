"""``streamlearn inspect --registry``: the live metrics the daemon recorded, for people and as JSON."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from serving.registry.file_backend import FileRegistry
from stream.cli.inspect import live_lines
from stream.cli.main import main

LIVE = {
    "updated_at": 1_000.0,
    "served": {
        "7": {"n": 1200, "task": "classification", "correct": 1090, "accuracy": 0.9083, "log_loss": 0.25,
              "mae": None, "rmse": None, "holdout_accuracy": 0.93, "flagged": False, "flag_reason": ""},
    },
    "shadow": {
        "9": {"n": 1180, "task": "classification", "accuracy": 0.71, "log_loss": None,
              "holdout_accuracy": None, "flagged": True, "flag_reason": "live accuracy 0.71 < holdout 0.93 - 0.1"},
        "12": {"n": 40, "task": "regression", "mae": 0.5, "rmse": 0.75},
    },
    "join": {"pending_features": 10, "pending_labels": 2, "pending_bytes": 12_345, "joined": 5000,
             "expired_features": 3, "expired_labels": 1, "evicted": 0, "repeated_labels": 4, "bad_records": 6},
}  # fmt: skip


def inspect(*args: str):
    return CliRunner().invoke(main, ["inspect", *args])


def test_each_version_and_the_join_counters_are_shown(tmp_path):
    FileRegistry(tmp_path).record_live(LIVE)
    shown = inspect("--registry", str(tmp_path))
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].startswith("live metrics (from joined labels, recorded ")
    assert lines[1] == "  served v7      : n 1,200, accuracy 0.9083, log loss 0.2500, holdout accuracy 0.9300"
    # Shadows in version order (9 before 12), a flag with its reason, regression by its errors.
    assert lines[2] == (
        "  shadow v9      : n 1,180, accuracy 0.7100 -- FLAGGED: live accuracy 0.71 < holdout 0.93 - 0.1"
    )
    assert lines[3] == "  shadow v12     : n 40, MAE 0.5000, RMSE 0.7500"
    assert lines[4] == (
        "  join           : joined 5,000; pending 10 predictions, 2 labels (12.1 KiB); expired 3 "
        "predictions, 1 labels; evicted 0; repeated labels 4; bad records 6"
    )


def test_json_has_the_document_as_recorded(tmp_path):
    FileRegistry(tmp_path).record_live(LIVE)
    shown = inspect("--registry", str(tmp_path), "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output) == {"live": LIVE}


def test_a_registry_without_live_metrics_says_so(tmp_path):
    FileRegistry(tmp_path)
    shown = inspect("--registry", str(tmp_path))
    assert shown.exit_code == 0 and shown.output.startswith("live metrics   : none recorded yet"), (
        shown.output
    )
    assert json.loads(inspect("--registry", str(tmp_path), "--json").output) == {"live": {}}


def test_a_partial_document_is_read_defensively():
    lines = live_lines({"served": {"3": {}}, "shadow": None}, now=0.0)
    assert lines == ["live metrics (from joined labels)", "  served v3      : n 0, accuracy n/a"]
    assert live_lines({"updated_at": 5.0}, now=6.0)[1].startswith("  versions       : none yet")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "nothing to inspect: pass a CHECKPOINT_DIR"),
        (["--registry", "no/such/registry"], "registry directory 'no/such/registry' does not exist"),
        (["--registry", "none"], "--registry none has no live metrics"),
    ],
)
def test_an_inspect_mistake_is_one_line_and_exit_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shown = inspect(*args)
    assert shown.exit_code == 2
    lines = shown.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], shown.output
