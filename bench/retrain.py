"""Full retrain vs the incremental model on the same range: time, prequential and holdout accuracy.

On the embedded broker (or ``--bootstrap``), one topic of Hyperplane events
(10 features, 3 partitions, a concept change half way) is split per partition
into a training range (the first 90%) and a holdout (the last 10%). On the
training range:

- **incremental**: ``streamlearn replay``'s engine (count:500 windows, one
  step per window, ADWIN drift policy, validation gate) -- the model the
  daemon would have; its prequential accuracy is test-then-train;
- **retrain, in process**: :func:`stream.reconcile.worker.retrain`, a world of one
  (no torchrun, no process group), on the whole training range and on the
  part since the concept change (what ``--retrain-from`` chooses);
- **retrain, torchrun xN (gloo)**: ``streamlearn retrain``'s job with N
  processes on this machine (process start-up included in the wall time);
- **retrain, torchrun (NCCL)**: the same on every CUDA device, when present.

Every model is then scored on the holdout, which none of them learned. The
table gives wall seconds and their ratio to the incremental pass, which is
what the numbers mean on another machine.

    python -m bench.retrain                 # 120k events, embedded broker
    python -m bench.retrain --events 30000 --nproc 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time

import numpy as np

from stream.core import metrics
from stream.sources.produce import SyntheticStream, produce

T0 = 1_700_000_000_000
MODEL = {"model": "mlp", "model_options": ("hidden=[32]",), "lr": 0.01, "seed": 1, "n_features": 10}


def holdout_accuracy(learner, X: np.ndarray, y: np.ndarray) -> float:
    return metrics.accuracy(learner.predict_batch(X), y)


def read_range(bootstrap: str, topic: str, start: dict, end: dict):
    from stream.codec.json_codec import CodecConfig, JsonCodec
    from stream.reconcile.shards import plan_shards
    from stream.reconcile.worker_data import read_shard
    from stream.sources.kafka import KafkaSourceConfig

    (shard,) = plan_shards({tp: (start[tp], end[tp]) for tp in start}, 1)
    data = read_shard(
        KafkaSourceConfig(bootstrap=bootstrap, topics=(topic,)), shard, JsonCodec(CodecConfig(n_features=10))
    )
    return data.events.X, data.events.y


def incremental(bootstrap: str, topic: str, cutoff_spec: str, choice) -> tuple[float, float, object]:
    from stream.engine.checkpoint import CheckpointStore
    from stream.replay.config import ReplayConfig
    from stream.replay.driver import Backtest
    from stream.sources.bounds import parse_bound
    from stream.sources.kafka import KafkaSourceConfig
    from stream.sources.range import KafkaRangeSource

    src = KafkaRangeSource(
        KafkaSourceConfig(bootstrap=bootstrap, topics=(topic,)),
        parse_bound("earliest"),
        parse_bound(cutoff_spec, default="latest"),
    )
    out = tempfile.mkdtemp(prefix="bench-retrain-inc-")
    config = ReplayConfig.base(name="incremental", window="count:500", learner=choice)
    started = time.perf_counter()
    result = Backtest(src, [config], out, progress=False).run()
    seconds = time.perf_counter() - started
    learner = choice.factory()(10)
    learner.load_state_dict(
        CheckpointStore(os.path.join(out, "configs", "incremental", "checkpoints")).latest().learner
    )
    return seconds, result["configs"][0]["summary"]["accuracy"], learner


def load_candidate(registry_dir: str, version: int, choice):
    from serving.registry.file_backend import FileRegistry

    learner = choice.factory()(10)
    learner.load_state_dict(FileRegistry(registry_dir).load_state(version))
    return learner


def torchrun_job(spec, nproc: int, work: str, choice) -> tuple[float, dict, object]:
    from stream.reconcile.job import Launch, RetrainJob

    job = RetrainJob(
        dataclasses.replace(spec, registry=os.path.join(work, "registry")),
        os.path.join(work, "job"),
        Launch(nproc=nproc),
    )
    started = time.perf_counter()
    outcome = job.start().wait(poll_s=0.1)
    seconds = time.perf_counter() - started
    if not outcome.ok:
        raise SystemExit(f"bench.retrain: the torchrun job failed: {outcome.message}")
    result = dataclasses.asdict(outcome.result)
    return seconds, result, load_candidate(os.path.join(work, "registry"), result["version"], choice)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=120_000)
    parser.add_argument("--nproc", type=int, default=2, help="Processes of the multi-process gloo run.")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--bootstrap", default=None, help="Use this Kafka instead of the embedded broker.")
    parser.add_argument("--json", default=None, help="Also write the figures to this file.")
    args = parser.parse_args()

    import torch

    from learners.choice import LearnerChoice
    from stream.core.records import TopicPartition
    from stream.reconcile.spec import RetrainSpec
    from stream.reconcile.worker import retrain
    from stream.sources.embedded_broker import EmbeddedBroker

    torch.set_num_threads(1)
    n = args.events
    per_partition = n // 3
    cut = per_partition * 9 // 10
    broker = None if args.bootstrap else EmbeddedBroker().__enter__()
    bootstrap = args.bootstrap or broker.bootstrap
    rows = []
    try:
        topic = f"bench-retrain-{int(time.time())}"
        produce(
            bootstrap,
            topic,
            SyntheticStream(
                n=per_partition * 3,
                generator="hyperplane",
                seed=7,
                drift_at=n // 2,
                start_ts_ms=T0,
                interval_ms=10,
            ),
            partitions=3,
        )
        tps = [TopicPartition(topic, p) for p in range(3)]
        Xh, yh = read_range(bootstrap, topic, {tp: cut for tp in tps}, {tp: per_partition for tp in tps})
        cutoff_spec = ",".join(f"{topic}:{p}:{cut}" for p in range(3))
        cpu = LearnerChoice(**{**MODEL, "device": "cpu"})

        seconds, prequential, model = incremental(bootstrap, topic, cutoff_spec, cpu)
        rows.append(
            (
                "incremental (count:500, 1 step/window)",
                seconds,
                3 * cut,
                prequential,
                holdout_accuracy(model, Xh, yh),
            )
        )
        base_seconds = seconds

        spec = RetrainSpec(
            bootstrap=bootstrap,
            topics=(topic,),
            end=cutoff_spec,
            learner={**dataclasses.asdict(cpu)},
            epochs=args.epochs,
        )
        work = tempfile.mkdtemp(prefix="bench-retrain-1-")
        started = time.perf_counter()
        result = retrain(dataclasses.replace(spec, registry=os.path.join(work, "registry"), out_dir=work))
        seconds = time.perf_counter() - started
        rows.append(
            (
                f"retrain in process, {args.epochs} epochs (cpu)",
                seconds,
                result.events,
                None,
                holdout_accuracy(load_candidate(os.path.join(work, "registry"), result.version, cpu), Xh, yh),
            )
        )

        # The same recipe on the range since the concept change (--retrain-from at the change).
        since = ",".join(f"{topic}:{p}:{(n // 2) // 3}" for p in range(3))
        work = tempfile.mkdtemp(prefix="bench-retrain-since-")
        started = time.perf_counter()
        result = retrain(
            dataclasses.replace(spec, start=since, registry=os.path.join(work, "registry"), out_dir=work)
        )
        seconds = time.perf_counter() - started
        rows.append(
            (
                "retrain in process, since the change",
                seconds,
                result.events,
                None,
                holdout_accuracy(load_candidate(os.path.join(work, "registry"), result.version, cpu), Xh, yh),
            )
        )

        for nproc in sorted({1, args.nproc}):
            seconds, result, model = torchrun_job(
                spec, nproc, tempfile.mkdtemp(prefix=f"bench-retrain-{nproc}-"), cpu
            )
            rows.append(
                (
                    f"retrain torchrun x{nproc} ({result['backend']}, cpu)",
                    seconds,
                    result["events"],
                    None,
                    holdout_accuracy(model, Xh, yh),
                )
            )
        if torch.cuda.is_available():
            gpus = torch.cuda.device_count()
            cuda = LearnerChoice(**{**MODEL, "device": "auto"})
            spec_gpu = dataclasses.replace(spec, learner=dataclasses.asdict(cuda))
            seconds, result, model = torchrun_job(
                spec_gpu, gpus, tempfile.mkdtemp(prefix="bench-retrain-gpu-"), cpu
            )
            rows.append(
                (
                    f"retrain torchrun x{gpus} ({result['backend']}, {result['device']})",
                    seconds,
                    result["events"],
                    None,
                    holdout_accuracy(model, Xh, yh),
                )
            )
    finally:
        if broker is not None:
            broker.__exit__(None, None, None)

    print(
        f"\nbench.retrain: {3 * per_partition:,} Hyperplane events, 3 partitions, concept change at {n // 2:,}; "
        f"trained on the first {3 * cut:,}, holdout = the last {len(yh):,}; model mlp[32]\n"
    )
    print(f"{'model':<44} {'wall s':>8} {'x incr.':>8} {'events':>9} {'prequential':>12} {'holdout acc':>12}")
    for name, seconds, events, preq, hold in rows:
        preq_text = f"{preq:.4f}" if preq is not None else "-"
        print(
            f"{name:<44} {seconds:>8.2f} {seconds / base_seconds:>8.2f} {events:>9,} {preq_text:>12} {hold:>12.4f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                [dict(zip(("model", "seconds", "events", "prequential", "holdout"), r)) for r in rows],
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
