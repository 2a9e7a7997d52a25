"""``streamlearn retrain``: a distributed full retrain of a topic range, launched through torchrun.

Kept apart from :mod:`stream.cli.main` (which registers it on import), like the
replay command.
"""

from __future__ import annotations

import dataclasses
import os
import time

import click

from stream.cli.errors import fail, require_broker, require_registry, require_topics
from stream.cli.options import (
    BOOTSTRAP,
    KAFKA_OPTIONS,
    KAFKA_SETTINGS,
    LEARNER,
    RANGE_FROM,
    RANGE_TO,
    REGISTRY,
    REGISTRY_NAMESPACE,
    TOPICS,
    learner_from,
)
from stream.cli.record_options import SCHEMA, schema_from
from stream.cli.table import Option, Values, with_options
from stream.core.errors import ConfigError, RetrainFailedError

#: ``streamlearn retrain``'s options, in ``--help`` order.
RETRAIN_OPTIONS = (
    BOOTSTRAP,
    TOPICS.but(required=True, help="Topic to train on (repeatable)."),
    RANGE_FROM.but(
        help="Start (included): earliest, an offset, P:N[,P:N], ISO time, @EPOCH_MS, or relative (-24h)."
    ),
    RANGE_TO.but(
        help="End (excluded), the cutoff: latest (the end when the job starts), or any --from form."
    ),
    Option(
        "--nproc", "nproc", type=int, default=1, show_default=True, help="Worker processes on this machine."
    ),
    Option(
        "--nnodes",
        "nnodes",
        default="1",
        show_default=True,
        help="Machines in the job (each runs this command).",
    ),
    Option(
        "--rdzv-endpoint",
        "rdzv_endpoint",
        metavar="HOST:PORT",
        help="Rendezvous for several machines: one reachable host:port, the same on every node.",
    ),
    Option("--rdzv-id", "rdzv_id", help="Job id shared by the nodes of one job."),
    Option("--epochs", "epochs", type=int, default=3, show_default=True, help="Passes over the range."),
    Option(
        "--batch-size",
        "batch_size",
        type=int,
        default=256,
        show_default=True,
        help="Global minibatch (split evenly over the shards, whatever the number of processes).",
    ),
    Option(
        "--shards",
        "shards",
        type=int,
        default=8,
        show_default=True,
        help="Fixed cut of the range; the result depends on it, not on --nproc (at most this many processes).",
    ),
    Option("--retrain-lr", "retrain_lr", type=float, help="Learning rate of the retrain [default: --lr]."),
    REGISTRY.but(
        help="Where the candidate goes: a directory or redis://... [env STREAMLEARN_REGISTRY_URL; default "
        ".streamlearn/registry]; 'none' writes it to the job directory only."
    ),
    REGISTRY_NAMESPACE,
    Option(
        "--job-dir",
        "job_dir",
        help="spec.json, log.txt, result.json [default: .streamlearn/retrain/<time>].",
    ),
    Option("--timeout", "timeout_s", type=float, help="Stop the job after SECONDS."),
    KAFKA_OPTIONS.but(help="Extra client option KEY=VALUE."),
    SCHEMA.but(
        help="Feature schema (YAML/JSON) for records of named fields; default: the schema of the "
        "registry's current version, if it has one."
    ),
    *LEARNER,
    KAFKA_SETTINGS,
)


@click.command()
@with_options(RETRAIN_OPTIONS)
def retrain(opts: Values) -> None:
    """Retrain from scratch on a topic range with PyTorch DDP and publish a candidate version.

    \b
    Every process reads its share of the range straight from Kafka (gloo on
    CPU, NCCL on CUDA); rank 0 publishes the model with its data range and
    metrics as a *candidate*. A running daemon (`run --retrain-every-...`)
    launches these itself and gates the candidate against its live model.

    \b
    Example:
      streamlearn retrain --bootstrap localhost:9092 --topic clicks --from -7d --nproc 2
    """
    from learners.choice import parse_options
    from stream.reconcile.job import Launch, RetrainJob
    from stream.reconcile.spec import RetrainSpec

    learner = learner_from(opts)
    bootstrap = opts.bootstrap
    if not bootstrap:
        raise ConfigError("pass --bootstrap HOST:PORT (or set STREAMLEARN_KAFKA_BOOTSTRAP)")
    if learner.kind != "torch":
        raise ConfigError(
            f"a full retrain trains torch models (logistic, mlp, resmlp); {learner.model!r} is a "
            f"{learner.kind} model"
        )
    spec = RetrainSpec(
        bootstrap=bootstrap,
        topics=tuple(opts.topics),
        start=opts.range_from,
        end=opts.range_to,
        learner=dataclasses.asdict(learner),
        epochs=opts.epochs,
        batch_size=opts.batch_size,
        shards=opts.shards,
        lr=opts.retrain_lr,
        registry=None if opts.registry == "none" else opts.registry,
        registry_namespace=opts.registry_namespace,
        # Security settings (SASL password) stay in the environment the workers inherit, not in spec.json.
        kafka=parse_options(opts.kafka_options, "--kafka-option"),
    )
    spec = dataclasses.replace(spec, codec=_codec_state(schema_from(opts), spec))
    launch = Launch(
        nproc=opts.nproc, nnodes=opts.nnodes, rdzv_endpoint=opts.rdzv_endpoint, rdzv_id=opts.rdzv_id
    )
    _preflight(spec, launch, opts.kafka)
    job_dir = opts.job_dir or os.path.join(".streamlearn", "retrain", time.strftime("%Y%m%d-%H%M%S"))
    job = RetrainJob(spec, job_dir, launch, timeout_s=opts.timeout_s).start()
    click.echo(
        f"[streamlearn] retrain job in {job.dir} ({' '.join(job.command()[1:4])} ...); log: {job.log_path}",
        err=True,
    )
    outcome = _follow(job)
    if not outcome.ok:
        if outcome.worker_error:  # a worker's StreamlearnError: a mistake it explains, not a crash
            raise RetrainFailedError(f"the retrain failed {outcome.worker_error} (log: {job.log_path})")
        fail(outcome.message, code=1)
    r = outcome.result
    where = f"registry version {r.version} (candidate)" if r.version is not None else r.state_path
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in r.metrics.items())
    click.echo(
        f"[streamlearn] retrained on {r.events:,} events with {r.world_size} process(es) ({r.backend}) in "
        f"{outcome.seconds:.1f}s -> {where}; {metrics}",
        err=True,
    )


def _codec_state(schema, spec) -> dict:
    """How the workers read records: the given schema, else the registry's current version's (schema and labels)."""
    from serving.registry.factory import open_registry

    if schema is not None:
        return {"features": schema.to_dict(), "n_features": schema.width}
    if not spec.registry:
        return {}
    registry = open_registry(spec.registry, namespace=spec.registry_namespace)
    try:
        current = registry.current()
    except Exception:  # noqa: BLE001 -- unreachable is reported by the preflight, with its own message
        return {}
    finally:
        registry.close()
    return dict(current.schema) if current is not None and current.schema.get("features") else {}


def _preflight(spec, launch, kafka) -> None:
    """What the workers would find wrong at their start, found here: one line instead of torchrun's report.

    Configuration first, then the broker, the topics and the registry.

    Raises
    ------
    ConfigError, BrokerUnavailableError, TopicNotFoundError, RegistryUnavailableError
    """
    from serving.registry.factory import open_registry
    from stream.sources.bounds import parse_bound
    from stream.sources.kafka import KafkaSourceConfig

    parse_bound(spec.start)
    parse_bound(spec.end, default="latest")
    if launch.standalone and launch.nproc > spec.shards:
        raise ConfigError(
            f"--nproc {launch.nproc} but only {spec.shards} shards: raise --shards to at least the number "
            "of processes (the shards, not the processes, fix the result)"
        )
    require_broker(spec.bootstrap)
    require_topics(
        KafkaSourceConfig(
            bootstrap=spec.bootstrap,
            topics=spec.topics,
            extra={**kafka.client_options(), **spec.kafka},
        )
    )
    if spec.registry:
        registry = open_registry(spec.registry, namespace=spec.registry_namespace)
        try:
            require_registry(registry)
        finally:
            registry.close()


def _follow(job):
    """Echo the workers' progress lines as the log grows until the job ends; its outcome.

    Only ``[retrain]`` lines are shown: torchrun's own reports, warnings and
    the workers' tracebacks stay in the log, which the error line names.
    """
    from stream.reconcile.job import worker_line

    shown = 0
    partial = b""
    while True:
        outcome = job.poll()
        try:
            with open(job.log_path, "rb") as f:
                f.seek(shown)
                chunk = f.read()
        except OSError:
            chunk = b""
        shown += len(chunk)
        *lines, partial = (partial + chunk).split(b"\n")
        if outcome is not None:
            lines.append(partial)
        for raw in lines:
            line = worker_line(raw.decode(errors="replace"))
            if line.startswith("[retrain]") and not line.startswith("[retrain] error"):
                click.echo(line, err=True)
        if outcome is not None:
            return outcome
        time.sleep(0.3)
