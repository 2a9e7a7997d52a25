"""Scale-out (issue 22): ``streamlearn run`` alone vs ``--members 1, 2, 4`` on one topic, the round's cost vs H, in one run.

On the embedded broker (or ``--bootstrap``), one topic of synthetic events
(Hyperplane, 10 features, ``--partitions`` 8, the concept changing halfway)
is learned from the earliest offset with ``--until-idle``, each lane as an
operator would run it, with a fresh ``--checkpoint-dir``, registry and
``--ledger``:

- **single**: ``streamlearn run`` without ``--members`` (a consumer group);
- **members N** for N in ``--members`` (1, 2, 4): ``streamlearn run --members N``
  (torchrun, gloo; partition p goes to member p mod N), at the default
  ``--checkpoint-every-batches 20``;
- **H lanes**: 2 members at ``--checkpoint-every-batches`` H for every H in
  ``--every`` (5, 20, 80; H = 20 is the members-2 lane above, not run twice).

Figures per lane: **events learned**, rank 0's **prequential accuracy** (the
summary line: every member's counts after the last round), **learn s** = the
engine's own seconds (the summary line) less the ``--until-idle`` wait, so it
starts at the engine's start (restore, then the group join or the member's
partitions) and leaves out interpreter and torch import, torchrun and the
rendezvous, which **wall s** (process start to exit) keeps; **ev/s** =
events / learn s. The ledger of the newest checkpoint gives **exactly-once**:
every produced id learned once, none twice. **Scaling efficiency** = ev/s of N
members / (N x ev/s of 1 member); it is only judged where the machine has at
least 2N cores (a member needs a core, and the broker, the bench and torchrun's
agent share them), else it is printed and marked n/a.

The **round** itself: a micro-benchmark spawns 2 processes (gloo on
127.0.0.1) that time what every round does before rank 0 writes its checkpoint:
gather each member's :class:`~stream.members.sync.MemberState`, derive the
plan and :func:`~stream.members.sync.combine` (event-weighted averaging of the
default model, ``LearnerChoice().factory()(10)``, with its standardiser
moments); p50 / p90 of the slowest member. The shard gather and rank 0's
checkpoint write (which grows with ``--ledger``) are in the H lanes' ev/s, not
in this figure.

**River's** per-sample ``StandardScaler | LogisticRegression``
(:func:`bench.replay.river_rate`) runs over the same rows in generation order,
in memory; streamlearn reads the 8 partitions interleaved. Verdicts:
:data:`TARGETS`. Everything shares this machine's cores; read the ratios.

    python -m bench.scale                 # 200k events, ~6 min on 2 cores
    python -m bench.scale --quick         # 40k events, members 1 and 2, H 5 and 20
    python -m bench.scale --members 1,2 --every 10,40 --json scale.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

#: (key, target text) of each verdict row; per-lane rows are added with the lane's name.
TARGETS = {
    "accuracy": "accuracy of {lane} within {tol} of members 1",
    "single": "accuracy of members 1 within {tol} of the single daemon",
    "river": "accuracy of every lane >= river's per-sample - {river_tol}",
    "once": "{lane}: every event learned exactly once (ledger)",
    "efficiency": "scaling efficiency of {lane} >= {eff} (judged with >= 2N cores)",
}
ACCURACY_TOLERANCE, RIVER_TOLERANCE, MIN_EFFICIENCY = 0.02, 0.03, 0.7
_SUMMARY = re.compile(
    r"stopped \((?P<why>[^)]*)\): learned (?P<events>[\d,]+) events in (?P<batches>[\d,]+) batches, "
    r"prequential accuracy (?P<acc>[\d.]+|n/a),.* (?P<secs>[\d.]+)s$",
    re.M,
)


@dataclass
class Lane:
    """One ``streamlearn run`` of the topic and what it left behind."""

    name: str
    members: int | None  # None: the single daemon
    every: int  # --checkpoint-every-batches
    exit_code: int = 0
    events: int = 0
    accuracy: float = math.nan
    engine_s: float = math.nan  # the summary line's seconds
    learn_s: float = math.nan  # engine_s less the --until-idle wait
    wall_s: float = math.nan
    checkpoints: int = 0  # rank 0's checkpoint sequence number at the end: rounds that committed
    ledger_total: int = 0
    ledger_distinct: int = 0
    duplicated: int = 0
    log: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.learn_s if self.learn_s > 0 else math.nan


def parse_summary(text: str) -> dict | None:
    """The run's summary line: events learned, prequential accuracy, engine seconds (``None`` when missing).

    >>> parse_summary("[streamlearn] stopped (every member idle): learned 200,000 events in 204 batches, "
    ...               "prequential accuracy 0.924, dead letters 0, late 0, duplicate ids 0, 12.2s")
    {'why': 'every member idle', 'events': 200000, 'batches': 204, 'accuracy': 0.924, 'seconds': 12.2}
    >>> parse_summary("Traceback ...") is None
    True
    """
    m = _SUMMARY.search(text)
    if m is None:
        return None
    return {
        "why": m["why"],
        "events": int(m["events"].replace(",", "")),
        "batches": int(m["batches"].replace(",", "")),
        "accuracy": math.nan if m["acc"] == "n/a" else float(m["acc"]),
        "seconds": float(m["secs"]),
    }


def efficiency(rate_n: float, rate_1: float, members: int) -> float:
    """Scaling efficiency: N members' ev/s over N times one member's.

    >>> efficiency(30_000, 20_000, 2)
    0.75
    """
    return rate_n / (members * rate_1) if rate_1 > 0 else math.nan


def quantiles(values: list[float]) -> tuple[float, float]:
    """p50 and p90 of ``values`` (nearest rank).

    >>> quantiles([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    (5.0, 9.0)
    """
    s = sorted(values)
    if not s:
        return math.nan, math.nan
    at = lambda q: s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]  # noqa: E731
    return at(0.5), at(0.9)


# ----------------------------------------------------------------- the lanes
def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "stream.cli", *argv]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLEARN_")}
    # A lone consumer joins its group at once rather than after the default session timeout;
    # one thread per process, as the members get (two cores are shared by everyone).
    return env | {
        "STREAMLEARN_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "STREAMLEARN_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "OMP_NUM_THREADS": "1",
    }


def run_lane(lane: Lane, bootstrap: str, topic: str, work: Path, args) -> Lane:
    """Run one lane to its end (``--until-idle``), then read its summary line and its checkpoint's ledger."""
    from stream.engine.checkpoint import CheckpointStore
    from stream.engine.ledger import LearnLedger

    where = work / lane.name
    argv = _cli(
        "run", "--bootstrap", bootstrap, "--topic", topic, "--checkpoint-dir", str(where / "ckpt"),
        "--registry", str(where / "registry"), "--ledger", "--until-idle", f"{args.idle:g}",
        "--dead-letter", "none", "--checkpoint-every-batches", str(lane.every),
    )  # fmt: skip
    argv += ["--members", str(lane.members)] if lane.members else ["--group", f"{topic}-single"]
    started = time.perf_counter()
    done = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=args.lane_timeout)
    lane.wall_s, lane.exit_code = time.perf_counter() - started, done.returncode
    lane.log = str(where / "run.log")
    where.mkdir(parents=True, exist_ok=True)
    Path(lane.log).write_text(done.stdout + done.stderr)
    summary = parse_summary(done.stdout + done.stderr)
    if summary is not None:
        lane.events, lane.accuracy, lane.engine_s = summary["events"], summary["accuracy"], summary["seconds"]
        lane.learn_s = max(summary["seconds"] - args.idle, 1e-9)
    snap = CheckpointStore(where / "ckpt").latest() if (where / "ckpt").is_dir() else None
    if snap is not None:
        lane.checkpoints = snap.seq
        counters = snap.counters or {}
        if counters.get("predicted"):  # four decimals rather than the summary line's three
            lane.accuracy = counters["correct"] / counters["predicted"]
        if snap.ledger:
            ledger = LearnLedger.from_snapshot(snap.ledger)
            lane.ledger_total, lane.ledger_distinct = ledger.total, ledger.distinct
            lane.duplicated = len(ledger.duplicated())
    print(
        f"  {lane.name}: exit {lane.exit_code}, {lane.events:,} events, acc {lane.accuracy:.4f}, "
        f"learn {lane.learn_s:.1f}s, wall {lane.wall_s:.1f}s  ({lane.log})",
        flush=True,
    )
    return lane


# ------------------------------------------------------------ round micro-bench
def _round_worker(rank: int, world: int, port: int, rounds: int, out) -> None:
    """One member of the micro-benchmark: ``rounds`` timed rounds (gather, plan, combine) after a barrier each."""
    import torch
    import torch.distributed as dist

    from learners.choice import LearnerChoice
    from stream.members.sync import MemberState, RoundPlan, combine
    from stream.reconcile.distributed import DistContext

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    ctx = DistContext(rank, world, 0, "gloo", torch.device("cpu"))
    learner = LearnerChoice().factory()(10)
    start, times = None, []
    for i in range(rounds + 3):  # the first 3 warm gloo's connections up
        dist.barrier()  # time the round, not the members' skew before it
        began = time.perf_counter()
        state = MemberState(
            events=1000, total=1000 * i, has_learner=True, n_classes=2, schema="s", dirty=True
        )
        plan = RoundPlan.of(ctx.gather_objects(state))
        start = combine(ctx, learner, plan=plan, events=1000, start=start)
        times.append(time.perf_counter() - began)
    out.put((rank, times[3:]))
    dist.destroy_process_group()


def round_cost(rounds: int, world: int = 2) -> tuple[float, float]:
    """p50 / p90 ms of a round's collectives and averaging over ``world`` spawned processes (slowest member)."""
    import socket

    import torch.multiprocessing as mp

    from bench.scale import _round_worker  # by module name: the spawned children import it from there

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_round_worker, args=(world, port, rounds, out), nprocs=world, join=True)
    per_rank = dict(out.get() for _ in range(world))
    slowest = [max(ts) * 1000 for ts in zip(*per_rank.values())]
    return quantiles(slowest)


# ------------------------------------------------------------------ verdicts
def verdicts(lanes: dict[str, Lane], river_acc: float, n: int, cores: int) -> list[tuple[str, str, str]]:
    """(target, measured, PASS / MISS / n/a) rows.

    >>> one = Lane("members 1", 1, 20, events=10, accuracy=0.92, learn_s=1.0, ledger_total=10, ledger_distinct=10)
    >>> two = Lane("members 2", 2, 20, events=10, accuracy=0.91, learn_s=0.8, ledger_total=10, ledger_distinct=10)
    >>> for row in verdicts({"members 1": one, "members 2": two}, 0.93, 10, cores=2):
    ...     print(" | ".join(row))
    accuracy of members 2 within 0.02 of members 1 | 0.9100 vs 0.9200 (-0.0100) | PASS
    accuracy of every lane >= river's per-sample - 0.03 | lowest 0.9100 (members 2) vs 0.9300 (-0.0200) | PASS
    members 1: every event learned exactly once (ledger) | 10 learned, 10 distinct of 10, 0 twice | PASS
    members 2: every event learned exactly once (ledger) | 10 learned, 10 distinct of 10, 0 twice | PASS
    scaling efficiency of members 2 >= 0.7 (judged with >= 2N cores) | 0.62 (x1.25 of members 1) | n/a (2 cores)
    """
    rows, fmt = [], {"tol": ACCURACY_TOLERANCE, "river_tol": RIVER_TOLERANCE, "eff": MIN_EFFICIENCY}
    one, single = lanes.get("members 1"), lanes.get("single")
    members = [lane for lane in lanes.values() if lane.members and not lane.name.startswith("H=")]
    if one and single:
        gap = one.accuracy - single.accuracy
        rows.append((TARGETS["single"].format(**fmt), f"{one.accuracy:.4f} vs {single.accuracy:.4f} ({gap:+.4f})",
                     _pass(abs(gap) <= ACCURACY_TOLERANCE)))  # fmt: skip
    for lane in members:
        if one and lane is not one:
            gap = lane.accuracy - one.accuracy
            rows.append((TARGETS["accuracy"].format(lane=lane.name, **fmt),
                         f"{lane.accuracy:.4f} vs {one.accuracy:.4f} ({gap:+.4f})", _pass(abs(gap) <= ACCURACY_TOLERANCE)))  # fmt: skip
    worst = min(lanes.values(), key=lambda lane: -1.0 if math.isnan(lane.accuracy) else lane.accuracy)
    rows.append((TARGETS["river"].format(**fmt),
                 f"lowest {worst.accuracy:.4f} ({worst.name}) vs {river_acc:.4f} ({worst.accuracy - river_acc:+.4f})",
                 _pass(worst.accuracy >= river_acc - RIVER_TOLERANCE)))  # fmt: skip
    for lane in lanes.values():
        once = lane.exit_code == 0 and lane.ledger_total == lane.ledger_distinct == n and not lane.duplicated
        rows.append((TARGETS["once"].format(lane=lane.name), f"{lane.ledger_total:,} learned, "
                     f"{lane.ledger_distinct:,} distinct of {n:,}, {lane.duplicated:,} twice", _pass(once)))  # fmt: skip
    for lane in members:
        if one and lane is not one:
            eff = efficiency(lane.rate, one.rate, lane.members)
            judged = cores >= 2 * lane.members
            rows.append((TARGETS["efficiency"].format(lane=lane.name, **fmt),
                         f"{eff:.2f} (x{lane.rate / one.rate:.2f} of members 1)",
                         _pass(eff >= MIN_EFFICIENCY) if judged else f"n/a ({cores} cores)"))  # fmt: skip
    return rows


def _pass(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(
    lanes: dict[str, Lane], every: list[int], river: tuple[float, float], rounds: tuple, args, cores: int
):
    """Prints the lane table, the H table and the verdict table; returns the verdict rows."""
    single, one = lanes.get("single"), lanes.get("members 1")
    base = single or one
    print(f"\nbench.scale: {args.events:,} Hyperplane events, {args.partitions} partitions, concept change at "
          f"{args.events // 2:,}; --until-idle {args.idle:g}; {cores} cores\n")  # fmt: skip
    print("| lane | H | events | accuracy | learn s | ev/s | x single | wall s | ev/s of wall | checkpoints | ledger distinct / twice |")  # fmt: skip
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for lane in lanes.values():
        if lane.name.startswith("H="):
            continue
        print(f"| {lane.name} | {lane.every} | {lane.events:,} | {lane.accuracy:.4f} | {lane.learn_s:.1f} | "
              f"{lane.rate:,.0f} | {lane.rate / base.rate:.2f} | {lane.wall_s:.1f} | {lane.events / lane.wall_s:,.0f} | "
              f"{lane.checkpoints} | {lane.ledger_distinct:,} / {lane.duplicated:,} |")  # fmt: skip
    print(f"| river LogisticRegression, per sample, in memory | - | {args.events:,} | {river[1]:.4f} | - | "
          f"{river[0]:,.0f} | {river[0] / base.rate:.2f} | - | - | - | - |")  # fmt: skip
    h_lanes = [_h_lane(lanes, h) for h in every]
    ref = lanes.get("members 2")
    print("\n| 2 members, --checkpoint-every-batches H | ev/s | x H=20 | accuracy | checkpoints | learn s |")
    print("|--:|--:|--:|--:|--:|--:|")
    for h, lane in zip(every, h_lanes):
        if lane is not None:
            ratio = lane.rate / ref.rate if ref else math.nan
            print(f"| {h} | {lane.rate:,.0f} | {ratio:.2f} | {lane.accuracy:.4f} | {lane.checkpoints} | {lane.learn_s:.1f} |")  # fmt: skip
    print(f"| round alone (2 processes, gloo: gather + plan + combine of the default model), {args.rounds} rounds "
          f"| p50 {rounds[0]:.2f} ms | p90 {rounds[1]:.2f} ms | | | |")  # fmt: skip
    cores_note = (
        f"this machine has {cores} cores shared by the broker, torchrun's agent, the members and the bench: "
        "more members than cores / 2 cannot be faster here, and members 4 is not expected to be"
        if cores < 2 * max((lane.members or 1) for lane in lanes.values())
        else f"{cores} cores"
    )
    print(f"\n{cores_note}. Scaling efficiency is a figure below, judged only with >= 2N cores.")
    rows = verdicts({k: v for k, v in lanes.items() if not k.startswith("H=")}, river[1], args.events, cores)
    rows += [row for lane in lanes.values() if lane.name.startswith("H=")
             for row in verdicts({lane.name: lane}, -math.inf, args.events, cores) if "exactly once" in row[0]]  # fmt: skip
    print("\n| target | measured | verdict |\n|---|---|---|")
    for target, measured, verdict in rows:
        print(f"| {target} | {measured} | {verdict} |")
    return rows


def _h_lane(lanes: dict[str, Lane], h: int) -> Lane | None:
    return lanes.get(f"H={h}") or (lanes.get("members 2") if h == 20 else None)


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> bool:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", help="existing broker (default: start the embedded tansu broker)")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--members", default="1,2,4", help="member counts, comma-separated")
    parser.add_argument(
        "--every", default="5,20,80", help="H values for 2 members (--checkpoint-every-batches)"
    )
    parser.add_argument("--idle", type=float, default=3.0, help="--until-idle seconds of every lane")
    parser.add_argument("--rounds", type=int, default=200, help="rounds of the micro-benchmark")
    parser.add_argument("--lane-timeout", type=float, default=600.0, help="seconds before a lane is given up")
    parser.add_argument("--json", help="also write the figures here (always written under the work folder)")
    parser.add_argument(
        "--quick", action="store_true", help="40k events, members 1 and 2, H 5 and 20, 50 rounds"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.members, args.every, args.rounds = 40_000, "1,2", "5,20", 50
    counts = sorted({int(m) for m in args.members.split(",")})
    every = sorted({int(h) for h in args.every.split(",")})
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    from bench.replay import river_rate
    from stream.sources.produce import SyntheticStream, produce, synthetic_rows

    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    stream = dict(generator="hyperplane", seed=7, drift_at=args.events // 2)
    broker, bootstrap = None, args.bootstrap
    if bootstrap is None:
        from stream.sources.embedded_broker import EmbeddedBroker

        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap
    lanes: dict[str, Lane] = {}
    try:
        topic = f"bench-scale-{uuid.uuid4().hex[:6]}"
        print(
            f"broker {bootstrap}; topic {topic}; work {work}; producing {args.events:,} events...", flush=True
        )
        produce(bootstrap, topic, SyntheticStream(n=args.events, **stream), partitions=args.partitions)
        plan = [Lane("single", None, 20)] + [Lane(f"members {m}", m, 20) for m in counts]
        plan += [Lane(f"H={h}", 2, h) for h in every if h != 20 or 2 not in counts]
        for lane in plan:
            lanes[lane.name] = run_lane(lane, bootstrap, topic, work, args)
    finally:
        if broker is not None:
            broker.stop()
    print("river and the round micro-benchmark...", flush=True)
    river = river_rate(list(synthetic_rows(n=args.events, **stream)))
    rounds = round_cost(args.rounds)
    rows = report(lanes, every, river, rounds, args, cores)
    figures = {
        "args": vars(args), "cores": cores, "lanes": [asdict(lane) | {"rate": lane.rate} for lane in lanes.values()],
        "river": {"rate": river[0], "accuracy": river[1]}, "round_ms": {"p50": rounds[0], "p90": rounds[1]},
        "verdicts": [dict(zip(("target", "measured", "verdict"), r)) for r in rows],
    }  # fmt: skip
    for path in filter(None, (work / "scale.json", args.json)):
        Path(path).write_text(json.dumps(figures, indent=2, default=str))
    print(
        f"\nfigures: {work / 'scale.json'}{f' and {args.json}' if args.json else ''}; lane logs under {work}"
    )
    return all(r[2] != "MISS" for r in rows)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
