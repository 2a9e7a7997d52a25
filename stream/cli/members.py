"""``streamlearn run --members N``: the launcher's side (checks, torchrun) and each member's (its engine, its lines)."""

from __future__ import annotations

import os
import sys
import time

import click

from stream.cli.table import Option, Values

__all__ = ["MEMBER_OPTIONS", "run_members"]

MEMBER_OPTIONS = (
    Option(
        "--members",
        "members",
        type=click.IntRange(min=1),
        help="Learn ONE model with N member processes on this machine (torchrun; see docs/scale-out.md).",
    ),
    Option(
        "--nodes",
        "nodes",
        default="1",
        show_default=True,
        help="With --members: machines in the run, N or MIN:MAX (elastic); more than 1 needs --rdzv-endpoint.",
    ),
    Option("--rdzv-endpoint", "rdzv_endpoint", help="With --nodes: HOST:PORT every machine meets at."),
    Option("--rdzv-id", "rdzv_id", help="With --nodes: the run's id, the same on every machine."),
    Option(
        "--member-restarts",
        "member_restarts",
        type=click.IntRange(min=0),
        default=100,
        show_default=True,
        help="How many times the members are restarted together after one dies (each start resumes the last round).",
    ),
    Option(
        "--round-timeout",
        "round_timeout",
        type=click.FloatRange(min=1),
        default=120.0,
        show_default=True,
        help="Seconds a member waits for the others at a round before it gives up (then all restart).",
    ),
)


def run_members(opts: Values, spec, *, retrain):
    """Launch the members and wait for them (on the launcher: ``None``), or build this member's engine (under torchrun)."""
    from stream.cli.errors import fail, require_broker
    from stream.members.build import check_members
    from stream.members.launch import MemberLaunch, is_member, launch_members

    check_members(spec, retrain=retrain)
    if not is_member():
        plan = MemberLaunch(
            members=opts.members,
            nodes=opts.nodes,
            rdzv_endpoint=opts.rdzv_endpoint,
            rdzv_id=opts.rdzv_id,
            restarts=opts.member_restarts,
        )
        plan.torchrun_args()  # a bad --nodes / rendezvous is one line here, not torchrun's report
        require_broker(spec.source.bootstrap)
        code, mistake = launch_members(plan, sys.argv, spec.checkpoints.dir)
        if mistake:
            fail(mistake, code)
        if code:
            fail(f"the members stopped with exit code {code} (their errors are above)", code)
        return None
    return _member_engine(opts, spec)


def _member_engine(opts: Values, spec):
    from stream.engine.builder import EngineExtras
    from stream.engine.metrics_endpoint import progress_reporter
    from stream.members.build import build_member_engine

    rank = int(os.environ.get("RANK", "0"))
    started = time.monotonic()
    extras = EngineExtras(
        on_progress=progress_reporter(opts.quiet, opts.metrics_port if rank == 0 else None), quiet=opts.quiet
    )
    engine = build_member_engine(spec, extras=extras, timeout_s=opts.round_timeout)
    click.echo(
        f"[streamlearn] member {rank} of {engine.dist.world}: partitions "
        f"{', '.join(f'{tp.topic}:{tp.partition}' for tp in engine.member.partitions) or 'none'} "
        f"(joined in {time.monotonic() - started:.1f}s)",
        err=True,
    )
    return engine
