"""Freshness: how long after Kafka acknowledges an event the API serves a model that has learned it.

For each configuration (``streamlearn run`` options) and each rate, in one run:

1. a fresh topic of 3 partitions on the broker (the embedded tansu by default),
   a fresh checkpoint directory and registry (a directory, or ``--registry redis://...``
   with a fresh namespace);
2. ``streamlearn run`` learning the topic and ``streamlearn serve`` over the registry;
3. a producer writes hyperplane records at the rate (kafka-python, acks=all,
   linger 5 ms) and notes each record's ack time (the send callback);
   once the API serves a first version, ``--duration`` seconds are measured;
4. a poller asks ``GET /models/current`` every ``--poll-ms`` and notes when a
   served version's offset ranges first cover each acknowledged event.

An event's freshness is served-time minus ack-time. Events acknowledged in the
measured span but not served when the poller stops (``--tail`` seconds after
the span; the producer keeps going meanwhile) count at their real delay so
far, poll end minus ack, so a window that never closes is not flattering.
The poll interval adds up to ``--poll-ms`` to every figure.

Everything shares this machine's cores: broker, daemon, API, producer and
poller. Compare the configurations of one run with each other, not with
figures taken elsewhere.

Usage::

    python -m bench.freshness                             # main's settings vs today's defaults, 2k and 10k ev/s
    python -m bench.freshness --rates 2000 --duration 10  # a quick look
    python -m bench.freshness --config tight="--window count:1000,max=50ms --publish-every-seconds 0.1"
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import numpy as np

N_FEATURES = 10
PARTITIONS = 3
TARGET_P50_S, TARGET_P99_S = 0.300, 1.0
#: main's settings before sub-second freshness (count windows, publish every 20 batches or 2 s,
#: on the learning thread), and the defaults of this tree.
CONFIGS = {
    "main": "--window count:1000 --publish-every-batches 20 --publish-every-seconds 2 --publish-inline",
    "defaults": "",
}


@dataclass
class Lane:
    """One configuration at one rate: what was acknowledged and what was served when."""

    acks: dict[tuple[int, int], float] = field(default_factory=dict)  # (partition, offset) -> ack time
    served: list[tuple[float, dict]] = field(default_factory=list)  # (first seen, offsets) per version
    versions_seen: int = 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _produce(bootstrap: str, topic: str, rate: float, stop: threading.Event, lane: Lane) -> None:
    import orjson
    from kafka import KafkaProducer

    from stream.sources.produce import synthetic_rows

    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, acks="all", bootstrap_timeout_ms=10_000
    )
    # A pool generated up front and cycled with fresh ids: river's generator per row would
    # cost the producer more CPU than the daemon it measures.
    pool = [(r["x"], r["y"]) for r in synthetic_rows("hyperplane", 20_000, n_features=N_FEATURES)]
    prefix = uuid.uuid4().hex[:6]
    rows = (
        {"id": f"{prefix}-{i}", "x": pool[i % len(pool)][0], "y": pool[i % len(pool)][1]} for i in count()
    )

    def acked(meta):
        lane.acks[(meta.partition, meta.offset)] = time.monotonic()

    started, sent = time.monotonic(), 0
    try:
        for row in rows:
            if stop.is_set():
                break
            producer.send(topic, value=orjson.dumps(row), partition=sent % PARTITIONS).add_callback(acked)
            sent += 1
            if sent % 20 == 0:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()


def _poll(url: str, poll_s: float, stop: threading.Event, lane: Lane) -> None:
    import httpx

    last = None
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            try:
                served = client.get(f"{url}/models/current").json().get("served")
            except httpx.HTTPError:
                served = None
            now = time.monotonic()
            if served is not None and served["number"] != last:
                last = served["number"]
                lane.served.append((now, served.get("offsets") or {}))
                lane.versions_seen += 1
            time.sleep(poll_s)


def _freshness(lane: Lane, topic: str, span: tuple[float, float], end: float) -> np.ndarray:
    """Delays of the events acknowledged in ``span``: served - ack, or ``end`` - ack if never served."""
    keys = [k for k, t in lane.acks.items() if span[0] <= t < span[1]]
    if not keys:
        return np.zeros(0)
    partition = np.array([k[0] for k in keys])
    offset = np.array([k[1] for k in keys])
    acked = np.array([lane.acks[k] for k in keys])
    when = np.full(len(keys), end)
    for seen, offsets in lane.served:  # in the order the API served them
        lo = np.full(len(keys), -1)
        hi = np.full(len(keys), -2)
        for p in range(PARTITIONS):
            if (r := offsets.get(f"{topic}:{p}")) is not None:
                lo[partition == p], hi[partition == p] = r[0], r[1]
        covered = (lo <= offset) & (offset <= hi)
        when = np.where(covered, np.minimum(when, np.maximum(seen, acked)), when)
    return when - acked


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("streamlearn serve exited")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the API served no model in time")


def run_lane(bootstrap: str, registry: str | None, options: str, rate: float, args) -> tuple[np.ndarray, int]:
    from stream.sources.produce import ensure_topic

    topic = f"bench-fresh-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic, PARTITIONS)
    work = Path(tempfile.mkdtemp(prefix="bench-fresh-"))
    if registry is None:
        (work / "registry").mkdir()  # serve waits on an empty one
        reg, ns = str(work / "registry"), []
    else:
        reg, ns = registry, ["--registry-namespace", f"bench-{uuid.uuid4().hex[:8]}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLEARN_")}
    cli = [sys.executable, "-m", "stream.cli"]
    daemon = subprocess.Popen(
        [
            *cli, "run", "--bootstrap", bootstrap, "--topic", topic, "--n-features", str(N_FEATURES),
            "--classes", "2", "--checkpoint-dir", str(work / "ckpt"), "--registry", reg, *ns,
            "--dead-letter", "none", "--quiet", *shlex.split(options),
        ],
        env=env, stdout=subprocess.DEVNULL, stderr=open(work / "run.log", "w"),
    )  # fmt: skip
    port = _free_port()
    api = subprocess.Popen(
        [*cli, "serve", "--registry", reg, *ns, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(work / "serve.log", "w"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    lane, stop_producer, stop_poller = Lane(), threading.Event(), threading.Event()
    producer = threading.Thread(
        target=_produce, args=(bootstrap, topic, rate, stop_producer, lane), daemon=True
    )
    poller = threading.Thread(target=_poll, args=(url, args.poll_ms / 1000, stop_poller, lane), daemon=True)
    try:
        producer.start()
        _wait_ready(url, api, timeout=120)
        poller.start()
        time.sleep(args.warmup)
        start = time.monotonic()
        time.sleep(args.duration)
        span_end = time.monotonic()
        time.sleep(args.tail)
        stop_poller.set()
        poller.join(10)
        end = time.monotonic()
        stop_producer.set()
        producer.join(30)
        return _freshness(lane, topic, (start, span_end), end), lane.versions_seen
    finally:
        for proc in (daemon, api):
            proc.terminate()
        for proc in (daemon, api):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", help="existing broker (default: start the embedded tansu broker)")
    parser.add_argument("--registry", help="redis://... (default: a fresh directory per lane)")
    parser.add_argument("--rates", default="2000,10000", help="events per second, comma-separated")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per lane")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds after the first served version")
    parser.add_argument("--tail", type=float, default=3.0, help="seconds polled after the measured span")
    parser.add_argument("--poll-ms", type=float, default=20.0)
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar='NAME="OPTIONS"',
        help="streamlearn run options to compare (repeatable); default: main's settings and the defaults",
    )
    args = parser.parse_args(argv)
    configs = dict(c.split("=", 1) for c in args.config) if args.config else CONFIGS
    rates = [float(r) for r in args.rates.split(",")]

    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        from stream.sources.embedded_broker import EmbeddedBroker

        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap
    rows = []
    try:
        print(
            f"broker {bootstrap}; registry {args.registry or 'a directory per lane'}; {PARTITIONS} partitions, "
            f"{N_FEATURES} features; {args.duration:g}s measured per lane, poll every {args.poll_ms:g} ms"
        )
        for rate in rates:
            for name, options in configs.items():
                delays, versions = run_lane(bootstrap, args.registry, options, rate, args)
                rows.append((name, options, rate, delays, versions))
                q = np.percentile(delays, [50, 90, 99]) if len(delays) else [np.nan] * 3
                print(
                    f"  {name:<10} {rate:>8,.0f} ev/s: p50 {q[0]:.3f}s p99 {q[2]:.3f}s ({len(delays):,} events)"
                )
    finally:
        if broker is not None:
            broker.stop()
    print()
    print(
        "| config | rate ev/s | events | versions served | p50 s | p90 s | p99 s | max s | target p50 <= 0.3 s, p99 <= 1 s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, _options, rate, delays, versions in rows:
        if not len(delays):
            print(f"| {name} | {rate:,.0f} | 0 | {versions} | - | - | - | - | no events |")
            continue
        p50, p90, p99 = np.percentile(delays, [50, 90, 99])
        verdict = "met" if p50 <= TARGET_P50_S and p99 <= TARGET_P99_S else "missed"
        print(
            f"| {name} | {rate:,.0f} | {len(delays):,} | {versions} | {p50:.3f} | {p90:.3f} | {p99:.3f} "
            f"| {delays.max():.3f} | {verdict} |"
        )
    for name, options in configs.items():
        print(f"{name}: streamlearn run {options or '(defaults)'}")


if __name__ == "__main__":
    main()
