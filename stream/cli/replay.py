"""``streamlearn replay``: backtest configurations over a historical topic range (or files) and write a report.

Kept apart from :mod:`stream.cli.main` (which registers it) because it is a
command with its own concepts: ranges, configurations, reports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import time

import click

from stream.cli.errors import (
    check_label_column,
    label_column_option,
    require_broker,
    require_topics,
    user_errors,
)
from stream.cli.options import drift_options, learner_options
from stream.core.errors import ConfigError


@click.command()
@click.option("--bootstrap", default=None, help="Kafka bootstrap servers [env STREAMLEARN_KAFKA_BOOTSTRAP].")
@click.option(
    "--topic", "topics", multiple=True, help="Topic to replay (repeatable; topics merge by timestamp)."
)
@click.option("--partition", "partitions", multiple=True, help="Only these TOPIC:N partitions (repeatable).")
@click.option(
    "--file",
    "files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Replay JSONL/CSV files instead of Kafka (repeatable; read in the order given).",
)
@label_column_option
@click.option(
    "--from",
    "range_from",
    default="earliest",
    show_default=True,
    help="Start (included): earliest, an offset, P:N[,P:N], ISO time, @EPOCH_MS, or relative (-2h).",
)
@click.option(
    "--to",
    "range_to",
    default="latest",
    show_default=True,
    help="End (excluded): latest (the end when the replay starts), or any --from form.",
)
@click.option(
    "--config",
    "config_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="A YAML configuration to backtest (repeatable; all read the topic in one pass). Its keys "
    "override the options given here.",
)
@click.option(
    "--window",
    default="count:1000",
    show_default=True,
    help="count:N | event:10s[,lateness=2s] | processing:5s (processing time = record timestamps)",
)
@click.option(
    "--publish-every-batches",
    type=int,
    default=20,
    show_default=True,
    help="The gate publishes a candidate every N micro-batches (batches, not seconds: deterministic).",
)
@click.option("--validation-tolerance", type=float, default=0.01, show_default=True)
@click.option("--holdout-min-events", type=int, default=100, show_default=True)
@click.option(
    "--out", "out_dir", default=None, help="Report directory [default: .streamlearn/replay-<topic>-<time>]."
)
@click.option("--max-poll-records", type=int, default=5000, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@learner_options
@drift_options
@user_errors
def replay(
    bootstrap,
    topics,
    partitions,
    files,
    label_column,
    range_from,
    range_to,
    config_files,
    window,
    publish_every_batches,
    validation_tolerance,
    holdout_min_events,
    out_dir,
    max_poll_records,
    quiet,
    learner,
    drift,
):
    """Backtest learner configurations on a historical range and write an HTML/PNG/JSON report.

    \b
    Reads the range once, without a consumer group (nothing is committed), and
    runs the engine of `streamlearn run` -- window, learner, drift policy,
    validation gate -- for every configuration, prequentially (each window is
    scored before it is learned). Deterministic for a given --seed.

    \b
    Example:
      streamlearn replay --bootstrap localhost:9092 --topic clicks --from -2h \\
          --config a.yaml --config b.yaml --out ./backtest
    """
    from stream.core.settings import KafkaSettings
    from stream.replay.config import GateChoice, ReplayConfig, load_configs
    from stream.replay.driver import Backtest, prepare_out_dir
    from stream.replay.report import format_table, write_report
    from stream.sources.bounds import parse_bound

    kafka = KafkaSettings()
    bootstrap = bootstrap or kafka.bootstrap
    if files and (topics or partitions):
        raise ConfigError("replay either --file(s) or --topic/--partition, not both")
    if not files and not (topics or partitions):
        raise ConfigError("name what to replay: --topic T (with --bootstrap) or --file PATH")
    if not files and not bootstrap:
        raise ConfigError("pass --bootstrap HOST:PORT (or set STREAMLEARN_KAFKA_BOOTSTRAP) to replay a topic")
    check_label_column(label_column, files)
    base = ReplayConfig.base(
        learner=learner,
        window=window,
        drift=drift,
        gate=GateChoice(publish_every_batches, validation_tolerance, holdout_min_events),
    )
    configs = load_configs(list(config_files), base)
    tasks = {(c.learner.task, c.learner.n_classes) for c in configs}
    if len(tasks) > 1:
        raise ConfigError(
            f"all configurations must share --task and --classes (they score the same labels), "
            f"got {sorted(tasks)}"
        )
    task, n_classes = tasks.pop()
    n_features = next((c.learner.n_features for c in configs if c.learner.n_features), None)
    start = parse_bound(range_from, default="earliest")
    end = parse_bound(range_to, default="latest")
    name = (
        os.path.splitext(os.path.basename(files[0]))[0] if files else (topics or partitions)[0].split(":")[0]
    )
    out_dir = out_dir or os.path.join(".streamlearn", f"replay-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if files:
        source, info = (
            _file_source(files, start, end, label_column),
            {"kind": "file", "bootstrap": None, "topics": [os.path.basename(f) for f in files]},
        )
    else:
        source, info = (
            _kafka_source(bootstrap, topics, partitions, kafka, start, end),
            {
                "kind": "kafka",
                "bootstrap": bootstrap,
                "topics": sorted(set(topics) | {p.rsplit(":", 1)[0] for p in partitions}),
            },
        )
    info.update({"from": range_from, "to": range_to})
    click.echo(
        f"[streamlearn] replaying {', '.join(info['topics'])} [{range_from}, {range_to}) into "
        f"{len(configs)} configuration(s): {', '.join(c.name for c in configs)}",
        err=True,
    )
    prepare_out_dir(out_dir)
    backtest = Backtest(
        source,
        configs,
        out_dir,
        task=task,
        n_classes=n_classes,
        n_features=n_features,
        max_poll_records=max_poll_records,
        progress=not quiet,
        label_field=label_column,
        command=shlex.join(["streamlearn", *sys.argv[1:]]),
        source_info=info,
    )
    with _replay_logging(os.path.join(out_dir, "replay.log")):
        result = backtest.run()
    files_written = write_report(result, out_dir)
    read = result["read"]
    rate = f"{read['records_per_second']:,.0f} records/s" if read["records_per_second"] else "n/a"
    click.echo(
        f"[streamlearn] read {read['records']:,} records once ({rate}), "
        f"{read['dead_letters']:,} dead letter(s); {read['wall_seconds']:.1f}s in all",
        err=True,
    )
    click.echo(format_table(result))
    click.echo(f"[streamlearn] report: {files_written.html}  (plots and summary.json beside it)", err=True)


@contextlib.contextmanager
def _replay_logging(path: str):
    """Drift decisions go to ``replay.log`` (and the report), not between progress bar updates.

    With ``-v`` they are printed as well; other warnings print above the bar.
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    quiet_console = logging.getLogger().getEffectiveLevel() > logging.INFO
    drift_log = logging.getLogger("drift")
    saved = drift_log.level, drift_log.propagate
    drift_log.addHandler(handler)
    drift_log.setLevel(logging.INFO)
    drift_log.propagate = not quiet_console
    try:
        with logging_redirect_tqdm():
            yield
    finally:
        drift_log.removeHandler(handler)
        drift_log.setLevel(saved[0])
        drift_log.propagate = saved[1]
        handler.close()


def _file_source(files, start, end, label_column):
    from stream.sources.files import FileSource

    for bound, flag in ((start, "--from"), (end, "--to")):
        if bound.kind == "time" or bound.per_partition:
            raise ConfigError(
                f"{flag} {bound.spec!r}: files are replayed by row number (e.g. --from 1000 "
                "--to 5000); times need a topic"
            )
    return FileSource(
        list(files),
        label_column=label_column,
        start=start.offset or 0,
        end=end.offset if end.kind == "offset" else None,
    )


def _kafka_source(bootstrap, topics, partitions, kafka, start, end):
    from stream.sources.base import parse_partitions
    from stream.sources.kafka import KafkaSourceConfig
    from stream.sources.range import KafkaRangeSource

    config = KafkaSourceConfig(
        bootstrap=bootstrap,
        topics=tuple(topics),
        partitions=tuple(parse_partitions(partitions)),
        client_id=kafka.client_id,
        extra=kafka.client_options(),
    )
    # Checked here, before the banner and the report directory, so a mistake is the only line printed.
    require_broker(bootstrap)
    require_topics(config)
    return KafkaRangeSource(config, start, end)
