"""What a Hedge ensemble is made of: its members' specifications, checked, and the default set.

A member is a plain dict (so it goes into a state's config and through
``--model-option members=[...]`` as JSON): ``model`` (a zoo name), ``lr``,
and optionally ``steps`` (optimizer steps per micro-batch, default 1),
``optimizer`` (default ``adam``), ``minibatch_size`` and ``model_kwargs``.

The default set spans the plasticity a stream may need: a linear model and
small non-linear ones at fast and slow learning rates, so the ensemble has a
member that fits right after a drift and one that is precise once the concept
is stable. Hedge picks among them online (:mod:`learners.hedge.learner`).

>>> [m["model"] for m in DEFAULT_MEMBERS]
['logistic', 'mlp', 'mlp', 'mlp']
>>> check_members([{"model": "mlp", "lr": 0.01, "steps": 2}])[0]["steps"]
2
>>> check_members([{"model": "mlp"}])
Traceback (most recent call last):
...
stream.core.errors.ConfigError: hedge member 0 needs model and lr, e.g. {"model": "mlp", "lr": 0.01}; got {'model': 'mlp'}
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from stream.core.errors import ConfigError

__all__ = ["DEFAULT_MEMBERS", "MEMBER_KEYS", "check_members"]

#: The keys a member may have (``model`` and ``lr`` are required).
MEMBER_KEYS = ("model", "lr", "steps", "optimizer", "minibatch_size", "model_kwargs")

# Why these four: logistic at lr 0.05 is today's default (fast to start, robust on linear
# concepts); the (64, 64) MLP at lr 0.02 with 8 steps per batch is issue 18's best single
# configuration on non-linear streams, and the same MLP at lr 0.005 is the precise, slower
# variant; a one-layer MLP at lr 0.05 with 4 steps recovers fastest after a drift. Measured
# at 5k rows (docs/learners.md): the ensemble follows the best of them per stream.
DEFAULT_MEMBERS: tuple[dict, ...] = (
    {"model": "logistic", "lr": 0.05},
    {"model": "mlp", "lr": 0.02, "steps": 8, "model_kwargs": {"hidden": [64, 64]}},
    {"model": "mlp", "lr": 0.005, "steps": 8, "model_kwargs": {"hidden": [64, 64]}},
    {"model": "mlp", "lr": 0.05, "steps": 4, "model_kwargs": {"hidden": [32]}},
)


def check_members(members: Sequence[Mapping[str, Any]] | None) -> tuple[dict, ...]:
    """The members as normalised plain dicts (every key filled in); ``None`` means the default set.

    Raises
    ------
    ConfigError
        No member, a member that is not a mapping, lacks ``model``/``lr`` or has an unknown key.
    """
    if members is None:
        members = DEFAULT_MEMBERS
    if isinstance(members, (str, bytes, Mapping)) or not isinstance(members, Sequence) or not members:
        raise ConfigError(f"hedge members must be a non-empty list of member dicts, got {members!r}")
    out = []
    for i, m in enumerate(members):
        if not isinstance(m, Mapping):
            raise ConfigError(
                f'hedge member {i} must be a dict like {{"model": "mlp", "lr": 0.01}}, got {m!r}'
            )
        unknown = set(m) - set(MEMBER_KEYS)
        if unknown:
            raise ConfigError(
                f"hedge member {i} has unknown key(s) {sorted(unknown)}; a member takes {', '.join(MEMBER_KEYS)}"
            )
        if "model" not in m or "lr" not in m:
            raise ConfigError(
                f'hedge member {i} needs model and lr, e.g. {{"model": "mlp", "lr": 0.01}}; got {dict(m)!r}'
            )
        kwargs = m.get("model_kwargs")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise ConfigError(f"hedge member {i}: model_kwargs must be a dict, got {kwargs!r}")
        out.append(
            {
                "model": m["model"],
                "lr": m["lr"],
                "steps": m.get("steps", 1),
                "optimizer": m.get("optimizer", "adam"),
                "minibatch_size": m.get("minibatch_size"),
                "model_kwargs": dict(kwargs) if kwargs else {},
            }
        )
    return tuple(out)
