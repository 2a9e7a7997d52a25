"""The ``streamlearn`` command line: run, inspect, produce, demo, broker.

Every user-facing failure (unreachable broker, missing topic, bad config)
prints one line ``streamlearn: error: ...`` and exits with code 2; tracebacks
are for bugs only (set ``STREAMLEARN_DEBUG=1`` to see them for errors too).
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
import sys
import threading
import time
from typing import Callable

import click

from stream.errors import BrokerUnavailableError, ConfigError, StreamlearnError

EXIT_USAGE = 2


def _fail(message: str) -> None:
    click.echo(f"streamlearn: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def user_errors(fn: Callable) -> Callable:
    """Turn StreamlearnError (and Kafka's connection errors) into one line + exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from kafka.errors import KafkaConnectionError, KafkaTimeoutError

        try:
            return fn(*args, **kwargs)
        except StreamlearnError as exc:
            if os.environ.get("STREAMLEARN_DEBUG"):
                raise
            _fail(str(exc))
        except (KafkaTimeoutError, KafkaConnectionError) as exc:
            _fail(f"cannot reach Kafka ({exc}): check --bootstrap and that the broker is up")

    return wrapper


def _parse_options(pairs: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` client options; integers and booleans are converted."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--kafka-option {pair!r} must look like KEY=VALUE")
        if value.lstrip("-").isdigit():
            out[key] = int(value)
        elif value.lower() in ("true", "false"):
            out[key] = value.lower() == "true"
        else:
            out[key] = value
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="streamlearn")
def main(verbose: int) -> None:
    """streamlearn: learn continuously from Kafka streams, exactly once."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python logs every refused connection while a broker starts; our own
    # errors say what matters. -vv shows its chatter again.
    logging.getLogger("kafka").setLevel(logging.DEBUG if verbose >= 2 else logging.CRITICAL)


# --------------------------------------------------------------------- run
def learner_options(fn: Callable) -> Callable:
    """Options that choose and configure the learner (shared by run and demo)."""
    decorators = [
        click.option("--model", default="logistic", show_default=True, help="logistic | mlp | resmlp"),
        click.option("--optimizer", default="adam", show_default=True, help="adam | adamw | sgd"),
        click.option("--lr", type=float, default=0.05, show_default=True, help="Learning rate."),
        click.option("--steps-per-batch", type=int, default=1, show_default=True,
                     help="Optimizer steps per micro-batch."),
        click.option("--task", type=click.Choice(["classification", "regression"]), default="classification",
                     show_default=True),
        click.option("--classes", "n_classes", type=int, default=2, show_default=True,
                     help="Number of classes (labels are 0..N-1)."),
        click.option("--n-features", type=int, default=None,
                     help="Feature dimension; default: locked by the first valid record."),
        click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N"),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--torch-threads", type=int, default=1, show_default=True, envvar="STREAMLEARN_TORCH_THREADS",
                     help="CPU threads for torch ops. 1 suits small models: the Kafka client and decoding "
                          "need the other cores, and oversubscribed torch threads stall."),
    ]
    for deco in reversed(decorators):
        fn = deco(fn)
    return fn


def build_learner_factory(model, optimizer, lr, steps_per_batch, task, n_classes, device, seed, torch_threads=1):
    import torch

    from learners.torch_learner import TorchLearner

    if torch_threads < 1:
        raise ConfigError("--torch-threads must be at least 1")
    torch.set_num_threads(torch_threads)  # process-wide, so set here in the entry point, not in a learner

    def build(n_features: int):
        return TorchLearner(model=model, n_features=n_features, task=task, n_classes=n_classes,
                            optimizer=optimizer, lr=lr, steps_per_batch=steps_per_batch, device=device,
                            seed=seed)

    build(2)  # fail fast on a bad model/optimizer name, before touching Kafka
    return build


def _dead_letter_sink(spec: str, bootstrap: str | None, checkpoint_dir: str):
    from stream.deadletter import FileDeadLetterSink, KafkaDeadLetterSink

    if spec == "none":
        return None
    if spec == "kafka":
        if not bootstrap:
            raise ConfigError("--dead-letter kafka needs a Kafka source; use --dead-letter file:PATH")
        return KafkaDeadLetterSink(bootstrap)
    if spec.startswith("file:"):
        return FileDeadLetterSink(spec[5:] or os.path.join(checkpoint_dir, "dead-letters.jsonl"))
    raise ConfigError(f"--dead-letter {spec!r}: use kafka, file:PATH or none")


@main.command()
@click.option("--bootstrap", default=None, help="Kafka bootstrap servers [env STREAMLEARN_KAFKA_BOOTSTRAP].")
@click.option("--topic", "topics", multiple=True, help="Topic to learn from (repeatable).")
@click.option("--partition", "partitions", multiple=True,
              help="Explicit TOPIC:N partition instead of group subscription (repeatable).")
@click.option("--group", default=None, help="Consumer group (offsets committed there for lag monitoring).")
@click.option("--file", "files", multiple=True, type=click.Path(dir_okay=False),
              help="Learn from JSONL/CSV files instead of Kafka (repeatable).")
@click.option("--window", default="count:1000", show_default=True,
              help="count:N | processing:5s | event:10s[,lateness=2s,idle=5s]")
@click.option("--checkpoint-dir", default=None, help="Checkpoint directory [env STREAMLEARN_CHECKPOINT_DIR].")
@click.option("--checkpoint-every-batches", type=int, default=None)
@click.option("--checkpoint-every-seconds", type=float, default=None)
@click.option("--dead-letter", default=None,
              help="kafka (<topic>.dlq) | file:PATH | none  [default: kafka, or file for --file]")
@click.option("--late-policy", type=click.Choice(["dead_letter", "drop"]), default="dead_letter", show_default=True)
@click.option("--until-idle", type=float, default=None, help="Exit after no record arrived for SECONDS.")
@click.option("--max-events", type=int, default=None, help="Exit after learning this many events.")
@click.option("--backend", type=click.Choice(["kafka-python", "confluent"]), default="kafka-python",
              show_default=True)
@click.option("--kafka-option", "kafka_options", multiple=True, help="Extra client option KEY=VALUE.")
@click.option("--max-poll-records", type=int, default=5000, show_default=True)
@click.option("--ledger/--no-ledger", default=False, help="Record learned event ids (exactly-once audit).")
@click.option("--quiet", is_flag=True, help="No progress lines.")
@learner_options
@user_errors
def run(bootstrap, topics, partitions, group, files, window, checkpoint_dir, checkpoint_every_batches,
        checkpoint_every_seconds, dead_letter, late_policy, until_idle, max_events, backend, kafka_options,
        max_poll_records, ledger, quiet, model, optimizer, lr, steps_per_batch, task, n_classes, n_features, device,
        seed, torch_threads):
    """Learn from Kafka topics (or files) forever, checkpointing exactly-once."""
    from stream.settings import CheckpointSettings, KafkaSettings

    kafka = KafkaSettings()
    ckpt = CheckpointSettings()
    bootstrap = bootstrap or kafka.bootstrap
    if not files and not bootstrap:
        raise ConfigError(
            "no Kafka to read from: pass --bootstrap HOST:PORT (or set STREAMLEARN_KAFKA_BOOTSTRAP), "
            "use --file for local data, or try `streamlearn demo` for an embedded broker"
        )
    summary = run_engine(
        bootstrap=None if files else bootstrap, topics=topics, partitions=partitions, group=group, files=files,
        window=window, checkpoint_dir=checkpoint_dir or ckpt.dir,
        checkpoint_every_batches=checkpoint_every_batches or ckpt.every_batches,
        checkpoint_every_seconds=checkpoint_every_seconds or ckpt.every_seconds, keep=ckpt.keep,
        dead_letter=dead_letter or ("file:" if files else "kafka"), late_policy=late_policy,
        until_idle=until_idle, max_events=max_events, backend=backend,
        kafka_extra={**kafka.client_options(), **_parse_options(kafka_options)}, kafka_settings=kafka,
        max_poll_records=max_poll_records, ledger=ledger, quiet=quiet,
        learner_factory=build_learner_factory(model, optimizer, lr, steps_per_batch, task, n_classes, device, seed,
                                                  torch_threads),
        task=task, n_classes=n_classes, n_features=n_features,
    )
    _print_summary(summary)


def run_engine(*, bootstrap, topics, partitions, group, files, window, checkpoint_dir, checkpoint_every_batches,
               checkpoint_every_seconds, keep, dead_letter, late_policy, until_idle, max_events, backend,
               kafka_extra, kafka_settings, max_poll_records, ledger, quiet, learner_factory, task, n_classes,
               n_features, install_signals=True):
    """Wire source, codec, window, learner and checkpoint store together and run the engine."""
    from stream.checkpoint import CheckpointStore
    from stream.codec import CodecConfig, JsonCodec
    from stream.daemon import Engine, EngineConfig, install_stop_signals
    from stream.progress import ProgressPrinter
    from stream.source import KafkaSourceConfig, parse_partitions
    from stream.window import parse_window

    window_config = parse_window(window)
    codec = JsonCodec(CodecConfig(task=task, n_classes=n_classes, n_features=n_features))
    if files:
        from stream.file_source import FileSource

        source = FileSource(list(files))
    else:
        source_config = KafkaSourceConfig(
            bootstrap=bootstrap, topics=tuple(topics), group_id=group,
            partitions=tuple(parse_partitions(partitions)), client_id=kafka_settings.client_id,
            session_timeout_ms=kafka_settings.session_timeout_ms,
            heartbeat_interval_ms=kafka_settings.heartbeat_interval_ms,
            max_poll_interval_ms=kafka_settings.max_poll_interval_ms, extra=kafka_extra,
        )
        if backend == "confluent":
            from stream.confluent_source import ConfluentKafkaSource

            source = ConfluentKafkaSource(source_config)
        else:
            from stream.source import KafkaSource

            source = KafkaSource(source_config)
    engine = Engine(
        source=source, codec=codec, window=window_config, learner_builder=learner_factory,
        store=CheckpointStore(checkpoint_dir, keep=keep),
        dead_letters=_dead_letter_sink(dead_letter, bootstrap, checkpoint_dir),
        config=EngineConfig(
            checkpoint_every_batches=checkpoint_every_batches, checkpoint_every_seconds=checkpoint_every_seconds,
            until_idle_seconds=until_idle, max_events=max_events, late_policy=late_policy, ledger=ledger,
            max_poll_records=max_poll_records,
        ),
        on_progress=None if quiet else ProgressPrinter(),
    )
    if install_signals:
        install_stop_signals(engine)
    # torch leaves ~1M long-lived objects behind at import; without freezing
    # them every full collection walks them all (measured: -40% throughput).
    gc.collect()
    gc.freeze()
    return engine.run()


def _print_summary(summary) -> None:
    acc = f"{summary.accuracy:.3f}" if summary.accuracy is not None else "n/a"
    click.echo(
        f"[streamlearn] stopped ({summary.stopped_because}): learned {summary.events_learned:,} events in "
        f"{summary.batches_learned:,} batches, prequential accuracy {acc}, "
        f"dead letters {sum(summary.dead_letters.values()):,}, late {summary.late:,}, "
        f"{summary.elapsed_seconds:.1f}s",
        err=True,
    )


# ----------------------------------------------------------------- inspect
@main.command()
@click.argument("checkpoint_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--ids", "with_ids", is_flag=True, help="With --json: include the ledger's learned ids and counts.")
@user_errors
def inspect(checkpoint_dir, as_json, with_ids):
    """Show what the newest checkpoint in CHECKPOINT_DIR holds."""
    from stream.checkpoint import CheckpointStore
    from stream.ledger import LearnLedger

    if not os.path.isdir(checkpoint_dir):
        raise ConfigError(f"{checkpoint_dir!r} is not a directory")
    ckpt = CheckpointStore(checkpoint_dir).latest()
    if ckpt is None:
        raise ConfigError(f"no checkpoint in {checkpoint_dir!r}")
    counters = ckpt.counters
    residue = ckpt.window.get("pending") or {}
    info = {
        "checkpoint": ckpt.seq,
        "created_at": ckpt.created_at,
        "events_learned": counters.get("events_learned", 0),
        "batches_learned": counters.get("batches_learned", 0),
        "offsets": {f"{tp.topic}:{tp.partition}": pos for tp, pos in sorted(ckpt.positions.items())},
        "dead_letters": counters.get("dead_letters", {}),
        "late": counters.get("late", 0),
        "pending_in_window": len(residue.get("ids", [])) if isinstance(residue, dict) else 0,
        "prequential_accuracy": (counters["correct"] / counters["predicted"]) if counters.get("predicted") else None,
        "schema": ckpt.schema,
    }
    if ckpt.ledger is not None:
        ledger = LearnLedger.from_snapshot(ckpt.ledger)
        info["ledger"] = {"distinct_ids": ledger.distinct, "total": ledger.total,
                          "duplicated": len(ledger.duplicated())}
        if with_ids:
            info["ledger"]["ids"] = list(ckpt.ledger["ids"])
            info["ledger"]["counts"] = [int(c) for c in ckpt.ledger["counts"]]
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    click.echo(f"checkpoint #{info['checkpoint']} ({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ckpt.created_at))})")
    click.echo(f"  events learned : {info['events_learned']:,} in {info['batches_learned']:,} batches")
    acc = info["prequential_accuracy"]
    click.echo(f"  accuracy       : {acc:.4f} (prequential)" if acc is not None else "  accuracy       : n/a")
    click.echo(f"  pending        : {info['pending_in_window']:,} events in the open window")
    click.echo(f"  dead letters   : {info['dead_letters'] or 'none'}   late: {info['late']:,}")
    for name, pos in info["offsets"].items():
        click.echo(f"  offset {name:<20} next {pos:,}")
    if "ledger" in info:
        led = info["ledger"]
        click.echo(f"  ledger         : {led['distinct_ids']:,} ids, {led['duplicated']:,} learned more than once")


# ----------------------------------------------------------------- produce
@main.command()
@click.option("--bootstrap", default=None, help="Kafka bootstrap servers [env STREAMLEARN_KAFKA_BOOTSTRAP].")
@click.option("--topic", required=True)
@click.option("--events", "n_events", type=int, default=10_000, show_default=True)
@click.option("--generator", type=click.Choice(["agrawal", "sea", "hyperplane", "rbf"]), default="hyperplane",
              show_default=True)
@click.option("--partitions", type=int, default=3, show_default=True, help="Partitions if the topic is created.")
@click.option("--drift-at", type=int, default=None, help="Switch concept at this record index.")
@click.option("--drift-width", type=int, default=1, show_default=True)
@click.option("--n-features", type=int, default=10, show_default=True, help="For hyperplane and rbf.")
@click.option("--rate", type=float, default=None, help="Records per second (default: as fast as possible).")
@click.option("--corrupt-every", type=int, default=None, help="Make every k-th record undecodable.")
@click.option("--seed", type=int, default=42, show_default=True)
@user_errors
def produce(bootstrap, topic, n_events, generator, partitions, drift_at, drift_width, n_features, rate,
            corrupt_every, seed):
    """Write a synthetic stream (river generators, optional concept drift) to a topic."""
    from stream.produce import produce as produce_stream
    from stream.settings import KafkaSettings

    bootstrap = bootstrap or KafkaSettings().bootstrap
    if not bootstrap:
        raise ConfigError("pass --bootstrap HOST:PORT (or set STREAMLEARN_KAFKA_BOOTSTRAP)")
    started = time.monotonic()
    sent = produce_stream(bootstrap, topic, n_events, generator=generator, partitions=partitions, seed=seed,
                          drift_at=drift_at, drift_width=drift_width, n_features=n_features, rate=rate,
                          corrupt_every=corrupt_every)
    click.echo(f"[streamlearn] produced {sent:,} {generator} records to {topic} in {time.monotonic() - started:.1f}s",
               err=True)


# ------------------------------------------------------------------ broker
@main.command()
@click.option("--port", type=int, default=9092, show_default=True)
@user_errors
def broker(port):
    """Run the embedded in-memory Kafka-protocol broker (tansu) on 127.0.0.1 until Ctrl-C."""
    from stream.embedded import EmbeddedBroker

    with EmbeddedBroker(port=port) as b:
        click.echo(f"[streamlearn] embedded broker on {b.bootstrap} (in memory; Ctrl-C to stop)", err=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


# -------------------------------------------------------------------- demo
@main.command()
@click.option("--bootstrap", default=None, help="Use this Kafka instead of starting the embedded broker.")
@click.option("--events", "n_events", type=int, default=200_000, show_default=True)
@click.option("--generator", type=click.Choice(["agrawal", "sea", "hyperplane", "rbf"]), default="hyperplane",
              show_default=True)
@click.option("--topic", default="streamlearn-demo", show_default=True)
@click.option("--window", default="count:100", show_default=True)
@click.option("--workdir", default=".streamlearn", show_default=True, help="Where checkpoints and dead letters go.")
@learner_options
@user_errors
def demo(bootstrap, n_events, generator, topic, window, workdir, model, optimizer, lr, steps_per_batch, task,
         n_classes, n_features, device, seed, torch_threads):
    """The embedded default: local broker + synthetic drifting stream + the daemon, end to end."""
    import uuid

    from stream.embedded import EmbeddedBroker
    from stream.produce import ensure_topic, produce as produce_stream
    from stream.settings import KafkaSettings

    broker_ctx = None
    if bootstrap is None:
        broker_ctx = EmbeddedBroker(log_path=os.path.join(workdir, "broker.log"))
        os.makedirs(workdir, exist_ok=True)
        click.echo("[streamlearn] starting the embedded broker (tansu, in memory) ...", err=True)
        bootstrap = broker_ctx.start().bootstrap
    run_id = uuid.uuid4().hex[:8]
    checkpoint_dir = os.path.join(workdir, f"demo-{run_id}", "checkpoints")
    try:
        ensure_topic(bootstrap, topic, 3)
        click.echo(f"[streamlearn] broker {bootstrap}; producing {n_events:,} {generator} events with a concept "
                   f"drift at {n_events // 2:,} to '{topic}' while the daemon learns", err=True)
        errors: list[BaseException] = []

        def _produce():
            try:
                produce_stream(bootstrap, topic, n_events, generator=generator, drift_at=n_events // 2,
                               drift_width=max(1, n_events // 50), seed=seed + 42, corrupt_every=997)
            except BaseException as exc:  # noqa: BLE001 -- surfaced after the daemon stops
                errors.append(exc)

        producer = threading.Thread(target=_produce, name="demo-producer", daemon=True)
        producer.start()
        summary = run_engine(
            bootstrap=bootstrap, topics=(topic,), partitions=(), group=f"streamlearn-demo-{run_id}", files=(),
            window=window, checkpoint_dir=checkpoint_dir, checkpoint_every_batches=20, checkpoint_every_seconds=5,
            keep=3, dead_letter="kafka", late_policy="dead_letter", until_idle=3.0, max_events=None,
            backend="kafka-python", kafka_extra={}, kafka_settings=KafkaSettings(session_timeout_ms=6000,
                                                                                  heartbeat_interval_ms=500),
            max_poll_records=5000, ledger=False, quiet=False,
            learner_factory=build_learner_factory(model, optimizer, lr, steps_per_batch, task, n_classes, device, seed,
                                                  torch_threads),
            task=task, n_classes=n_classes, n_features=n_features,
        )
        producer.join(timeout=5)
        if errors:
            raise errors[0]
        _print_summary(summary)
        click.echo(f"[streamlearn] checkpoints in {checkpoint_dir}  (try: streamlearn inspect {checkpoint_dir})",
                   err=True)
    finally:
        if broker_ctx is not None:
            broker_ctx.stop()


if __name__ == "__main__":
    main()
