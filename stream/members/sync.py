"""What the members of a round say to one another, and how their learners become one model again.

At every round boundary each member first tells the others where it stands
(:class:`MemberState`: events learned this round, whether it wants to stop or
is idle, whether rank 0's drift policy or EWC changed the learner, the shape
of its learner and a fingerprint of its input schema). From the gathered
states every member derives the same :class:`RoundPlan` -- so every member
then runs the same collectives in the same order -- and :func:`combine`
makes the learners one model:

- a member without a learner yet (no event so far) adopts the first one that has;
- learners grow to the most classes any member has seen (integer labels are
  their own class index, so members agree on what a class is);
- when rank 0's drift policy changed its learner this round (a rollback or a
  reset), rank 0's model is everyone's: the others' work since the round
  started is discarded with the drifted state, as a single daemon's would be;
- otherwise the members average (:func:`learners.neural.round_average.average_round`:
  parameters weighted by the events each learned, standardiser moments exact);
- when rank 0's gate validated the last round's model, rank 0 anchors EWC on
  the combined model; when it consolidated (then, or by EWC's own cadence),
  its EWC anchors and Fisher go to every member.

Optimizer state and rehearsal buffers stay each member's own (LocalSGD).

Examples
--------
>>> states = [MemberState(events=40, total=100), MemberState(events=0, total=0, idle=True)]
>>> plan = RoundPlan.of(states)
>>> plan.events, plan.stop, plan.all_idle
(40, None, False)
>>> RoundPlan.of([MemberState(events=0, total=0, stop="received SIGTERM"), MemberState(events=3, total=0)]).stop
'member 0: received SIGTERM'
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Sequence

from learners.neural.round_average import average_round, standardizer_moments
from stream.core.errors import ConfigError
from stream.reconcile.distributed import DistContext

__all__ = ["MemberSchemaError", "MemberState", "RoundPlan", "combine", "reset_moments", "schema_fingerprint"]


class MemberSchemaError(ConfigError):
    """Members learned different input schemas: their models cannot be averaged."""


@dataclass(frozen=True)
class MemberState:
    """One member's word at a round boundary (small plain data, gathered by every member)."""

    events: int  # learned since the last round
    total: int  # events learned in all as this member counts them (rank 0: the whole model's)
    stop: str | None = None  # why this member wants the run to end (a signal, max events)
    idle: bool = False  # quiet for --until-idle with its lag known to be 0
    decided: bool = False  # rank 0: the drift policy changed the learner this round
    consolidated: bool = False  # rank 0: EWC anchored on a validated version this round
    has_learner: bool = False
    n_classes: int = 0
    schema: str = ""  # schema_fingerprint() of its codec
    dirty: bool = False  # read, learned or dead-lettered something since the last round
    validated: bool = False  # rank 0: its gate validated the last round's model on every member's holdout


@dataclass(frozen=True)
class RoundPlan:
    """What every member does in this round, derived identically by each from the gathered states."""

    events: int  # learned by all members since the last round
    stop: str | None  # why the run ends after this round (None: it goes on)
    all_idle: bool
    adopt_from: int | None  # the rank whose learner members without one take
    needs_learner: tuple[int, ...]
    n_classes: int
    decided: bool
    consolidated: bool
    anchor: bool  # rank 0 consolidates EWC on the combined model (a version was just validated)
    commit: bool  # some member has something to make durable: rank 0 writes the round's checkpoint

    @classmethod
    def of(cls, states: Sequence[MemberState], *, max_events: int | None = None) -> RoundPlan:
        events = sum(s.events for s in states)
        stops = [f"member {rank}: {s.stop}" for rank, s in enumerate(states) if s.stop]
        all_idle = all(s.idle for s in states)
        total = states[0].total + sum(s.events for s in states[1:])
        stop = stops[0] if stops else None
        if stop is None and all_idle:
            stop = "every member idle"
        if stop is None and max_events is not None and total >= max_events:
            stop = f"learned {total} >= max_events"
        with_learner = [rank for rank, s in enumerate(states) if s.has_learner]
        return cls(
            events=events,
            stop=stop,
            all_idle=all_idle,
            adopt_from=with_learner[0] if with_learner else None,
            needs_learner=tuple(r for r, s in enumerate(states) if not s.has_learner) if with_learner else (),
            n_classes=max(s.n_classes for s in states),
            decided=states[0].decided,
            consolidated=states[0].consolidated,
            anchor=states[0].validated,
            commit=any(s.dirty for s in states) or stop is not None,
        )


def schema_fingerprint(schema_info: dict) -> str:
    """A digest of what must be equal on every member for their models to mean the same thing.

    The feature layout and named classes count; the count of integer classes
    does not (members grow to the largest), nor do the unknown fields seen.

    >>> a = {"n_features": 3, "classes": None, "features": None, "n_classes": 2, "unknown_fields": {"x": 1}}
    >>> schema_fingerprint(a) == schema_fingerprint({**a, "n_classes": 5, "unknown_fields": {}})
    True
    """
    shape = {k: schema_info.get(k) for k in ("n_features", "classes", "features", "feature_names", "task")}
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_schemas(states: Sequence[MemberState]) -> None:
    """Raise :class:`MemberSchemaError` unless every member with a learner has the same schema."""
    seen = {s.schema for s in states if s.has_learner}
    if len(seen) > 1:
        raise MemberSchemaError(
            "the members learned different input schemas (string classes or categories met in a different "
            "order on each member's partitions), so their models cannot be averaged: declare the features "
            "with --schema, and send classes as integers 0..N-1 (--classes N) rather than names"
        )


def combine(ctx: DistContext, learner: Any, *, plan: RoundPlan, events: int, start: dict | None) -> dict:
    """Make this member's ``learner`` the round's one model (every member calls it alike); the new start moments.

    ``events``: what this member learned this round; ``start``: the
    standardiser moments the round started from (:func:`standardizer_moments`
    after the last :func:`combine`, ``None`` before the first).
    """
    module = learner.module
    if plan.n_classes > int(getattr(learner, "n_classes", 0) or 0):
        learner.grow_classes(plan.n_classes)
    if plan.decided:
        state = ctx.broadcast_object(_model_state(module) if ctx.rank == 0 else None)
        if ctx.rank != 0:
            module.load_state_dict(state)
    elif plan.events:  # a round where nobody learned (idle members meeting at empty polls) changes nothing
        average_round(module, events=events, start=start, all_reduce_sum=ctx.all_reduce_sum)
    if plan.anchor and ctx.rank == 0:
        from learners.base import Consolidating

        if isinstance(learner, Consolidating):
            learner.consolidate()  # anchored on the combined model, which holds the validated version's work
    if plan.consolidated or plan.anchor:
        from learners.neural.ewc import EWC

        ewcs = [p for p in learner.plugins if isinstance(p, EWC)]
        states = ctx.broadcast_object([_cpu(p.state_dict()) for p in ewcs] if ctx.rank == 0 else None)
        if ctx.rank != 0:
            device = learner.torch_device
            for plugin, state in zip(ewcs, states):
                plugin.load_state_dict(_on(state, device))
    return standardizer_moments(module)


def reset_moments(module, start: dict | None) -> None:
    """Set every standardiser of ``module`` to the moments ``start`` (zero where it has none).

    What a member that adopted another's learner does before :func:`combine`:
    it then adds nothing to the round's moments, as it learned nothing.
    """
    for name, sub in module.named_modules():
        if all(hasattr(sub, b) for b in ("count", "mean", "m2", "set_moments")):
            zero = tuple(t.new_zeros(t.shape) for t in (sub.count, sub.mean, sub.m2))
            sub.set_moments(*((start or {}).get(name) or zero))


def _model_state(module) -> dict:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _cpu(state: Any) -> Any:
    """``state`` with every tensor on the CPU: what one member sends another (they may use other GPUs)."""
    return _map_tensors(state, lambda t: t.detach().cpu())


def _on(state: Any, device) -> Any:
    return _map_tensors(state, lambda t: t.to(device))


def _map_tensors(state: Any, fn) -> Any:
    import torch

    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {k: _map_tensors(v, fn) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_map_tensors(v, fn) for v in state)
    return state
