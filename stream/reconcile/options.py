"""The ``--retrain-*`` options of ``streamlearn run``: when the daemon runs full retrains and how it judges them.

Reconciliation is off unless one of ``--retrain-every-events``,
``--retrain-every-seconds`` or ``--retrain-on-drift`` is given: a daemon does
not start torchrun process trees nobody asked for.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from typing import Callable

import click

from stream.core.errors import ConfigError

__all__ = ["RetrainChoice", "retrain_options"]


@dataclass(frozen=True)
class RetrainChoice:
    """Every ``--retrain-*`` option, as given."""

    every_events: int | None = None
    every_seconds: float | None = None
    on_drift: bool = False
    history: str = "earliest"
    nproc: int = 1
    epochs: int = 3
    batch_size: int = 256
    shards: int = 8
    holdout_events: int = 1000
    tolerance: float = 0.01
    timeout_s: float = 3600.0

    @property
    def enabled(self) -> bool:
        return self.every_events is not None or self.every_seconds is not None or self.on_drift

    def build(self, *, bootstrap: str | None, topics, learner, gate, kafka_extra: dict, checkpoint_dir: str):
        """The daemon's :class:`~stream.reconcile.reconciler.Reconciler`, or ``None`` when reconciliation is off.

        Raises
        ------
        ConfigError
            Retrains asked for without Kafka topics, a registry or a torch model.
        """
        if not self.enabled:
            return None
        from stream.reconcile.job import Launch
        from stream.reconcile.reconciler import ReconcileConfig, Reconciler
        from stream.reconcile.spec import RetrainSpec

        if not bootstrap or not topics:
            raise ConfigError(
                "--retrain-* needs a Kafka source (--bootstrap and --topic): a retrain replays the topic"
            )
        if gate is None:
            raise ConfigError(
                "--retrain-* needs a model registry (not --registry none): candidates are published there"
            )
        if learner.kind != "torch":
            raise ConfigError(f"--retrain-* trains torch models; {learner.model!r} is a {learner.kind} model")
        registry = gate.registry
        spec = RetrainSpec(
            bootstrap=bootstrap,
            topics=tuple(topics),
            learner=dataclasses.asdict(learner),
            epochs=self.epochs,
            batch_size=self.batch_size,
            shards=self.shards,
            registry=_registry_url(registry),
            registry_namespace=getattr(registry, "namespace", "streamlearn"),
            kafka=kafka_extra,
        )
        config = ReconcileConfig(
            every_events=self.every_events,
            every_seconds=self.every_seconds,
            on_drift=self.on_drift,
            history=self.history,
            launch=Launch(nproc=self.nproc),
            holdout_events=self.holdout_events,
            tolerance=self.tolerance,
            timeout_s=self.timeout_s,
            job_root=os.path.join(checkpoint_dir, "retrain"),
        )
        return Reconciler(config, spec, registry)


def _registry_url(registry) -> str:
    url = getattr(registry, "url", None)
    if url is None and getattr(registry, "root", None) is not None:
        url = os.path.abspath(registry.root)  # the job may run from another directory
    if not url:
        raise ConfigError(f"cannot tell the retrain process where the registry {registry!r} is")
    return str(url)


def retrain_options(fn: Callable) -> Callable:
    """Adds the ``--retrain-*`` options; the command receives them as one ``retrain`` argument."""

    @functools.wraps(fn)
    def with_choice(*args, **kwargs):
        choice = RetrainChoice(
            **{f.name: kwargs.pop(f"retrain_{f.name}") for f in dataclasses.fields(RetrainChoice)}
        )
        return fn(*args, retrain=choice, **kwargs)

    decorators = [
        click.option(
            "--retrain-every-events",
            "retrain_every_events",
            type=int,
            default=None,
            help="Run a distributed full retrain after every N learned events (reconciliation).",
        ),
        click.option(
            "--retrain-every-seconds",
            "retrain_every_seconds",
            type=float,
            default=None,
            help="... or every T seconds.",
        ),
        click.option(
            "--retrain-on-drift",
            "retrain_on_drift",
            is_flag=True,
            help="... and whenever the drift policy asks for one (the world changed).",
        ),
        click.option(
            "--retrain-from",
            "retrain_history",
            default="earliest",
            show_default=True,
            help="Start of every retrain's range (earliest, -7d, ...); it ends where the live model is.",
        ),
        click.option(
            "--retrain-nproc",
            "retrain_nproc",
            type=int,
            default=1,
            show_default=True,
            help="torchrun processes per retrain (gloo on CPU, NCCL on CUDA).",
        ),
        click.option("--retrain-epochs", "retrain_epochs", type=int, default=3, show_default=True),
        click.option("--retrain-batch-size", "retrain_batch_size", type=int, default=256, show_default=True),
        click.option("--retrain-shards", "retrain_shards", type=int, default=8, show_default=True),
        click.option(
            "--retrain-holdout-events",
            "retrain_holdout_events",
            type=int,
            default=1000,
            show_default=True,
            help="Events on which the caught-up candidate and the live model are compared.",
        ),
        click.option(
            "--retrain-tolerance",
            "retrain_tolerance",
            type=float,
            default=0.01,
            show_default=True,
            help="The candidate is adopted if no worse than the live model by more than this.",
        ),
        click.option(
            "--retrain-timeout",
            "retrain_timeout_s",
            type=float,
            default=3600.0,
            show_default=True,
            help="Stop (and report) a retrain that runs longer than SECONDS.",
        ),
    ]
    for deco in reversed(decorators):
        with_choice = deco(with_choice)
    return with_choice
