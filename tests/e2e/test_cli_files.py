"""The CLI on local files (no broker needed): learn, dead-letter file, inspect."""

from __future__ import annotations

import json
import subprocess
import sys


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args], capture_output=True, text=True, timeout=180
    )


def two_feature_rows(tmp_path, n: int = 1500, label=lambda i: int(i % 7 > 3)):
    """A JSONL file of ``n`` rows ``x = [i % 7, 3i % 5]`` with ``label(i)``; returns its path."""
    data = tmp_path / "rows.jsonl"
    data.write_text(
        "\n".join(json.dumps({"id": i, "x": [i % 7, (i * 3) % 5], "y": label(i)}) for i in range(n))
    )
    return data


def test_learning_from_files_with_a_dead_letter_file(tmp_path):
    data = tmp_path / "rows.jsonl"
    lines = [json.dumps({"id": i, "x": [i % 7, 1.0], "y": i % 2}) for i in range(500)] + ["{broken"]
    data.write_text("\n".join(lines) + "\n")
    dlq = tmp_path / "dead.jsonl"
    ran = cli(
        "run",
        "--file",
        str(data),
        "--checkpoint-dir",
        str(tmp_path / "ck"),
        "--until-idle",
        "0.5",
        "--dead-letter",
        f"file:{dlq}",
        "--window",
        "count:64",
        "--quiet",
    )
    assert ran.returncode == 0, ran.stderr
    info = json.loads(cli("inspect", str(tmp_path / "ck"), "--json").stdout)
    assert info["events_learned"] == 500 and info["dead_letters"] == {"bad json": 1}
    letter = json.loads(dlq.read_text().splitlines()[0])
    assert letter["offset"] == 500 and letter["value_text"] == "{broken"


def test_ewc_and_replay_from_the_command_line_live_in_the_checkpoint(tmp_path):
    from stream.engine.checkpoint import CheckpointStore

    data = two_feature_rows(tmp_path, 900, label=lambda i: i % 3)
    ran = cli(
        "run",
        "--file",
        str(data),
        "--checkpoint-dir",
        str(tmp_path / "ck"),
        "--until-idle",
        "0.5",
        "--window",
        "count:100",
        "--quiet",
        "--classes",
        "3",
        "--model",
        "mlp",
        "--ewc-strength",
        "50",
        "--ewc-every",
        "3",
        "--replay",
        "balanced",
        "--replay-capacity",
        "90",
    )
    assert ran.returncode == 0, ran.stderr
    plugins = CheckpointStore(tmp_path / "ck").latest().learner["plugins"]
    ewc, replay = plugins
    assert ewc["consolidations"] >= 3 and set(ewc["fisher"]) == set(ewc["anchors"])
    assert replay["seen"] == 900 and replay["counts"].tolist() == [300, 300, 300]


def test_a_bad_plugin_combination_is_a_one_line_error(tmp_path):
    ran = cli(
        "run",
        "--file",
        str(tmp_path / "none.jsonl"),
        "--task",
        "regression",
        "--replay",
        "balanced",
        "--checkpoint-dir",
        str(tmp_path / "ck"),
    )
    assert ran.returncode == 2 and "--replay reservoir" in ran.stderr and "Traceback" not in ran.stderr
    ran = cli(
        "run",
        "--file",
        str(tmp_path / "none.jsonl"),
        "--ewc-decay",
        "1.5",
        "--checkpoint-dir",
        str(tmp_path / "ck"),
    )
    assert ran.returncode == 2 and "decay" in ran.stderr


def learn_into_registry(tmp_path, *learner_args: str):
    """``streamlearn run`` over the two-feature rows with ``learner_args``, publishing every 3 batches; its registry."""
    from serving.registry.file_backend import FileRegistry

    ran = cli(
        "run",
        "--file",
        str(two_feature_rows(tmp_path)),
        "--checkpoint-dir",
        str(tmp_path / "ck"),
        "--until-idle",
        "0.5",
        "--window",
        "count:100",
        "--quiet",
        *learner_args,
        "--registry",
        str(tmp_path / "registry"),
        "--publish-every-batches",
        "3",
    )
    assert ran.returncode == 0, ran.stderr
    return FileRegistry(tmp_path / "registry")


def assert_serves_the_rule(reg, version: int | None = None) -> None:
    """The API on ``reg`` answers the two-feature rule (label 1 when x0 % 7 > 3), from ``version`` if given."""
    from fastapi.testclient import TestClient

    from serving.api.app import create_app
    from serving.settings import ServingSettings

    with TestClient(create_app(ServingSettings(), registry=reg)) as client:
        answer = client.post("/predict", json={"x": [6.0, 1.0]}).json()
        assert answer["prediction"] == 1 and (version is None or answer["version"] == version)
        assert client.post("/predict", json={"x": [0.0, 1.0]}).json()["prediction"] == 0


def test_a_river_model_learns_publishes_and_is_served(tmp_path):
    reg = learn_into_registry(tmp_path, "--model", "river.tree.HoeffdingTreeClassifier")
    current = reg.current()
    assert current is not None and "RiverLearner" in current.learner
    assert_serves_the_rule(reg, version=current.number)


def test_river_models_take_no_torch_plugins(tmp_path):
    ran = cli(
        "run",
        "--file",
        str(tmp_path / "x.jsonl"),
        "--model",
        "river.tree.HoeffdingTreeClassifier",
        "--ewc-strength",
        "10",
        "--checkpoint-dir",
        str(tmp_path / "ck"),
    )
    assert ran.returncode == 2 and "not to river models" in ran.stderr
    ran = cli(
        "run",
        "--file",
        str(tmp_path / "x.jsonl"),
        "--model",
        "river.nope.Model",
        "--checkpoint-dir",
        str(tmp_path / "ck"),
    )
    assert ran.returncode == 2 and "river estimator" in ran.stderr


def test_an_avalanche_strategy_learns_from_the_command_line_and_is_served(tmp_path):
    from stream.engine.checkpoint import CheckpointStore

    reg = learn_into_registry(
        tmp_path,
        "--model",
        "mlp",
        "--model-option",
        "hidden=[16]",
        "--avalanche",
        "Replay",
        "--avalanche-option",
        "mem_size=300",
        "--avalanche-plugin",
        'LwFPlugin:{"alpha": 0.5}',
        "--steps-per-batch",
        "5",
        "--lr",
        "0.02",
    )
    learner = CheckpointStore(tmp_path / "ck").latest().learner
    assert learner["config"]["strategy"] == "Replay" and learner["n_experiences"] == 15
    plugins = {p["class"]: p["state"] for p in learner["plugins"]}
    assert {"ReplayPlugin", "LwFPlugin", "Clock"} <= set(plugins)
    assert plugins["Clock"]["train_exp_counter"] == 15
    assert plugins["LwFPlugin"]["lwf"]["vars"]["prev_model"]["__kind__"] == "module"  # the teacher is kept
    current = reg.current()
    assert current is not None and "AvalancheLearner" in current.learner
    assert_serves_the_rule(reg)


def test_avalanche_options_need_a_strategy_and_exclude_our_plugins(tmp_path):
    ran = cli(
        "run",
        "--file",
        str(tmp_path / "x.jsonl"),
        "--avalanche-option",
        "mem_size=10",
        "--checkpoint-dir",
        str(tmp_path / "ck"),
    )
    assert ran.returncode == 2 and "need --avalanche STRATEGY" in ran.stderr
    ran = cli(
        "run",
        "--file",
        str(tmp_path / "x.jsonl"),
        "--avalanche",
        "EWC",
        "--replay",
        "reservoir",
        "--checkpoint-dir",
        str(tmp_path / "ck"),
    )
    assert ran.returncode == 2 and "--avalanche-plugin" in ran.stderr and "Traceback" not in ran.stderr


def test_learning_from_files_stops_at_their_end_without_an_idle_timeout(tmp_path):
    ran = cli(
        "run",
        "--file",
        str(two_feature_rows(tmp_path, n=1200)),
        "--checkpoint-dir",
        str(tmp_path / "ck"),
        "--registry",
        "none",
        "--quiet",
        "--window",
        "count:500",
    )
    assert ran.returncode == 0, ran.stderr
    assert "stopped (end of input): learned 1,200 events in 3 batches" in ran.stderr
