"""A member of ``run --members``: its checks, its place in the process group and its engine.

:func:`check_members` refuses what one model learned by several members
cannot do, before any process starts; :func:`build_member_engine` joins the
process group torchrun set up, takes the member's partitions and builds its
:class:`~stream.members.engine.MemberEngine` through the one engine builder.
Rank 0 gets the gate, the registry and the drift policy; the others learn only.
"""

from __future__ import annotations

import functools
import os
from dataclasses import replace

from stream.core.errors import ConfigError
from stream.engine.builder import EngineExtras, build_engine, open_gate
from stream.engine.spec import EngineSpec
from stream.members.assign import IdleSource, agreed_partitions, list_partitions, member_partitions
from stream.members.engine import MemberEngine, MemberRole, members_reachable
from stream.members.launch import stop_requested
from stream.reconcile.distributed import DistContext

__all__ = ["build_member_engine", "check_members"]


def check_members(spec: EngineSpec, *, retrain: object = None) -> None:
    """Raise :class:`ConfigError` for what ``--members`` cannot do (one line each)."""
    src = spec.source
    if src.files or not src.topics:
        raise ConfigError("--members splits Kafka topics between members: name them with --topic, not --file")
    if src.partitions or src.group:
        raise ConfigError("--members assigns the partitions itself (p mod N): drop --partition and --group")
    if spec.join is not None:
        raise ConfigError("--members does not join delayed labels yet: drop --labels-topic or --members")
    if retrain is not None and getattr(retrain, "scheduled", True):
        raise ConfigError("--members does not run full retrains yet: drop --retrain-* or --members")
    if spec.intake.mode != "inline":
        raise ConfigError("--members decodes on each member's learning thread: drop --intake process")
    if spec.window.strip().lower().startswith("event"):
        raise ConfigError(
            "--members ends every round with its window's residue: use a count: or processing: --window"
        )
    if spec.loop.checkpoint_every_batches is None and spec.loop.checkpoint_every_seconds is None:
        raise ConfigError(
            "--members meet at every checkpoint: set --checkpoint-every-batches or --checkpoint-every-seconds"
        )
    if spec.learner.kind != "torch":
        raise ConfigError(
            f"--members averages torch models; --model {spec.learner.model} ({spec.learner.kind}) cannot be "
            "averaged: use a torch model (mlp, logistic, resmlp)"
        )


def build_member_engine(spec: EngineSpec, *, extras: EngineExtras, timeout_s: float) -> MemberEngine:
    """This member's engine: joins the process group, takes its partitions (rank 0 also the gate)."""
    device = "cpu" if spec.learner.device == "cpu" else "auto"
    with members_reachable(int(os.environ.get("RANK", "0"))):
        dist = DistContext.from_env(device=device, timeout_s=timeout_s)
    src = spec.source
    everything = agreed_partitions(
        dist,
        lambda: list_partitions(src.bootstrap, src.topics, src.kafka.client_options()),
        guard=members_reachable(dist.rank),
    )
    mine = member_partitions(everything, rank=dist.rank, world=dist.world)
    role = MemberRole(
        dist,
        mine,
        until_idle=spec.loop.until_idle_seconds,
        max_events=spec.loop.max_events,
        stop_note=functools.partial(stop_requested, spec.checkpoints.dir),
        gated=spec.gate is not None and spec.registry is not None,
    )
    # The members stop together, after a round that says so: never on their own.
    loop = replace(spec.loop, until_idle_seconds=None, max_events=None)
    member_spec = replace(
        spec, loop=loop, source=replace(src, partitions=tuple(f"{tp.topic}:{tp.partition}" for tp in mine))
    )
    if dist.rank != 0:
        # Its own directory only for its dead-letter spool; rank 0 writes every round's checkpoint.
        own_dir = os.path.join(spec.checkpoints.dir, "members", f"rank-{dist.rank}")
        member_spec = replace(
            member_spec,
            gate=None,
            registry=None,
            drift=None,
            checkpoints=replace(spec.checkpoints, dir=own_dir),
        )
        extras = replace(extras, on_progress=lambda stats: None)
    if not mine:
        extras = replace(extras, source=IdleSource())
    gate = open_gate(member_spec) if dist.rank == 0 else None
    engine_extras = replace(extras, make_engine=lambda **args: MemberEngine(member=role, **args))
    return build_engine(member_spec, gate=gate, extras=engine_extras)
