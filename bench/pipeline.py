"""Pipeline throughput versus the raw consume rate of the same Kafka client, in one run.

For each client (kafka-python, confluent-kafka) on the same broker and topic:

* **raw**: a bare consumer reading every record (touching each value), the
  ceiling any pipeline on that client can reach;
* **decode only**: streamlearn's source and codec, polled the way the engine
  polls, with no window, learner or checkpoint -- the share of the gap that
  decoding alone explains;
* **pipeline**: streamlearn's engine over the same records -- decode, window,
  prequential predict, learn, checkpoint every 20 batches;
* **pipeline@100** (``--small-window``, default 100): the same pipeline at
  ``count:100`` -- ten times the batches, so the engine's fixed cost per
  batch shows (target: >= 0.7x raw; bench/batch_cost.py breaks it down);
* **process** (with ``--intake process``): the same engine, polling and decoding
  in a child process (:mod:`stream.engine.intake_process`), overlapped with learning;
  the child's start-up (~1.5 s, once per daemon) is left out of its rate.

All three build their consumer from the same ``KafkaSourceConfig`` (raw through
``kafka_python_settings`` / ``confluent_conf``, the functions the sources use),
poll with the same ``max_poll_records`` and timeout, start from a fresh consumer
with explicitly assigned partitions (no group join), and are timed from
consumer creation to its close (the pipeline's final checkpoint included), in
an order that rotates every round. The table shows median rates and, for the
ratios to raw, the median of the per-round ratios -- on a shared machine the
rows of one round see the same load, so that is the steadier figure
(target: pipeline >= 0.9 x raw).

Process state is the same for every row: after the warm-up, ``gc.freeze()``
moves everything already allocated (torch's import is ~1M objects) out of the
cyclic collector's sight. Without it each full collection triggered by the
client's own per-record objects walks torch's heap too, which slows the *raw*
consumer by a quarter and flatters every ratio.

    python -m bench.pipeline                       # embedded broker (tansu), 200k events
    python -m bench.pipeline --bootstrap host:9092 --events 1000000
    python -m bench.pipeline --intake process      # adds the process-intake row
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
import uuid

from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.poll import as_columns
from stream.core.records import TopicPartition
from stream.engine.checkpoint import CheckpointStore
from stream.engine.loop import Engine, EngineConfig
from stream.sources.base import NoPositions
from stream.sources.kafka import KafkaSource, KafkaSourceConfig, kafka_python_settings
from stream.sources.produce import SyntheticStream, produce
from stream.window.count import CountWindow

N_FEATURES = 10
PARTITIONS = 3
KINDS = ("raw", "decode", "pipeline")


def source_config(bootstrap: str, topic: str) -> KafkaSourceConfig:
    return KafkaSourceConfig(
        bootstrap=bootstrap, partitions=tuple(TopicPartition(topic, p) for p in range(PARTITIONS))
    )


def make_source(backend: str, config: KafkaSourceConfig):
    if backend == "confluent":
        from stream.sources.confluent import ConfluentKafkaSource

        return ConfluentKafkaSource(config)
    return KafkaSource(config)


def raw_kafka_python(config: KafkaSourceConfig, n: int, max_records: int, poll_timeout_ms: int) -> float:
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    started = time.perf_counter()
    consumer = KafkaConsumer(**kafka_python_settings(config))
    tps = [KTP(tp.topic, tp.partition) for tp in config.partitions]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen = 0
    nbytes = 0
    while seen < n:
        for recs in consumer.poll(timeout_ms=poll_timeout_ms, max_records=max_records).values():
            seen += len(recs)
            nbytes += sum(len(r.value) for r in recs)
    consumer.close()
    return n / (time.perf_counter() - started)


def raw_confluent(config: KafkaSourceConfig, n: int, max_records: int, poll_timeout_ms: int) -> float:
    import confluent_kafka as ck

    from stream.sources.confluent import confluent_conf

    started = time.perf_counter()
    consumer = ck.Consumer(confluent_conf(config))
    consumer.assign(
        [ck.TopicPartition(tp.topic, tp.partition, ck.OFFSET_BEGINNING) for tp in config.partitions]
    )
    seen = 0
    nbytes = 0
    while seen < n:
        for m in consumer.consume(num_messages=max_records, timeout=poll_timeout_ms / 1000):
            if m.error() is None:
                seen += 1
                nbytes += len(m.value())
    consumer.close()
    return n / (time.perf_counter() - started)


def decode_only(
    config: KafkaSourceConfig, n: int, max_records: int, poll_timeout_ms: int, backend: str
) -> float:
    """Source + codec, polled the way the engine polls (columns when the source offers them), nothing else."""
    started = time.perf_counter()
    source = make_source(backend, config)
    codec = JsonCodec(CodecConfig(n_features=N_FEATURES))
    source.open(NoPositions())
    poll_columns = getattr(source, "poll_columns", None)
    decoded = 0
    try:
        while decoded < n:
            if poll_columns is not None:
                poll = poll_columns(poll_timeout_ms, max_records)
            else:
                poll = as_columns(source.poll(poll_timeout_ms, max_records))
            out = codec.decode(poll)
            decoded += len(out.events) + len(out.dead_letters)
    finally:
        source.close()
    elapsed = time.perf_counter() - started
    return n / elapsed


def pipeline(
    config: KafkaSourceConfig,
    n: int,
    max_records: int,
    poll_timeout_ms: int,
    backend: str,
    model: str,
    window: int,
    intake: str = "inline",
) -> float:
    from learners.neural.learner import TorchLearner

    source = make_source(backend, config)
    startup: list[float] = []
    if intake == "process":
        import functools

        from stream.engine.intake_process import ProcessIntake

        # As `streamlearn run` builds it: records shipped too (duplicate ids are dead-lettered by default).
        source = ProcessIntake(
            functools.partial(make_source, backend, config),
            CodecConfig(n_features=N_FEATURES),
            with_records=True,
        )
        # The child's start (a spawned interpreter importing the stack, ~1.5 s) is a daemon's
        # one-off cost, not throughput: it is timed and left out of the rate.
        source.open = _timed_open(source.open, startup)

    with tempfile.TemporaryDirectory() as ckpt_dir:
        started = time.perf_counter()
        engine = Engine(
            source=source,
            codec=JsonCodec(CodecConfig(n_features=N_FEATURES)),
            window=CountWindow(window),
            learner_builder=lambda d: TorchLearner(model=model, n_features=d),
            store=CheckpointStore(ckpt_dir),
            config=EngineConfig(
                max_events=n,
                max_poll_records=max_records,
                poll_timeout_ms=poll_timeout_ms,
                checkpoint_every_batches=20,
                checkpoint_every_seconds=3600,
            ),
        )
        summary = engine.run()
        elapsed = time.perf_counter() - started - sum(startup)
    if summary.events_learned != n:
        raise RuntimeError(f"pipeline learned {summary.events_learned}, expected {n}")
    return n / elapsed


def _timed_open(open_source, spent: list[float]):
    def timed(handler) -> None:
        started = time.perf_counter()
        try:
            open_source(handler)
        finally:
            spent.append(time.perf_counter() - started)

    return timed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", help="existing broker (default: start the embedded tansu broker)")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-poll-records", type=int, default=5_000)
    parser.add_argument("--poll-timeout-ms", type=int, default=EngineConfig.poll_timeout_ms)
    parser.add_argument("--window", type=int, default=1_000, help="count window size")
    parser.add_argument(
        "--small-window",
        type=int,
        default=100,
        help="also run the pipeline at this count window (the per-batch cost row; 0: off)",
    )
    parser.add_argument("--model", default="logistic")
    parser.add_argument("--clients", default="kafka-python,confluent")
    parser.add_argument(
        "--intake",
        choices=("inline", "process"),
        default="inline",
        help="process: add the process-intake row",
    )
    parser.add_argument("--torch-threads", type=int, default=1, help="as streamlearn run's --torch-threads")
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="leave the start-up heap to the cyclic collector (as `streamlearn run` does today)",
    )
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from learners.neural.learner import TorchLearner

    torch.set_num_threads(args.torch_threads)
    # Warm-up outside the timings: the first optimizer import pulls in
    # torch._dynamo (~4 s once per process), a start-up cost, not throughput.
    TorchLearner(model=args.model, n_features=N_FEATURES).learn_batch(
        np.zeros((8, N_FEATURES), np.float32), np.zeros(8, np.int64)
    )
    if not args.no_gc_freeze:
        gc.collect()
        gc.freeze()  # see the module docstring: the same for every row

    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        from stream.sources.embedded_broker import EmbeddedBroker

        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap
    try:
        topic = f"bench-pipeline-{uuid.uuid4().hex[:8]}"
        t0 = time.perf_counter()
        produce(
            bootstrap,
            topic,
            SyntheticStream(n=args.events, generator="hyperplane", n_features=N_FEATURES),
            partitions=PARTITIONS,
        )
        print(
            f"broker {bootstrap} ({'embedded tansu' if broker else 'external'}); produced {args.events:,} "
            f"records of {N_FEATURES} features in {time.perf_counter() - t0:.1f}s; "
            f"window count:{args.window}, model {args.model}, checkpoint every 20 batches; "
            f"max_poll_records {args.max_poll_records}, poll timeout {args.poll_timeout_ms} ms; "
            f"gc.freeze {'off' if args.no_gc_freeze else 'on'}"
        )
        config = source_config(bootstrap, topic)
        clients = [c.strip() for c in args.clients.split(",") if c.strip()]
        raw_fns = {"kafka-python": raw_kafka_python, "confluent": raw_confluent}
        common = (config, args.events, args.max_poll_records, args.poll_timeout_ms)
        small = f"pipeline@{args.small_window}"
        extra = ((small,) if args.small_window else ()) + (("process",) if args.intake == "process" else ())
        kinds = KINDS + extra
        results: dict[str, dict[str, list[float]]] = {c: {k: [] for k in kinds} for c in clients}
        for r in range(args.repeats):
            for client in clients:
                # Rotate the order per round so drift in machine load hits every row alike.
                order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
                for kind in order:
                    if kind == "raw":
                        rate = raw_fns[client](*common)
                    elif kind == "decode":
                        rate = decode_only(*common, client)
                    elif kind == "pipeline":
                        rate = pipeline(*common, client, args.model, args.window)
                    elif kind == small:
                        rate = pipeline(*common, client, args.model, args.small_window)
                    else:
                        rate = pipeline(*common, client, args.model, args.window, intake="process")
                    results[client][kind].append(rate)
                    print(f"  round {r + 1}: {client:<12} {kind:<8} {rate:>10,.0f} ev/s", flush=True)
        print()
        print(
            "| client       | raw consume ev/s | decode only ev/s | pipeline ev/s | decode / raw | pipeline / raw "
            "| target |"
        )
        print(
            "|--------------|-----------------:|-----------------:|--------------:|-------------:|---------------:"
            "|-------:|"
        )
        for client in clients:
            rates = results[client]
            raw, dec, pipe = (statistics.median(rates[k]) for k in KINDS)
            # Ratios are taken within each round (the rows of one round share the
            # machine's state), then the median over rounds.
            dec_ratio = statistics.median(d / r for d, r in zip(rates["decode"], rates["raw"]))
            pipe_ratio = statistics.median(p / r for p, r in zip(rates["pipeline"], rates["raw"]))
            print(
                f"| {client:<12} | {raw:>16,.0f} | {dec:>16,.0f} | {pipe:>13,.0f} | {dec_ratio:>12.2f} "
                f"| {pipe_ratio:>14.2f} | >= 0.90 |"
            )
        if extra:
            # The other rows against the same round's raw rate: the small window's target is
            # issue 20's (>= 0.7x raw at count:100); the process intake's, the pipeline's.
            targets = {small: ">= 0.70", "process": ">= 0.90"}
            print()
            print("| client       | row                 |        ev/s | / raw | target  |")
            print("|--------------|---------------------|------------:|------:|--------:|")
            for client in clients:
                rates = results[client]
                for kind in extra:
                    label = f"count:{args.small_window}" if kind == small else "process intake"
                    ratio = statistics.median(p / r for p, r in zip(rates[kind], rates["raw"]))
                    print(
                        f"| {client:<12} | {label:<19} | {statistics.median(rates[kind]):>11,.0f} "
                        f"| {ratio:>5.2f} | {targets[kind]} |"
                    )
        print(
            f"(rates: medians of {args.repeats} rounds of {args.events:,} events; ratios: medians of the "
            "per-round ratios)"
        )
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
