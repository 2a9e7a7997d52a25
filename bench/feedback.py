"""The feedback loop end to end: answers logged, labels posted late, joined and learned by the daemon, in one run.

What runs, all through the CLI as an operator would (issue 21):

1. the embedded broker (or ``--bootstrap``), a directory registry, and a first
   model: ``streamlearn run --until-idle`` on ``--warm-rows`` rows of the
   stream's first concept;
2. ``streamlearn serve --prediction-log P --labels-topic L`` (the **log-on**
   API), a **peer** ``streamlearn serve --labels-topic L2`` on the same
   registry without the prediction log, and the daemon ``streamlearn run
   --topic P --labels-topic L --join-ttl --join-max-pending --ledger``, which
   learns from the joined labels and publishes versions both APIs hot-swap;
3. ``--clients`` threads send ``--rate`` single-row ``/predict`` requests a
   second for ``--duration`` seconds, each row to both APIs (in a random
   order), rows of a synthetic stream whose concept changes halfway
   (``stream.sources.produce.synthetic_rows``). Each row's true label is
   posted (``POST /feedback``, batches, to both APIs: the peer's go to L2,
   which nobody reads, so both do the same work but the log) ``--delay``
   after its answer; a ``--label-first`` share is posted *before* the row is
   requested (the client gives the row's id), a ``--never`` share never.

Figures: the **join rate** (on-time labels -- at most ``--ttl`` apart from
their answer -- whose row the daemon learned, from the checkpoint's ledger);
**join state** (``registry.live()["join"]`` sampled every 0.25 s: pending
items and bytes, max); **label to learned** (from the label's acknowledged
POST, or its row's answer if later, to the first checkpoint whose ledger has
the id; checkpoints every second, so +-1 s); **live accuracy** per served
version (``GET /models/{v}``: ``live`` vs ``metrics.holdout_accuracy``), beside
the bench's own count of the same answers, and river's delayed prequential
accuracy (``evaluate.progressive_val_score(..., moment, delay)``, river's
``StandardScaler | LogisticRegression`` warmed on the same rows, each row's
label revealed at its real delay -- label-first ones at once); **dropped
log rows** (``/health``); **API latency** p50/p99 of the log-on API vs the
peer: the "peer" ratio.

Everything -- broker, daemon, both APIs, the clients -- shares this
machine's cores; read the latency ratio, not the milliseconds. Verdicts:
:data:`TARGETS`.

    python -m bench.feedback                                  # 100 rows/s for 60 s, ~1.5 min
    python -m bench.feedback --quick                          # 10 s of load
    python -m bench.feedback --delay uniform:0-5s --label-first 0.2 --never 0 --ttl 10s
"""

from __future__ import annotations

import argparse
import heapq
import math
import os
import random
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: (key, target text) of each verdict row.
TARGETS = {
    "join": "join rate of on-time labels >= 0.99",
    "dropped": "dropped prediction-log rows = 0",
    "overhead": "API p50 latency, log on / off <= 1.2",
    "quality": "live accuracy >= river's delayed prequential - 0.05",
    "bounded": "max pending <= --max-pending",
}
MIN_JOIN_RATE, MAX_P50_RATIO, MAX_ACCURACY_GAP = 0.99, 1.2, 0.05
#: The daemon's settings: small windows and a checkpoint every second, for a ~100 labels/s stream.
DAEMON_OPTIONS = (
    "--window count:500,max=1s --holdout-min-events 50 --publish-every-seconds 2 --checkpoint-every-seconds 1"
)
_DELAY = re.compile(r"(exp|uniform|const):([0-9.]+)(?:-([0-9.]+))?(ms|s)?")


def parse_delay(spec: str):
    """A label delay distribution: ``exp:2s`` (mean), ``uniform:0-5s``, ``const:1s``; a sampler ``rng -> seconds``.

    >>> rng = random.Random(0)
    >>> parse_delay("const:250ms")(rng), 0 <= parse_delay("uniform:1-2s")(rng) - 1 <= 1
    (0.25, True)
    >>> parse_delay("soon")
    Traceback (most recent call last):
    ...
    ValueError: --delay 'soon': give exp:MEAN, uniform:LO-HI or const:D with a unit s or ms, e.g. exp:2s
    """
    m = _DELAY.fullmatch(spec.strip())
    if m is None or (m[1] == "uniform") != (m[3] is not None):
        raise ValueError(
            f"--delay {spec!r}: give exp:MEAN, uniform:LO-HI or const:D with a unit s or ms, e.g. exp:2s"
        )
    unit = 0.001 if m[4] == "ms" else 1.0
    a, b = float(m[2]) * unit, float(m[3] or 0) * unit
    if m[1] == "exp":
        return lambda rng: rng.expovariate(1 / a) if a > 0 else 0.0
    if m[1] == "uniform":
        return lambda rng: rng.uniform(a, b)
    return lambda rng: a


@dataclass
class Row:
    """One request of the load: what was planned and what happened."""

    id: str
    x: list[float]
    y: int
    due: float  # planned send, seconds from the start
    kind: str  # "after", "first" or "never"
    delay: float  # planned label delay (before the answer for "first")
    answered: float | None = None  # wall clock (epoch s) of the log-on API's answer
    version: int | None = None
    prediction: int | None = None
    labelled: float | None = None  # wall clock when the label's POST was acknowledged


@dataclass
class Load:
    """What the clients, the label poster and the sampler collected."""

    rows: list[Row]
    latency: dict[str, list[float]] = field(default_factory=lambda: {"on": [], "off": []})
    failed: dict[str, int] = field(default_factory=lambda: {"on": 0, "off": 0, "feedback": 0})
    labels: list = field(default_factory=list)  # heap of (due wall time, index)
    lock: threading.Lock = field(default_factory=threading.Lock)
    join_samples: list[dict] = field(default_factory=list)
    learned_at: dict[str, float] = field(default_factory=dict)


def plan(args) -> tuple[list[Row], list[dict]]:
    """The warm-up rows, then the load's rows: one stream (a generator's seed is its concept), changing halfway."""
    from stream.sources.produce import synthetic_rows

    n, w = max(1, int(args.rate * args.duration)), args.warm_rows
    rng, delay = random.Random(args.seed), parse_delay(args.delay)
    stream = synthetic_rows(args.generator, w + n, seed=args.seed, drift_at=w + n // 2, id_prefix="warm-")
    warm, rows = [next(stream) for _ in range(w)], []
    for i, r in enumerate(stream):
        u = rng.random()
        kind = "never" if u < args.never else "first" if u < args.never + args.label_first else "after"
        rows.append(Row(f"r{args.seed}-{i}", r["x"], r["y"], i / args.rate, kind, delay(rng)))
    return rows, warm


# ----------------------------------------------------------------- processes
def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "stream.cli", *argv]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLEARN_")}
    # A lone consumer: join its group at once rather than after the default session timeout.
    return env | {
        "STREAMLEARN_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "STREAMLEARN_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
    }


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def warm_up(bootstrap: str, work: Path, warm: list[dict], args) -> None:
    """The first model: the warm rows to a topic, learned by ``run --until-idle`` into the registry."""
    import orjson
    from kafka import KafkaProducer

    from serving.registry.factory import open_registry
    from stream.sources.produce import ensure_topic

    topic = f"bench-fb-warm-{uuid.uuid4().hex[:6]}"
    ensure_topic(bootstrap, topic, 1)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for r in warm:
        producer.send(topic, value=orjson.dumps(r), key=r["id"].encode())
    producer.flush()
    producer.close()
    ran = subprocess.run(
        _cli("run", "--bootstrap", bootstrap, "--topic", topic, "--n-features", str(len(warm[0]["x"])), "--classes", "2",
             "--checkpoint-dir", str(work / "ckpt"), "--registry", str(work / "registry"), "--until-idle", "3",
             "--dead-letter", "none", "--quiet", *shlex.split(args.run_options), "--publish-every-batches", "1"),
        env=_env(), capture_output=True, text=True,
    )  # fmt: skip
    if ran.returncode != 0 or open_registry(str(work / "registry")).current() is None:
        raise RuntimeError(f"the warm-up run published no model (exit {ran.returncode}): {ran.stderr[-800:]}")


def start(work: Path, name: str, argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        argv, env=_env(), stdout=subprocess.DEVNULL, stderr=open(work / f"{name}.log", "w")
    )


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API at {url} exited ({proc.returncode})")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API at {url} served no model in time")


# ---------------------------------------------------------------------- load
def client(load: Load, mine: list[int], urls: dict[str, str], t0: float, rng: random.Random) -> None:
    """Sends its rows at their due time (or at once when behind) to both APIs, in a random order."""
    import httpx

    conns = {lane: httpx.Client(base_url=url, timeout=10) for lane, url in urls.items()}
    try:
        for i in mine:
            row = load.rows[i]
            wait = t0 + row.due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            body = {"x": row.x, "id": row.id}
            for lane in rng.sample(list(urls), len(urls)):
                started = time.perf_counter()
                try:
                    resp = conns[lane].post("/predict", json=body)
                    ok = resp.status_code == 200
                except httpx.HTTPError:
                    ok = False
                took = time.perf_counter() - started
                with load.lock:
                    if not ok:
                        load.failed[lane] += 1
                        continue
                    load.latency[lane].append(took)
                    if lane == "on":
                        doc = resp.json()
                        row.answered, row.version = time.time(), doc["version"]
                        row.prediction = doc["prediction"]
                        if row.kind == "after":
                            heapq.heappush(load.labels, (row.answered + row.delay, i))
    finally:
        for c in conns.values():
            c.close()


def poster(load: Load, urls: dict[str, str], stop: threading.Event) -> None:
    """Posts the labels that are due, in batches, to both APIs; a label counts once the log-on API took it."""
    import httpx

    conns = {lane: httpx.Client(base_url=url, timeout=10) for lane, url in urls.items()}
    try:
        while not stop.is_set():
            now = time.time()
            due = []
            with load.lock:
                while load.labels and load.labels[0][0] <= now and len(due) < 500:
                    due.append(heapq.heappop(load.labels)[1])
            if due:
                body = {"labels": [{"id": load.rows[i].id, "y": load.rows[i].y} for i in due]}
                for lane, conn in conns.items():
                    try:
                        ok = conn.post("/feedback", json=body).status_code == 202
                    except httpx.HTTPError:
                        ok = False
                    if lane == "on":
                        acked = time.time()
                        with load.lock:
                            for i in due:
                                load.rows[i].labelled = acked if ok else None
                            load.failed["feedback"] += 0 if ok else 1
            else:
                time.sleep(0.02)
    finally:
        for c in conns.values():
            c.close()


def sampler(load: Load, registry, ckpt: Path, stop: threading.Event) -> None:
    """Every 0.25 s: the join state from ``registry.live()``, and the ids of each new checkpoint's ledger."""
    from stream.engine.checkpoint import CheckpointStore
    from stream.engine.ledger import LearnLedger

    store, newest = CheckpointStore(ckpt), None
    while not stop.is_set():
        now = time.time()
        try:
            join = (registry.live() or {}).get("join")
        except Exception:  # noqa: BLE001 -- a live.json being replaced: the next sample
            join = None
        if join:
            load.join_samples.append({"t": now, **join})
        names = sorted(p.name for p in ckpt.glob("ckpt-*.safetensors"))
        if names and names[-1] != newest:
            try:
                snap = store.latest()
            except Exception:  # noqa: BLE001 -- pruned while read: the next round
                snap = None
            if snap is not None and snap.ledger:
                newest = names[-1]
                for i in LearnLedger.from_snapshot(snap.ledger).ids():
                    load.learned_at.setdefault(i, now)
        time.sleep(0.25)


def drive(load: Load, urls: dict[str, str], args) -> None:
    """The label-first labels queued ahead, the clients for the duration, then the labels still due."""
    t0, wall0 = time.monotonic() + 0.5, time.time() + 0.5
    rng = random.Random(args.seed)
    for i, row in enumerate(load.rows):
        if row.kind == "first":
            heapq.heappush(load.labels, (wall0 + max(0.0, row.due - row.delay), i))
    stop = threading.Event()
    post = threading.Thread(
        target=poster, args=(load, {"on": urls["on"], "off": urls["off"]}, stop), daemon=True
    )
    post.start()
    clients = [
        threading.Thread(
            target=client,
            args=(load, list(range(c, len(load.rows), args.clients)), urls, t0, random.Random(rng.random())),
            daemon=True,
        )
        for c in range(args.clients)
    ]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    end = time.time() + args.tail
    while time.time() < end:
        with load.lock:
            if not load.labels or load.labels[0][0] > end:
                break
        time.sleep(0.1)
    stop.set()
    post.join(30)


def settle(load: Load, timeout: float) -> None:
    """Waits until no new row is learned for 4 s (the daemon caught up), at most ``timeout``."""
    last, since, deadline = -1, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = len(load.learned_at)
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > 4:
            return
        time.sleep(0.5)


# -------------------------------------------------------------------- scores
def river_accuracy(rows: list[Row], warm: list[dict]) -> float:
    """River's delayed prequential accuracy on the labelled rows, in answer order, each at its real label delay."""
    from river import compose, evaluate, linear_model, metrics, preprocessing

    model = compose.Discard("t", "d") | preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for r in warm:
        model.learn_one(_dict(r["x"]), r["y"])
    labelled = sorted((r for r in rows if r.labelled and r.answered), key=lambda r: r.answered)
    if not labelled:
        return math.nan
    t0 = labelled[0].answered
    # moment and delay ride in x (river reads them there); the pipeline discards them before the scaler.
    data = (
        ({**_dict(r.x), "t": r.answered - t0, "d": max(0.0, r.labelled - r.answered)}, r.y) for r in labelled
    )
    return evaluate.progressive_val_score(data, model, metrics.Accuracy(), moment="t", delay="d").get()


def _dict(x: list[float]) -> dict[str, float]:
    return {f"x{j}": v for j, v in enumerate(x)}


def version_table(url: str, rows: list[Row], learned: dict[str, float]) -> list[tuple]:
    """Per served version: the daemon's live figures (GET /models/{v}) and the bench's count of the same answers."""
    import httpx

    out = []
    for v in sorted({r.version for r in rows if r.version is not None}):
        doc = httpx.get(f"{url}/models/{v}", timeout=10).json()
        live = doc.get("live") or {}
        mine = [r for r in rows if r.version == v and r.id in learned]
        ours = sum(r.prediction == r.y for r in mine) / len(mine) if mine else math.nan
        answered = sum(r.version == v for r in rows)
        holdout = (doc.get("metrics") or {}).get("holdout_accuracy")
        out.append(
            (v, answered, live.get("n"), live.get("accuracy"), len(mine), ours, holdout, live.get("correct"))
        )
    return out


def _q(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


def report(load: Load, args, health: dict, versions: list[tuple], river: float) -> dict[str, bool]:
    """Prints the figures and the verdict table; returns {target key: met}."""
    ttl_s = _ttl_seconds(args.ttl)
    rows = load.rows
    posted = [r for r in rows if r.labelled and r.answered]
    on_time = [r for r in posted if abs(r.labelled - r.answered) <= ttl_s]
    joined = [r for r in on_time if r.id in load.learned_at]
    join_rate = len(joined) / len(on_time) if on_time else math.nan
    lag = [load.learned_at[r.id] - max(r.labelled, r.answered) for r in posted if r.id in load.learned_at]
    pending = [s.get("pending_features", 0) + s.get("pending_labels", 0) for s in load.join_samples]
    pending_bytes = [s.get("pending_bytes", 0) for s in load.join_samples]
    last = load.join_samples[-1] if load.join_samples else {}
    plog = health.get("prediction_log") or {}
    dropped = plog.get("dropped")
    on, off = (np.array(load.latency[k]) * 1000 for k in ("on", "off"))
    ratio = _q(on, 50) / _q(off, 50) if len(off) else math.nan
    n_live = sum(v[2] or 0 for v in versions)
    live_acc = sum((v[2] or 0) * (v[3] or 0) for v in versions) / n_live if n_live else math.nan
    kinds = {k: sum(r.kind == k for r in rows) for k in ("after", "first", "never")}

    print(f"\nrows requested {len(rows):,} ({kinds['after']:,} labelled after, {kinds['first']:,} label-first, "
          f"{kinds['never']:,} never); answered {sum(r.answered is not None for r in rows):,}; failed requests "
          f"log-on {load.failed['on']}, peer {load.failed['off']}, feedback posts {load.failed['feedback']}")  # fmt: skip
    print(f"labels posted {len(posted):,}, on time (<= {args.ttl}) {len(on_time):,}, learned {len(joined):,}; "
          f"daemon: joined {last.get('joined', '-')}, expired predictions {last.get('expired_features', '-')}, "
          f"expired labels {last.get('expired_labels', '-')}, evicted {last.get('evicted', '-')}, "
          f"repeated {last.get('repeated_labels', '-')}, bad {last.get('bad_records', '-')}")  # fmt: skip
    print(f"prediction log: logged {plog.get('logged', '-')}, dropped {dropped}, send errors "
          f"{plog.get('send_errors', '-')}, shadow skipped {plog.get('shadow_skipped', '-')}")  # fmt: skip
    print("\n| figure | value |\n|---|--:|")
    print(f"| join rate (on-time labels learned) | {join_rate:.4f} ({len(joined):,} / {len(on_time):,}) |")
    print(f"| label -> learned p50 / p99 s | {_q(lag, 50):.2f} / {_q(lag, 99):.2f} ({len(lag):,} labels) |")
    print(f"| join state: max pending items / max bytes | {max(pending, default=0):,} / "
          f"{max(pending_bytes, default=0):,} ({len(load.join_samples)} samples) |")  # fmt: skip
    print(f"| join state at the end: pending items / bytes | {pending[-1] if pending else 0:,} / "
          f"{pending_bytes[-1] if pending_bytes else 0:,} |")  # fmt: skip
    print(f"| API p50 / p99 ms, log on | {_q(on, 50):.2f} / {_q(on, 99):.2f} |")
    print(f"| API p50 / p99 ms, log off (peer) | {_q(off, 50):.2f} / {_q(off, 99):.2f} |")
    print(f"| live accuracy, all versions / river delayed prequential | {live_acc:.4f} / {river:.4f} |")
    print(
        "\n| version | answered | live n | live accuracy | bench: learned | bench: accuracy | holdout accuracy |"
    )
    print("|--:|--:|--:|--:|--:|--:|--:|")
    for v, answered, n, acc, mine, ours, holdout, _correct in versions:
        print(
            f"| {v} | {answered:,} | {n if n is not None else '-'} | {_f(acc)} | {mine:,} | {_f(ours)} | {_f(holdout)} |"
        )

    met = {
        "join": join_rate >= MIN_JOIN_RATE,
        "dropped": dropped == 0,
        "overhead": ratio <= MAX_P50_RATIO,
        "quality": live_acc >= river - MAX_ACCURACY_GAP,
        "bounded": max(pending, default=0) <= args.max_pending and not last.get("evicted"),
    }
    measured = {
        "join": f"{join_rate:.4f}",
        "dropped": f"{dropped}",
        "overhead": f"{ratio:.2f} ({_q(on, 50):.2f} / {_q(off, 50):.2f} ms)",
        "quality": f"{live_acc:.4f} vs {river:.4f} ({live_acc - river:+.4f})",
        "bounded": f"{max(pending, default=0):,} <= {args.max_pending:,}, evicted {last.get('evicted', '-')}",
    }
    print("\n| target | measured | verdict |\n|---|---|---|")
    for key, text in TARGETS.items():
        print(f"| {text} | {measured[key]} | {'PASS' if met[key] else 'MISS'} |")
    return met


def _f(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _ttl_seconds(text: str) -> float:
    from stream.engine.join import parse_ttl

    return parse_ttl(text) / 1000


# ---------------------------------------------------------------------- main
def run(bootstrap: str, args) -> dict[str, bool]:
    from serving.registry.factory import open_registry
    from stream.sources.produce import ensure_topic

    work = Path(tempfile.mkdtemp(prefix="bench-feedback-"))
    (work / "registry").mkdir()
    tag = uuid.uuid4().hex[:6]
    plog, labels, peer_labels = (f"bench-fb-{tag}-{name}" for name in ("predictions", "labels", "peer"))
    for topic in (plog, labels, peer_labels):
        ensure_topic(bootstrap, topic, args.partitions)
    rows, warm = plan(args)
    print(f"broker {bootstrap}; work {work}; {len(rows):,} rows at {args.rate:g}/s from {args.clients} clients, "
          f"delay {args.delay}, label-first {args.label_first:g}, never {args.never:g}, ttl {args.ttl}")  # fmt: skip
    warm_up(bootstrap, work, warm, args)
    reg = str(work / "registry")
    ports = {"on": _free_port(), "off": _free_port()}
    urls = {lane: f"http://127.0.0.1:{p}" for lane, p in ports.items()}
    serve = ["serve", "--registry", reg, "--host", "127.0.0.1", "--log-level", "warning", "--bootstrap", bootstrap]  # fmt: skip
    procs = {
        "on": start(work, "serve-on", _cli(*serve, "--port", str(ports["on"]), "--prediction-log", plog,
                                           "--labels-topic", labels)),
        "off": start(work, "serve-off", _cli(*serve, "--port", str(ports["off"]), "--labels-topic", peer_labels)),
        "daemon": start(work, "run", _cli(
            "run", "--bootstrap", bootstrap, "--topic", plog, "--labels-topic", labels, "--join-ttl", args.ttl,
            "--join-max-pending", str(args.max_pending), "--n-features", str(len(rows[0].x)), "--classes", "2", "--ledger",
            "--checkpoint-dir", str(work / "ckpt"), "--registry", reg, "--dead-letter", "none", "--quiet",
            *shlex.split(args.run_options))),
    }  # fmt: skip
    load, stop = Load(rows), threading.Event()
    watch = threading.Thread(
        target=sampler, args=(load, open_registry(reg), work / "ckpt", stop), daemon=True
    )
    try:
        for lane in ("on", "off"):
            wait_ready(urls[lane], procs[lane])
        watch.start()
        drive(load, urls, args)
        settle(load, timeout=max(30.0, args.duration))
        if procs["daemon"].poll() is not None:
            print(f"the daemon exited early ({procs['daemon'].returncode}); see {work / 'run.log'}")
        import httpx

        health = httpx.get(f"{urls['on']}/health", timeout=10).json()
        time.sleep(1.2)  # the API caches the live document for a second
        versions = version_table(urls["on"], rows, load.learned_at)
    finally:
        stop.set()
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return report(load, args, health, versions, river_accuracy(rows, warm))


def main(argv: list[str] | None = None) -> dict[str, bool]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", help="existing broker (default: start the embedded tansu broker)")
    parser.add_argument("--rate", type=float, default=100.0, help="rows (requests per API) a second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--clients", type=int, default=4, help="client threads")
    parser.add_argument(
        "--delay", default="exp:2s", help="label delay after the answer: exp:MEAN, uniform:LO-HI, const:D"
    )
    parser.add_argument(
        "--label-first", type=float, default=0.1, help="share of labels posted before the request"
    )
    parser.add_argument("--never", type=float, default=0.1, help="share of rows never labelled")
    parser.add_argument("--ttl", default="30s", help="the daemon's --join-ttl")
    parser.add_argument("--max-pending", type=int, default=100_000, help="the daemon's --join-max-pending")
    parser.add_argument(
        "--tail", type=float, default=15.0, help="seconds after the load to post labels still due"
    )
    parser.add_argument("--warm-rows", type=int, default=2000, help="rows the first model learns")
    parser.add_argument("--generator", default="hyperplane", help="agrawal, sea, hyperplane or rbf")
    parser.add_argument("--partitions", type=int, default=1, help="of the prediction-log and labels topics")
    parser.add_argument("--run-options", default=DAEMON_OPTIONS, help="more streamlearn run options")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="10 s at 50 rows/s, a 5 s tail")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rate, args.tail = 10.0, 50.0, 5.0
    try:
        parse_delay(args.delay)
        _ttl_seconds(args.ttl)
    except Exception as exc:  # noqa: BLE001 -- a user mistake: one line
        parser.error(str(exc))
    if not (0 <= args.label_first + args.never <= 1):
        parser.error("--label-first + --never must be between 0 and 1")

    broker, bootstrap = None, args.bootstrap
    if bootstrap is None:
        from stream.sources.embedded_broker import EmbeddedBroker

        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap
    try:
        return run(bootstrap, args)
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    sys.exit(0 if all(main().values()) else 1)
