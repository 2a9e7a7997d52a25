"""Distributed full retrain from scratch on a replayed Kafka range: the torchrun entry point.

Launch it with torchrun (``streamlearn retrain`` does this for you)::

    torchrun --standalone --nproc-per-node 2 -m stream.reconcile.worker --spec job/spec.json

Every rank reads its share of the range straight from Kafka
(:mod:`stream.reconcile.shards`, :mod:`stream.reconcile.worker_data`), the model is
wrapped in ``DistributedDataParallel`` (gloo on CPU, NCCL on CUDA;
:mod:`stream.reconcile.distributed`), and rank 0 publishes the trained model to the
registry as a *candidate* with its data range and metrics. The daemon's
reconciler (:mod:`stream.reconcile.reconciler`) gates it against the live model.

The result does not depend on the number of processes. The range is cut into
a fixed number of shards; step ``t`` of epoch ``e`` takes rows
``[t*b, (t+1)*b)`` of every shard's own seeded permutation (``b =
batch_size / shards``), whichever rank holds it. Each rank sums the loss of
its rows and scales it by ``world / rows_in_step``, so DDP's gradient average
is exactly the single-process mean gradient of the whole global minibatch --
the same update, up to the order of floating-point sums. Input
standardisation uses the global moments of the whole range (all-reduced
before training), not per-rank ones.

Examples
--------
In-process, a world of one (what a test or a notebook does):

>>> from stream.reconcile.spec import RetrainSpec
>>> spec = RetrainSpec(bootstrap="127.0.0.1:9092", topics=("clicks",), epochs=2)
>>> spec.batch_size // spec.shards
32
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import torch
from torch import nn

from learners.choice import LearnerChoice
from learners.neural.standardize import InputStandardizer, MaskedStandardizer
from stream.core.errors import ConfigError, StreamlearnError
from stream.core.records import TopicPartition
from stream.reconcile.distributed import DistContext
from stream.reconcile.shards import owned, plan_shards
from stream.reconcile.spec import RetrainSpec
from stream.reconcile.worker_data import ShardData, read_shard, resolve_range

if TYPE_CHECKING:
    from stream.codec.json_codec import JsonCodec

__all__ = ["RetrainResult", "main", "retrain"]

log = logging.getLogger(__name__)

#: ``RANK:STEP`` -- that rank raises at that global step (fault-injection drills and tests).
FAULT_ENV = "STREAMLEARN_RETRAIN_FAULT"


@dataclass
class RetrainResult:
    """What a retrain produced; written by rank 0 as ``result.json`` in the job directory."""

    version: int | None
    ranges: dict[str, list[int]]  # "topic:partition" -> [start, end), half-open
    events: int
    undecodable: int
    metrics: dict[str, float]
    world_size: int
    backend: str
    device: str
    seconds: dict[str, float]
    state_path: str | None = None
    ids_path: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)

    def cutoff(self) -> dict[TopicPartition, int]:
        """Per partition, the first offset the candidate has *not* learned."""
        return {_tp(k): int(v[1]) for k, v in self.ranges.items()}

    @classmethod
    def from_dict(cls, data: dict) -> RetrainResult:
        return cls(**data)


def _tp(key: str) -> TopicPartition:
    topic, _, part = key.rpartition(":")
    return TopicPartition(topic, int(part))


def _key(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


def _say(ctx: DistContext, message: str) -> None:
    if ctx.rank == 0:
        print(f"[retrain] {message}", flush=True)


# ------------------------------------------------------------------ pieces
def _build_learner(spec: RetrainSpec, ctx: DistContext, n_features: int, codec: JsonCodec):
    choice = LearnerChoice(**{**spec.learner, "device": str(ctx.device)})
    if choice.kind != "torch":
        raise ConfigError(f"a full retrain trains torch models; {choice.model!r} is a {choice.kind} model")
    # EWC and replay plugins come out empty: a retrain learns every event of
    # its range, so it has nothing to hold on to or rehearse yet.
    shape = {}
    if codec.schema is not None:
        shape["layout"] = codec.schema.layout()
    if codec.labels is not None and not codec.labels.fixed:
        shape["n_classes"] = codec.n_classes
    learner = choice.factory()(n_features, **shape)
    return choice, learner


def _refuse_inference(schema, summary) -> NoReturn:
    """Each rank would infer a schema from its own shard's first records: they could differ. Refuse instead."""
    raise ConfigError(
        "the retrain range holds named fields but no feature schema was given: pass --schema FILE, "
        "or retrain into a registry whose current version has one (a daemon's retrain passes its own)"
    )


def _global_moments(ctx: DistContext, parts: list[torch.Tensor], d: int, device) -> tuple:
    """Per-column count, mean and M2 of the first ``d`` columns over the whole range (two all-reduces, float64).

    Missing values (NaN, in the numeric block of a feature schema's rows) count
    in no column, as in :class:`~learners.neural.standardize.MaskedStandardizer`.
    """
    sums = torch.zeros(2 * d, dtype=torch.float64, device=device)
    for X in parts:
        X64 = X[:, :d].to(torch.float64)
        present = ~torch.isnan(X64)
        sums[:d] += present.sum(dim=0)
        sums[d:] += torch.where(present, X64, 0.0).sum(dim=0)
    ctx.all_reduce_sum(sums)
    count = sums[:d]
    mean = sums[d:] / count.clamp_min(1)
    m2 = torch.zeros(d, dtype=torch.float64, device=device)
    for X in parts:
        X64 = X[:, :d].to(torch.float64)
        m2 += torch.where(torch.isnan(X64), 0.0, X64 - mean).square().sum(dim=0)
    ctx.all_reduce_sum(m2)
    return count, mean, m2


def _set_global_moments(ctx: DistContext, model: nn.Module, parts: list[torch.Tensor], device) -> None:
    """Every input standardiser of ``model`` gets the whole range's statistics of the columns it scales."""
    for module in model.modules():
        if isinstance(module, InputStandardizer):
            count, mean, m2 = _global_moments(ctx, parts, module.n_features, device)
            module.set_moments(count.max(), mean, m2)  # no NaN in plain rows: one count for all
        elif isinstance(module, MaskedStandardizer) and module.n_features:
            module.set_moments(*_global_moments(ctx, parts, module.n_features, device))


def _fault_step(ctx: DistContext) -> int | None:
    raw = os.environ.get(FAULT_ENV)
    if not raw:
        return None
    rank, _, step = raw.partition(":")
    return int(step or 0) if int(rank) == ctx.rank else None


def _rows_per_step(sizes: list[int], per_shard: int) -> list[int]:
    """Global rows of each step (every rank computes the same list from the gathered shard sizes)."""
    steps = max(1, math.ceil(max(sizes) / per_shard)) if sizes else 0
    return [sum(min(per_shard, max(0, n - t * per_shard)) for n in sizes) for t in range(steps)]


# -------------------------------------------------------------------- main
def retrain_lr(spec: RetrainSpec, choice: LearnerChoice) -> float:
    """``--lr`` of the retrain, else the learner's: its ``--lr``, else its model's default.

    >>> spec = RetrainSpec(bootstrap="b", topics=("t",))
    >>> retrain_lr(spec, LearnerChoice()), retrain_lr(spec, LearnerChoice(model="logistic"))
    (0.01, 0.05)
    >>> retrain_lr(RetrainSpec(bootstrap="b", topics=("t",), lr=0.2), LearnerChoice(lr=0.03))
    0.2
    """
    return float(spec.lr if spec.lr is not None else choice.learning_rate)


def retrain(spec: RetrainSpec, ctx: DistContext | None = None) -> RetrainResult:
    """Run one full retrain as this rank of ``ctx`` (default: a world of one, in this process).

    Raises
    ------
    ConfigError
        An empty range, more processes than shards, a non-torch learner.
    BrokerUnavailableError, TopicNotFoundError
        Kafka does not answer or a topic is missing.
    """
    from stream.codec.json_codec import CodecConfig, JsonCodec
    from stream.sources.kafka import KafkaSourceConfig

    ctx = ctx or DistContext.single()
    started = time.monotonic()
    if ctx.world > spec.shards:
        raise ConfigError(
            f"{ctx.world} processes but only {spec.shards} shards: raise --shards to at least the "
            f"number of processes (the shards, not the processes, fix the result)"
        )
    from stream.core.settings import KafkaSettings

    # STREAMLEARN_KAFKA_* security settings come from the environment, never from spec.json.
    kafka = KafkaSourceConfig(
        bootstrap=spec.bootstrap, topics=spec.topics, extra={**KafkaSettings().client_options(), **spec.kafka}
    )
    learner_opts = spec.learner
    ranges = ctx.broadcast_object(resolve_range(kafka, spec.start, spec.end) if ctx.rank == 0 else None)
    if not any(hi > lo for lo, hi in ranges.values()):
        raise ConfigError(f"the retrain range is empty: {_fmt_ranges(ranges)}")
    shards = plan_shards(ranges, spec.shards)
    _say(
        ctx,
        f"{ctx.world} process(es) ({ctx.backend}, {ctx.device}), {spec.shards} shards over "
        f"{_fmt_ranges(ranges)}",
    )

    # The daemon's codec state: its feature schema and label map, so the retrain reads
    # records exactly as the live model does (an empty state: numeric rows, as before).
    codec = JsonCodec(
        CodecConfig(
            task=learner_opts.get("task", "classification"),
            n_classes=learner_opts.get("n_classes", 2),
            n_features=learner_opts.get("n_features"),
        ),
        state=spec.codec or None,
    )
    codec.on_inferred = _refuse_inference
    mine: list[ShardData] = [
        read_shard(kafka, s, codec) for s in owned(shards, rank=ctx.rank, world=ctx.world)
    ]
    read_s = time.monotonic() - started
    gathered = ctx.gather_objects(
        [
            (d.index, len(d.events), d.undecodable, d.events.n_features if len(d.events) else None)
            for d in mine
        ]
    )
    sizes = [0] * spec.shards
    undecodable = 0
    dims = set()
    for rank_info in gathered:
        for index, n, bad, dim in rank_info:
            sizes[index], undecodable = n, undecodable + bad
            if dim is not None:
                dims.add(dim)
    total = sum(sizes)
    if total == 0:
        raise ConfigError(
            f"no decodable record in the retrain range {_fmt_ranges(ranges)} ({undecodable:,} undecodable)"
        )
    if len(dims) != 1:
        raise ConfigError(
            f"records in the range have different feature counts {sorted(dims)}; set --n-features"
        )
    d = dims.pop()
    _say(ctx, f"read {total:,} events ({undecodable:,} undecodable skipped) in {read_s:.1f}s")

    choice, learner = _build_learner(spec, ctx, d, codec)
    classify = choice.task == "classification"
    dev = learner.torch_device
    X = {s.index: torch.from_numpy(np.ascontiguousarray(s.events.X)).to(dev) for s in mine}
    y = {s.index: torch.from_numpy(np.ascontiguousarray(s.events.y)).to(dev) for s in mine}

    model: nn.Module = learner.module
    _set_global_moments(ctx, model, list(X.values()), dev)
    opt = learner.torch_optimizer
    for group in opt.param_groups:
        group["lr"] = retrain_lr(spec, choice)
    net: nn.Module = model
    if ctx.distributed:
        # Buffers (the standardiser's global moments) are equal on every rank
        # already; syncing them each forward would only cost a broadcast.
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.local_rank] if dev.type == "cuda" else None, forward_sync_buffers=False
        )
    loss_fn = nn.functional.cross_entropy if classify else nn.functional.mse_loss
    per_shard = spec.batch_size // spec.shards
    rows = _rows_per_step(sizes, per_shard)
    fault = _fault_step(ctx)
    model.train()
    train_started = time.monotonic()
    step = 0
    epoch_loss = torch.zeros((), dtype=torch.float64, device=dev)
    for epoch in range(spec.epochs):
        epoch_started = time.monotonic()
        perms = {
            k: torch.randperm(
                len(X[k]),
                generator=torch.Generator().manual_seed(choice.seed * 1_000_003 + epoch * 10_007 + k),
            ).to(dev)
            for k in X
        }
        epoch_loss.zero_()
        for t, n_rows in enumerate(rows):
            if fault is not None and step >= fault:
                raise RuntimeError(f"injected fault ({FAULT_ENV}) on rank {ctx.rank} at step {step}")
            idx = [(k, perms[k][t * per_shard : (t + 1) * per_shard]) for k in sorted(X)]
            xb = torch.cat([X[k][i] for k, i in idx]) if idx else torch.empty(0, d, device=dev)
            yb = torch.cat([y[k][i] for k, i in idx]) if idx else torch.empty(0, device=dev)
            out = net(xb)
            if not classify:
                out = out.squeeze(-1)
            loss = loss_fn(out, yb, reduction="sum")
            opt.zero_grad(set_to_none=True)
            (loss * (ctx.world / n_rows)).backward()
            opt.step()
            epoch_loss += loss.detach()
            step += 1
        ctx.all_reduce_sum(epoch_loss)
        _say(
            ctx,
            f"epoch {epoch + 1}/{spec.epochs}: mean loss {float(epoch_loss) / total:.4f}, "
            f"{total / max(time.monotonic() - epoch_started, 1e-9):,.0f} events/s",
        )
    train_s = time.monotonic() - train_started

    metrics = _evaluate(ctx, learner, X, y, classify, dev)
    metrics.update(
        train_loss=float(epoch_loss) / total,
        epochs=float(spec.epochs),
        world_size=float(ctx.world),
        retrain_seconds=time.monotonic() - started,
    )
    learner.count_learned(total)
    ids = ctx.gather_objects([s.events.ids.tolist() for s in mine]) if spec.record_ids else None
    result = RetrainResult(
        version=None,
        ranges={_key(tp): [lo, hi] for tp, (lo, hi) in sorted(ranges.items())},
        events=total,
        undecodable=undecodable,
        metrics=metrics,
        world_size=ctx.world,
        backend=ctx.backend,
        device=str(dev),
        seconds={"read": read_s, "train": train_s, "total": time.monotonic() - started},
        spec=asdict(spec),
    )
    if ctx.rank == 0:
        _publish(spec, result, learner, choice, d, ids, codec)
    # Every node's launcher reports the job, so each node's first process
    # writes result.json -- with the version rank 0 (maybe elsewhere) published.
    result.version = ctx.broadcast_object(result.version)
    if ctx.rank != 0 and ctx.local_rank == 0 and spec.out_dir:
        _write_result(Path(spec.out_dir), result)
    ctx.barrier()
    return result


def _evaluate(ctx: DistContext, learner, X: dict, y: dict, classify: bool, dev) -> dict[str, float]:
    """Accuracy (or RMSE) of the trained model on the whole range, all-reduced."""
    model = learner.module
    model.eval()
    acc = torch.zeros(2, dtype=torch.float64, device=dev)
    with torch.inference_mode():
        for k in X:
            out = model(X[k])
            if classify:
                acc[0] += (out.argmax(dim=-1) == y[k]).sum()
            else:
                acc[0] += (out.squeeze(-1) - y[k]).double().square().sum()
            acc[1] += len(X[k])
    ctx.all_reduce_sum(acc)
    value = float(acc[0] / acc[1])
    return {"train_accuracy": value} if classify else {"train_rmse": math.sqrt(value)}


def _publish(
    spec: RetrainSpec,
    result: RetrainResult,
    learner,
    choice,
    n_features: int,
    ids: list | None,
    codec: JsonCodec,
) -> None:
    """Rank 0: the candidate to the registry (or a file), and ``result.json``."""
    from learners.state_io import dumps_state
    from serving.registry.factory import open_registry
    from serving.registry.versions import Version

    state = learner.state_dict()
    out = Path(spec.out_dir) if spec.out_dir else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if ids is not None:
            import json

            flat = [i for per_rank in ids for shard in per_rank for i in shard]
            (out / "ids.json").write_text(json.dumps(flat))
            result.ids_path = str(out / "ids.json")
    # What the records were read with (feature schema, labels), as the daemon publishes it.
    schema = {
        **codec.schema_info(),
        "n_features": n_features,
        "task": choice.task,
        "n_classes": getattr(learner, "n_classes", None) if choice.task == "classification" else None,
    }
    note = (
        f"full retrain of {', '.join(f'{k}[{lo},{hi})' for k, (lo, hi) in result.ranges.items())}: "
        f"{result.events:,} events, {result.world_size} process(es) ({result.backend}, {result.device}), "
        f"{spec.epochs} epochs, batch {spec.batch_size}, {spec.shards} shards, seed {choice.seed}"
    )
    if spec.note:
        note = f"{spec.note}; {note}"
    if spec.registry:
        registry = open_registry(spec.registry, namespace=spec.registry_namespace)
        try:
            parent = registry.current()
            draft = Version(
                number=0,
                parent=parent.number if parent is not None else None,
                offsets={k: (lo, hi - 1) for k, (lo, hi) in result.ranges.items() if hi > lo},
                metrics=result.metrics,
                events_learned=result.events,
                schema=schema,
                learner=repr(learner),
                note=note,
            )
            result.version = registry.publish(state, draft).number
        finally:
            registry.close()
    if out is not None:
        if not spec.registry:
            (out / "candidate.safetensors").write_bytes(dumps_state(state))
            result.state_path = str(out / "candidate.safetensors")
        _write_result(out, result)
    where = f"registry version {result.version}" if result.version is not None else result.state_path
    print(
        f"[retrain] candidate: {where}; " + ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items()),
        flush=True,
    )


def _write_result(out: Path, result: RetrainResult) -> None:
    import json

    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "result.json.tmp"
    tmp.write_text(json.dumps(asdict(result), indent=2))
    os.replace(tmp, out / "result.json")  # the daemon reads it: never half-written


def _fmt_ranges(ranges: dict) -> str:
    return ", ".join(f"{tp.topic}:{tp.partition}[{lo},{hi})" for tp, (lo, hi) in sorted(ranges.items()))


def main(argv: list[str] | None = None) -> NoReturn:
    """The torchrun entry point: ``-m stream.reconcile.worker --spec SPEC.json``; ends the process (0 on success)."""
    parser = argparse.ArgumentParser(prog="stream.reconcile.worker", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--spec", required=True, help="The job's spec.json (stream.reconcile.spec.RetrainSpec)."
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    spec = RetrainSpec.from_json(Path(args.spec).read_text())
    torch.set_num_threads(int(spec.learner.get("torch_threads", 1)))
    ctx = DistContext.from_env(device=spec.learner.get("device", "auto"))
    try:
        retrain(spec, ctx)
    except BaseException as exc:  # noqa: BLE001 -- this rank is done for; say why and leave at once
        if isinstance(exc, StreamlearnError):
            print(f"[retrain] error on rank {ctx.rank}: {exc}", file=sys.stderr, flush=True)
        else:
            traceback.print_exc()
            sys.stderr.flush()
        # No destroy_process_group: with a peer blocked in a collective it
        # can hang, and torchrun must see this rank exit to stop the others.
        os._exit(2 if isinstance(exc, StreamlearnError) else 1)
    ctx.close()
    # Everything is published; skip the interpreter's teardown. On a loaded
    # machine it aborted a finished worker now and then ("terminate called
    # without an active exception": a native thread still joinable as static
    # destructors ran), which torchrun reports as a failed job.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
