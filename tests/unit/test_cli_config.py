"""One configuration path: options declared once, one precedence rule, one typed spec, one builder."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from stream.cli.options import learner_from
from stream.cli.run import RUN_OPTIONS, run_spec
from stream.cli.table import Env, Option, Values, resolve, with_options
from stream.core.errors import ConfigError
from stream.engine.spec import EngineSpec, SourceSpec


def _echo_command(*options: Option):
    @click.command()
    @with_options(options)
    def show(opts: Values) -> None:
        click.echo(" ".join(f"{k}={opts[k]}" for k in sorted(opts) if k != "kafka"))

    return show


def test_the_command_line_beats_the_environment_which_beats_the_default():
    show = _echo_command(
        Option("--checkpoint-dir", "ck", env=Env("stream.core.settings.CheckpointSettings", "dir")),
        Option(
            "--threads",
            "threads",
            type=int,
            default=1,
            env=Env("stream.core.settings.TorchSettings", "threads"),
        ),
    )
    runner = CliRunner()
    assert runner.invoke(show, []).output == "ck=.streamlearn/checkpoints threads=1\n"
    env = {"STREAMLEARN_CHECKPOINT_DIR": "/from/env", "STREAMLEARN_TORCH_THREADS": "4"}
    assert runner.invoke(show, [], env=env).output == "ck=/from/env threads=4\n"
    given = runner.invoke(show, ["--checkpoint-dir", "/given", "--threads", "2"], env=env)
    assert given.output == "ck=/given threads=2\n"


def test_a_bad_environment_value_is_one_line_naming_the_variable():
    show = _echo_command(
        Option(
            "--threads",
            "threads",
            type=int,
            default=1,
            env=Env("stream.core.settings.TorchSettings", "threads"),
        )
    )
    ran = CliRunner().invoke(show, [], env={"STREAMLEARN_TORCH_THREADS": "many"})
    assert ran.exit_code == 2 and "STREAMLEARN_TORCH_THREADS" in ran.output, ran.output


def test_every_flag_of_run_is_declared_once():
    flags = [opt.flag for opt in RUN_OPTIONS if opt.flag is not None]
    names = [opt.name for opt in RUN_OPTIONS]
    assert len(flags) == len(set(flags)) and len(names) == len(set(names))


def test_run_options_map_onto_one_engine_spec(monkeypatch):
    monkeypatch.setenv("STREAMLEARN_CHECKPOINT_DIR", "/ck")
    # What click hands the command when no option is given: () for a repeatable option, False for a flag.
    defaults = {
        opt.name: () if opt.multiple else (opt.default or False) if opt.is_flag else opt.default
        for opt in RUN_OPTIONS
        if opt.flag is not None
    }
    given = {
        **defaults,
        "files": ("rows.csv",),
        "label_column": "label",
        "window": "count:50",
        "registry": "none",
    }
    opts = resolve(given, [opt for opt in RUN_OPTIONS if opt.name != "registry"], ctx=None)
    spec = run_spec(opts, learner=learner_from(opts), drift=None)
    assert isinstance(spec, EngineSpec)
    assert spec.checkpoints.dir == "/ck" and spec.dead_letter == "file:" and spec.registry is None
    assert spec.decode.y_field == "label" and spec.loop.checkpoint_every_batches == 20
    assert spec.source.kafka_bootstrap is None


def test_a_spec_refuses_what_the_engine_would_refuse_before_anything_opens():
    with pytest.raises(ConfigError, match="count:N"):
        EngineSpec(source=SourceSpec(files=("a.csv",)), window="count:abc")
    with pytest.raises(ConfigError, match="--label-column"):
        SourceSpec(bootstrap="k:9092", topics=("t",), label_column="label")
    with pytest.raises(ConfigError, match="TOPIC:N"):
        SourceSpec(bootstrap="k:9092", partitions=("t",))
