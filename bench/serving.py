"""Prediction API latency under concurrent load, beside the bare framework floor, in one run.

Two servers run side by side, each in its own process under uvicorn with the
same settings (one worker, ``--log-level warning``, no access log, uvicorn's
``auto`` loop and parser: uvloop and httptools when installed), on 127.0.0.1:

* **floor**: :func:`floor_app`, a bare FastAPI app whose ``/predict`` and
  ``/predict/batch`` return a constant without reading the body -- what any
  FastAPI endpoint costs here (HTTP parsing, routing, JSON out);
* **app**: ``streamlearn serve`` on a directory registry holding one
  validated model -- body validation, forward pass, metrics middleware.

Each row sends single-row (``/predict``) or batch (``/predict/batch``)
requests for ``--duration`` seconds from ``--concurrency`` closed-loop
clients: separate processes (no GIL shared with the server), one keep-alive
HTTP/1.1 connection each, raw prebuilt request bytes (~60 us of client CPU a
request, mostly the kernel's loopback TCP; http.client takes ~200). Latency
is send-to-last-byte (``time.perf_counter_ns``); server CPU per request (from
/proc) is the service time without the queueing. The **+ swaps** rows repeat
the app's rows while a thread here publishes and validates a new version
(another seed's weights) every ~100 ms, so the server's hot-swap thread loads
a model ~8 times a second while answering. Every client checks that the
``version`` it is answered with never goes backwards; non-200 answers and
broken connections count as failed.

The table shows medians over ``--rounds`` rounds (row order rotates every
round); the ratios to the floor's requests/s and p99 are medians of per-round
ratios, as a round's rows see the same machine. Target (DESIGN.md): single-row
/predict p99 < 5 ms and at least 0.8x the floor's requests/s, with zero failed
requests, swaps or not. Clients, servers and the
publisher share this machine's cores (two on the reference box), so latency
includes waiting for a core; the floor pays the same tax, hence the ratio.

    python -m bench.serving                                  # 5 s x 6 rows x 3 rounds
    python -m bench.serving --duration 2 --rounds 1          # quick look
    python -m bench.serving --model mlp --concurrency 16 --json serving.json
    python -m bench.serving --rows named                     # rows of named fields, see NAMED_SCHEMA

``--rows named`` publishes the model with a feature schema (:data:`NAMED_SCHEMA`:
numeric, boolean and 2**16-bucket categorical fields) and sends rows of named
fields, which the app validates and encodes per request; ``--n-features`` is
then the schema's width.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from pathlib import Path

TARGET_P99_MS = 5.0
#: Single-row /predict's requests/s at least this share of the floor's (DESIGN.md).
TARGET_RPS_RATIO = 0.8
SCENARIOS = (  # (name, server, endpoint, swaps)
    ("floor single", "floor", "single", False),
    ("app single", "app", "single", False),
    ("app single + swaps", "app", "single", True),
    ("floor batch", "floor", "batch", False),
    ("app batch", "app", "batch", False),
    ("app batch + swaps", "app", "batch", True),
)
#: The feature schema of ``--rows named``: a click stream's kinds of fields.
NAMED_SCHEMA = {
    "fields": [
        {"name": "amount", "type": "numeric"},
        {"name": "age", "type": "numeric"},
        {"name": "score", "type": "numeric"},
        {"name": "is_new", "type": "boolean"},
        {"name": "user", "type": "categorical", "buckets": 1 << 16},
        {"name": "country", "type": "categorical", "buckets": 1 << 16},
        {"name": "device", "type": "categorical", "buckets": 1 << 16},
    ],
    "unknown": "ignore",
}
_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")
_VERSION = re.compile(rb'"version":\s*(\d+)')


# ------------------------------------------------------------------ the floor
def floor_app():
    """The framework floor (``uvicorn --factory bench.serving:floor_app``): constants, no body parsing."""
    from fastapi import FastAPI

    app = FastAPI()
    single = {"version": 0, "prediction": 0, "probabilities": [0.5, 0.5]}

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True}

    @app.post("/predict")
    async def predict() -> dict:
        return single

    @app.post("/predict/batch")
    async def predict_batch() -> dict:
        return single

    return app


# ------------------------------------------------------------------- clients
class RawConnection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1 that sends prebuilt request bytes.

    A third of http.client's CPU per request (httpx costs more still), so the
    clients leave as much of the shared cores as they can to the server.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send ``raw`` and return ``(status, body)``; needs a Content-Length answer (JSON responses have one)."""
        self.sock.sendall(raw)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        match = _CONTENT_LENGTH.search(self.buf, 0, end + 2)
        if match is None:
            raise ConnectionError("answer without Content-Length")
        total = end + 4 + int(match.group(1))
        while len(self.buf) < total:
            self._fill()
        status, body, self.buf = int(self.buf[9:12]), self.buf[end + 4 : total], self.buf[total:]
        return status, body

    def _fill(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def http_request(port: int, path: str, body: bytes = b"") -> bytes:
    method = "POST" if body else "GET"
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def named_row(rng: random.Random) -> dict:
    """A row of :data:`NAMED_SCHEMA`'s fields. Every number is present: the bench's MLP does not impute."""
    return {
        "amount": round(rng.uniform(0, 200), 2),
        "age": rng.randint(18, 90),
        "score": round(rng.uniform(-1, 1), 4),
        "is_new": rng.random() < 0.3,
        "user": f"u_{rng.randrange(10**6)}",
        "country": rng.choice(["FR", "DE", "US", "BR", "IN"]),
        "device": rng.choice(["ios", "android", "web", None]),
    }


def request_for(port: int, endpoint: str, args: argparse.Namespace, seed: int) -> bytes:
    rng = random.Random(seed)
    if args.rows == "named":
        row = lambda: named_row(rng)  # noqa: E731
    else:
        row = lambda: [round(rng.uniform(-1, 1), 4) for _ in range(args.n_features)]  # noqa: E731
    batch_rows = args.batch_rows
    if endpoint == "single":
        return http_request(port, "/predict", json.dumps({"x": row()}).encode())
    return http_request(
        port, "/predict/batch", json.dumps({"rows": [row() for _ in range(batch_rows)]}).encode()
    )


def client(raw: bytes, port: int, duration: float, start: mp.Barrier, out: mp.Queue) -> None:
    """A closed-loop client process: one request in flight at a time for ``duration`` seconds.

    Every client connects first and then waits on ``start``, so all of them
    load the server over the same window, however slowly the processes spawned.
    """
    latencies, failed, regressions, last, versions = array("q"), 0, 0, -1, set()
    conn = RawConnection(port)
    start.wait(timeout=120)
    stop_at = time.monotonic() + duration
    while time.monotonic() < stop_at:
        t0 = time.perf_counter_ns()
        try:
            status, body = conn.request(raw)
        except OSError:
            failed += 1
            conn.close()
            conn = RawConnection(port)
            continue
        elapsed = time.perf_counter_ns() - t0
        if status != 200:
            failed += 1
            continue
        latencies.append(elapsed)
        match = _VERSION.search(body)
        version = int(match.group(1)) if match else -1
        regressions += version < last
        last = version
        versions.add(version)
    conn.close()
    out.put((latencies, failed, regressions, sorted(versions)))


def measure(port: int, endpoint: str, args: argparse.Namespace, duration: float) -> dict:
    """Run ``args.concurrency`` client processes against one server; merged latency stats and counts."""
    ctx = mp.get_context("spawn")  # clients import only this module's stdlib top, never torch
    out, start = ctx.Queue(), ctx.Barrier(args.concurrency)
    procs = [
        ctx.Process(
            target=client,
            args=(
                request_for(port, endpoint, args, i),
                port,
                duration,
                start,
                out,
            ),
        )
        for i in range(args.concurrency)
    ]
    for p in procs:
        p.start()
    results: list[tuple] = []
    give_up = time.monotonic() + duration + 120
    while len(results) < len(procs):
        try:
            results.append(out.get(timeout=0.5))
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs) or time.monotonic() > give_up:
                for p in procs:
                    p.kill()
                raise RuntimeError(
                    f"a client process failed or hung (exit codes {[p.exitcode for p in procs]})"
                ) from None
    for p in procs:
        p.join()
    lat = sorted(x for r in results for x in r[0])
    if not lat:
        raise RuntimeError(f"no successful request on port {port} ({endpoint})")

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6

    return {
        "requests_per_s": len(lat) / duration,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "failed": sum(r[1] for r in results),
        "regressions": sum(r[2] for r in results),
        "versions_seen": len({v for r in results for v in r[3]}),
    }


# ------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(cmd: list[str], port: int, ready_path: str, timeout: float = 60.0) -> subprocess.Popen:
    """Start ``cmd`` and wait until ``ready_path`` answers 200 (for the app: a model is loaded)."""
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}")
        try:
            conn = RawConnection(port)
            status, _ = conn.request(http_request(port, ready_path))
            conn.close()
            if status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"{' '.join(cmd)} did not answer on port {port} within {timeout:g}s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid``, all threads (Linux /proc; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def health(port: int) -> dict:
    """The app's ``GET /health`` body (its ``swaps`` counter says how many hot swaps it served)."""
    conn = RawConnection(port)
    try:
        return json.loads(conn.request(http_request(port, "/health"))[1])
    finally:
        conn.close()


def wait_for_version(port: int, number: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while health(port)["model_version"] != number:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the app did not swap to version {number} within {timeout:g}s")
        time.sleep(0.02)


class Publisher:
    """Publishes and validates a new version every ``interval`` seconds from a thread (the "+ swaps" rows)."""

    def __init__(self, registry, blobs: list[bytes], schema: dict, interval: float = 0.1) -> None:
        self.registry, self.blobs, self.schema, self.interval = registry, blobs, schema, interval
        self.published = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-publisher", daemon=True)

    def _run(self) -> None:
        from serving.registry.versions import Version

        try:
            while not self._stop.wait(self.interval):
                v = self.registry.publish(
                    self.blobs[self.published % len(self.blobs)], Version(number=0, schema=self.schema)
                )
                self.registry.validate(v.number, reason="bench.serving hot swap")
                self.published += 1
        except BaseException as exc:  # noqa: BLE001 -- re-raised on the main thread by __exit__
            self.error = exc

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is not None:
            raise RuntimeError("the publisher thread failed; the swap rows would be wrong") from self.error


# ---------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict[str, list[dict]]:
    """Start both servers, warm them up, then measure every scenario ``args.rounds`` times."""
    from learners.neural.learner import TorchLearner
    from learners.state_io import dumps_state
    from serving.registry.file_backend import FileRegistry
    from serving.registry.versions import Version

    schema = {"n_features": args.n_features, "task": "classification", "n_classes": 2}
    if args.rows == "named":
        schema["features"] = NAMED_SCHEMA
    blobs = [
        dumps_state(TorchLearner(args.model, n_features=args.n_features, device="cpu", seed=s).state_dict())
        for s in range(4)
    ]
    rounds: dict[str, list[dict]] = {name: [] for name, *_ in SCENARIOS}
    servers: dict[str, subprocess.Popen] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as registry_dir:
        registry = FileRegistry(registry_dir)
        registry.validate(registry.publish(blobs[0], Version(number=0, schema=schema)).number)
        ports = {"floor": free_port(), "app": free_port()}
        common = ["--host", "127.0.0.1", "--log-level", "warning"]
        try:
            servers["floor"] = start_server(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "bench.serving:floor_app",
                    "--no-access-log",
                    "--app-dir",
                    str(Path(__file__).resolve().parents[1]),
                    "--port",
                    str(ports["floor"]),
                    *common,
                ],
                ports["floor"],
                "/health",
            )
            servers["app"] = start_server(
                [
                    sys.executable,
                    "-m",
                    "stream.cli",
                    "serve",
                    "--registry",
                    registry_dir,
                    "--port",
                    str(ports["app"]),
                    *common,
                ],
                ports["app"],
                "/health/ready",
            )
            for server in ports:  # warm-up: first requests pay for lazy imports and caches
                for endpoint in ("single", "batch"):
                    measure(ports[server], endpoint, args, duration=1.0)
            for r in range(args.rounds):
                # Rotate the order per round so drift in machine load hits every row alike.
                for name, server, endpoint, swaps in (
                    SCENARIOS[r % len(SCENARIOS) :] + SCENARIOS[: r % len(SCENARIOS)]
                ):
                    swaps_before = health(ports["app"])["swaps"]
                    cpu_before = cpu_seconds(servers[server].pid)
                    if swaps:
                        with Publisher(registry, blobs, schema) as publisher:
                            res = measure(ports[server], endpoint, args, args.duration)
                        res["published"] = publisher.published
                        # Let the last version land now, not in the next row's swap count.
                        wait_for_version(ports["app"], registry.current().number)
                    else:
                        res = measure(ports[server], endpoint, args, args.duration)
                    # Server CPU per answer: the service time, free of the queueing that latencies include.
                    res["server_cpu_us"] = (
                        (cpu_seconds(servers[server].pid) - cpu_before)
                        / (res["requests_per_s"] * args.duration)
                        * 1e6
                    )
                    res["swaps"] = health(ports["app"])["swaps"] - swaps_before if server == "app" else 0
                    rounds[name].append(res)
                    print(
                        f"  round {r + 1}: {name:<20} {res['requests_per_s']:>7,.0f} req/s  "
                        f"p50 {res['p50_ms']:6.2f} ms  p99 {res['p99_ms']:6.2f} ms  "
                        f"server {res['server_cpu_us']:5,.0f} us/req  failed {res['failed']}  "
                        f"regressions {res['regressions']}  swaps {res['swaps']}",
                        flush=True,
                    )
        finally:
            for proc in servers.values():
                proc.terminate()
            for proc in servers.values():
                proc.wait(30)
    return rounds


def report(rounds: dict[str, list[dict]], args: argparse.Namespace) -> dict[str, dict]:
    """Print the markdown table (medians over rounds) and return the same figures."""
    summary = {}
    print()
    print(
        "| scenario           |   req/s | req/s / floor |  rows/s | p50 ms | p99 ms | p99 / floor p99 "
        "| server CPU us/req | failed | version regressions | swaps served | target: p99 < 5 ms, >= 0.8x req/s |"
    )
    print(
        "|--------------------|--------:|--------------:|--------:|-------:|-------:|----------------:"
        "|------------------:|-------:|--------------------:|-------------:|:---------------------------------:|"
    )
    for name, server, endpoint, swaps in SCENARIOS:
        res, floor = rounds[name], rounds[f"floor {endpoint}"]
        rps, p50, p99, cpu = (
            statistics.median(x[k] for x in res)
            for k in ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_us")
        )
        # Ratios within a round (its rows share the machine's state), then the median over rounds.
        ratio = statistics.median(x["p99_ms"] / f["p99_ms"] for x, f in zip(res, floor))
        rps_ratio = statistics.median(x["requests_per_s"] / f["requests_per_s"] for x, f in zip(res, floor))
        failed, regressions, swapped = (sum(x[k] for x in res) for k in ("failed", "regressions", "swaps"))
        verdict = "-"
        if server == "app" and endpoint == "single":
            missed = [
                why
                for why, bad in (
                    ("p99", p99 >= TARGET_P99_MS),
                    ("req/s", rps_ratio < TARGET_RPS_RATIO),
                    ("failed", failed),
                    ("regressions", regressions),
                    ("no swaps", swaps and not swapped),
                )
                if bad
            ]
            verdict = "MISS: " + ", ".join(missed) if missed else "PASS"
        rows = rps * (args.batch_rows if endpoint == "batch" else 1)
        summary[name] = {
            "requests_per_s": rps,
            "rows_per_s": rows,
            "p50_ms": p50,
            "p99_ms": p99,
            "p99_over_floor": ratio,
            "requests_per_s_over_floor": rps_ratio,
            "server_cpu_us": cpu,
            "failed": failed,
            "regressions": regressions,
            "swaps": swapped,
            "verdict": verdict,
            "rounds": res,
        }
        print(
            f"| {name:<18} | {rps:>7,.0f} | {rps_ratio:>13.2f} | {rows:>7,.0f} | {p50:>6.2f} | {p99:>6.2f} "
            f"| {ratio:>15.2f} | {cpu:>17,.0f} | {failed:>6} | {regressions:>19} "
            f"| {swapped if server == 'app' else '-':>12} | {verdict:^33} |"
        )
    print(
        f"(medians of {args.rounds} round(s) of {args.duration:g} s; ratios: medians of the per-round ratios; "
        "failed, regressions and swaps: totals over rounds)"
    )
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per row and round")
    parser.add_argument("--concurrency", type=int, default=8, help="client processes, one connection each")
    parser.add_argument("--batch-rows", type=int, default=64)
    parser.add_argument("--model", choices=("logistic", "mlp"), default="logistic")
    parser.add_argument("--n-features", type=int, default=10, help="with --rows numbers")
    parser.add_argument(
        "--rows",
        choices=("numbers", "named"),
        default="numbers",
        help="lists of numbers, or named fields (NAMED_SCHEMA, encoded by the app)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", metavar="PATH", help="also write the per-round results and medians here")
    args = parser.parse_args(argv)
    if args.rows == "named":
        args.n_features = len(NAMED_SCHEMA["fields"])  # one column each: no text fields
    print(
        f"{os.cpu_count()} cores shared by clients and servers; {args.concurrency} clients; model {args.model}, "
        f"{args.n_features} features ({args.rows}); batch {args.batch_rows} rows; {args.duration:g} s per row, "
        f"{args.rounds} round(s)",
        flush=True,
    )
    summary = report(run(args), args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "cores": os.cpu_count(), "results": summary}, f, indent=2)


if __name__ == "__main__":
    main()
