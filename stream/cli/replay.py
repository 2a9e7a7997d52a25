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

from stream.cli.errors import EXIT_UNTRUSTED_RESULT, fail, require_broker, require_topics
from stream.cli.options import (
    BOOTSTRAP,
    DRIFT,
    FILES,
    HOLDOUT_MIN_EVENTS,
    KAFKA_SETTINGS,
    LABEL_COLUMN,
    LEARNER,
    MAX_DEAD_LETTER_RATE,
    MAX_POLL_RECORDS,
    PARTITIONS,
    PUBLISH_EVERY_BATCHES,
    QUIET,
    RANGE_FROM,
    RANGE_TO,
    REPLAY_WINDOW,
    TOPICS,
    VALIDATION_TOLERANCE,
    drift_from,
    gate_from,
    learner_from,
)
from stream.cli.record_options import RECORD_FORMAT, SCHEMA, schema_from, value_format_from
from stream.cli.table import Option, Values, with_options
from stream.core.errors import ConfigError

#: ``streamlearn replay``'s options, in ``--help`` order.
REPLAY_OPTIONS = (
    BOOTSTRAP,
    TOPICS.but(help="Topic to replay (repeatable; topics merge by timestamp)."),
    PARTITIONS.but(help="Only these TOPIC:N partitions (repeatable)."),
    FILES.but(help="Replay JSONL/CSV files instead of Kafka (repeatable; read in the order given)."),
    LABEL_COLUMN,
    SCHEMA,
    *RECORD_FORMAT,
    RANGE_FROM,
    RANGE_TO,
    Option(
        "--config",
        "config_files",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="A YAML configuration to backtest (repeatable; all read the topic in one pass). Its keys "
        "override the options given here.",
    ),
    REPLAY_WINDOW,
    PUBLISH_EVERY_BATCHES.but(
        help="The gate publishes a candidate every N micro-batches (batches, not seconds: deterministic)."
    ),
    VALIDATION_TOLERANCE.but(help=None),
    HOLDOUT_MIN_EVENTS.but(help=None),
    Option("--out", "out_dir", help="Report directory [default: .streamlearn/replay-<topic>-<time>]."),
    MAX_DEAD_LETTER_RATE.but(
        help="Share of the range's records that may go unlearned (undecodable or late) before the "
        "replay fails with exit code 1 (the report is still written); 1: off "
        "[env STREAMLEARN_DEAD_LETTER_MAX_RATE; default 0.05]."
    ),
    MAX_POLL_RECORDS,
    QUIET.but(help="No progress bar."),
    *LEARNER,
    *DRIFT,
    KAFKA_SETTINGS,
)


@click.command()
@with_options(REPLAY_OPTIONS)
def replay(opts: Values) -> None:
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
    from stream.codec.json_codec import CodecConfig
    from stream.engine.spec import check_label_column
    from stream.replay.config import ReplayConfig, load_configs
    from stream.replay.driver import Backtest, prepare_out_dir
    from stream.replay.report import format_table, write_report
    from stream.sources.bounds import parse_bound

    learner, drift = learner_from(opts), drift_from(opts)
    files, topics, partitions, bootstrap = opts.files, opts.topics, opts.partitions, opts.bootstrap
    if files and (topics or partitions):
        raise ConfigError("replay either --file(s) or --topic/--partition, not both")
    if not files and not (topics or partitions):
        raise ConfigError("name what to replay: --topic T (with --bootstrap) or --file PATH")
    if not files and not bootstrap:
        raise ConfigError("pass --bootstrap HOST:PORT (or set STREAMLEARN_KAFKA_BOOTSTRAP) to replay a topic")
    check_label_column(opts.label_column, files)
    # The command line is the base of every configuration; each --config file's keys override it.
    base = ReplayConfig.base(learner=learner, window=opts.window, drift=drift, gate=gate_from(opts))
    configs = load_configs(list(opts.config_files), base)
    tasks = {(c.learner.task, c.learner.n_classes) for c in configs}
    if len(tasks) > 1:
        raise ConfigError(
            f"all configurations must share --task and --classes (they score the same labels), "
            f"got {sorted(tasks)}"
        )
    task, n_classes = tasks.pop()
    n_features = next((c.learner.n_features for c in configs if c.learner.n_features), None)
    range_from, range_to = opts.range_from, opts.range_to
    start = parse_bound(range_from, default="earliest")
    end = parse_bound(range_to, default="latest")
    name = (
        os.path.splitext(os.path.basename(files[0]))[0] if files else (topics or partitions)[0].split(":")[0]
    )
    out_dir = opts.out_dir or os.path.join(".streamlearn", f"replay-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if files:
        source, info = (
            _file_source(files, start, end, opts.label_column),
            {"kind": "file", "bootstrap": None, "topics": [os.path.basename(f) for f in files]},
        )
    else:
        source, info = (
            _kafka_source(opts, start, end),
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
        decode=CodecConfig(
            task=task,
            n_classes=n_classes,
            n_features=n_features,
            y_field=opts.label_column,
            schema=schema_from(opts),
            value_format=value_format_from(opts),
        ),
        max_poll_records=opts.max_poll_records,
        progress=not opts.quiet,
        about={"command": shlex.join(["streamlearn", *sys.argv[1:]]), "source": info},
        max_dead_letter_rate=opts.max_dead_letter_rate,
    )
    with _replay_logging(os.path.join(out_dir, "replay.log")):
        result = backtest.run()
    files_written = write_report(result, out_dir)
    read = result["read"]
    rate = f"{read['records_per_second']:,.0f} records/s" if read["records_per_second"] else "n/a"
    click.echo(
        f"[streamlearn] read {read['records']:,} records once ({rate}), "
        f"{read['dead_letters']:,} dead letter(s) ({result['dead_letter_rate']['rate']:.1%} not learned); "
        f"{read['wall_seconds']:.1f}s in all",
        err=True,
    )
    click.echo(format_table(result))
    click.echo(f"[streamlearn] report: {files_written.html}  (plots and summary.json beside it)", err=True)
    verdict = result["dead_letter_rate"]
    if verdict["exceeded"]:
        # After the report: the user can look at what was refused (dead-letters.jsonl, the report).
        reason, count = verdict["top_reasons"][0]
        fail(
            f"{verdict['rate']:.1%} of the records were dead-lettered ({verdict['rejected']:,} of "
            f"{verdict['records']:,}), above --max-dead-letter-rate {verdict['threshold']:g}; top reason: "
            f"{reason!r} x {count:,}; the metrics cover only the rest -- check --classes, the feature "
            "schema and --topic",
            EXIT_UNTRUSTED_RESULT,
        )


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
    # Every configuration's engine warns about the dead-letter rate of the same records: say it once.
    once = _OncePerMessage()
    engine_log = logging.getLogger("stream.engine.loop")
    engine_log.addFilter(once)
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
        engine_log.removeFilter(once)
        handler.close()


class _OncePerMessage(logging.Filter):
    """Lets each distinct message through once."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self._seen:
            return False
        self._seen.add(message)
        return True


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


def _kafka_source(opts: Values, start, end):
    from stream.sources.base import parse_partitions
    from stream.sources.kafka import KafkaSourceConfig
    from stream.sources.range import KafkaRangeSource

    config = KafkaSourceConfig(
        bootstrap=opts.bootstrap,
        topics=tuple(opts.topics),
        partitions=tuple(parse_partitions(opts.partitions)),
        client_id=opts.kafka.client_id,
        extra=opts.kafka.client_options(),
    )
    # Checked here, before the banner and the report directory, so a mistake is the only line printed.
    require_broker(opts.bootstrap)
    require_topics(config)
    return KafkaRangeSource(config, start, end)
