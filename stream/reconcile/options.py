"""The daemon's reconciler, built from its :class:`~stream.reconcile.reconciler.ReconcileConfig` and the engine's spec.

Reconciliation is off unless ``every_events``, ``every_seconds`` or
``on_drift`` is set (``--retrain-every-events``, ``--retrain-every-seconds``,
``--retrain-on-drift``): a daemon does not start torchrun process trees
nobody asked for. The options themselves are declared with the other CLI
options (:data:`stream.cli.options.RETRAIN`).

Examples
--------
>>> from stream.engine.spec import EngineSpec, SourceSpec
>>> build_reconciler(ReconcileConfig(), EngineSpec(source=SourceSpec(files=("a.csv",))), gate=None) is None
True
>>> build_reconciler(ReconcileConfig(on_drift=True), EngineSpec(source=SourceSpec(files=("a.csv",))), gate=None)
Traceback (most recent call last):
...
stream.core.errors.ConfigError: --retrain-* needs a Kafka source (--bootstrap and --topic): a retrain replays the topic
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from stream.core.errors import ConfigError
from stream.reconcile.reconciler import ReconcileConfig, Reconciler

if TYPE_CHECKING:
    from stream.engine.gate import ValidationGate
    from stream.engine.spec import EngineSpec

__all__ = ["build_reconciler"]


def build_reconciler(
    config: ReconcileConfig, spec: EngineSpec, gate: ValidationGate | None
) -> Reconciler | None:
    """The reconciler of an engine built from ``spec`` and publishing through ``gate``; ``None`` when off.

    Jobs go under the checkpoint directory (``<dir>/retrain``).

    Raises
    ------
    ConfigError
        Retrains asked for without Kafka topics, a registry or a torch model.
    """
    if not config.scheduled:
        return None
    from stream.reconcile.spec import RetrainSpec

    source, learner = spec.source, spec.learner
    if not source.kafka_bootstrap or not source.topics:
        raise ConfigError(
            "--retrain-* needs a Kafka source (--bootstrap and --topic): a retrain replays the topic"
        )
    if spec.join is not None:
        # The topic holds predictions without labels; the labels live in the join, which a retrain does not replay.
        raise ConfigError(
            "--retrain-* replays the topic, which holds no labels with --labels-topic: drop one of them"
        )
    if gate is None:
        raise ConfigError(
            "--retrain-* needs a model registry (not --registry none): candidates are published there"
        )
    if learner.kind != "torch":
        raise ConfigError(f"--retrain-* trains torch models; {learner.model!r} is a {learner.kind} model")
    registry = gate.registry
    job = RetrainSpec(
        bootstrap=source.kafka_bootstrap,
        topics=tuple(source.topics),
        learner=dataclasses.asdict(learner),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shards=config.shards,
        registry=_registry_url(registry),
        registry_namespace=getattr(registry, "namespace", "streamlearn"),
        # Only the command line's client options: security settings stay in the environment the jobs inherit.
        kafka=dict(source.kafka_options),
    )
    config = dataclasses.replace(config, job_root=os.path.join(spec.checkpoints.dir, "retrain"))
    return Reconciler(config, job, registry)


def _registry_url(registry) -> str:
    url = getattr(registry, "url", None)
    if url is None and getattr(registry, "root", None) is not None:
        url = os.path.abspath(registry.root)  # the job may run from another directory
    if not url:
        raise ConfigError(f"cannot tell the retrain process where the registry {registry!r} is")
    return str(url)
