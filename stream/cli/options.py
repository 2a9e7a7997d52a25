"""Option groups shared by several commands: the learner, the registry and gate, drift handling.

Each group is a decorator that adds its click options and hands the command
one validated object (``learner``, ``drift``) or the plain values (registry).
"""

from __future__ import annotations

import functools
from typing import Callable

import click

from learners.choice import LearnerChoice
from stream.cli.errors import (
    require_registry,
    user_errors,
)

_LEARNER_FIELDS = (
    "model",
    "model_options",
    "optimizer",
    "lr",
    "steps_per_batch",
    "minibatch_size",
    "task",
    "n_classes",
    "n_features",
    "device",
    "seed",
    "torch_threads",
    "ewc_strength",
    "ewc_decay",
    "ewc_every",
    "replay",
    "replay_capacity",
    "replay_mix",
    "avalanche",
    "avalanche_options",
    "avalanche_plugins",
)


def learner_options(fn: Callable) -> Callable:
    """Options that choose and configure the learner (shared by run and demo).

    The command receives them as one ``learner`` argument, a validated
    :class:`~learners.choice.LearnerChoice`.
    """

    @functools.wraps(fn)
    def with_choice(*args, **kwargs):
        return fn(*args, learner=LearnerChoice(**{k: kwargs.pop(k) for k in _LEARNER_FIELDS}), **kwargs)

    decorators = [
        click.option(
            "--model",
            default="logistic",
            show_default=True,
            help="logistic | mlp | resmlp, or any river estimator by name, e.g. "
            "river.tree.HoeffdingAdaptiveTreeClassifier",
        ),
        click.option(
            "--model-option",
            "model_options",
            multiple=True,
            help="Model keyword KEY=VALUE (JSON value), e.g. hidden=[128,64], standardize=false, "
            "or a river estimator's parameter.",
        ),
        click.option("--optimizer", default="adam", show_default=True, help="adam | adamw | sgd"),
        click.option("--lr", type=float, default=0.05, show_default=True, help="Learning rate."),
        click.option(
            "--steps-per-batch",
            type=int,
            default=1,
            show_default=True,
            help="Passes over each micro-batch (Avalanche: train epochs).",
        ),
        click.option(
            "--minibatch-size",
            type=int,
            default=None,
            help="Split each micro-batch into shuffled chunks of N rows, one step each (more updates "
            "per event: better accuracy, lower throughput). Default: one step per micro-batch.",
        ),
        click.option(
            "--task",
            type=click.Choice(["classification", "regression"]),
            default="classification",
            show_default=True,
        ),
        click.option(
            "--classes",
            "n_classes",
            type=int,
            default=2,
            show_default=True,
            help="Number of classes (labels are 0..N-1).",
        ),
        click.option(
            "--n-features",
            type=int,
            default=None,
            help="Feature dimension; default: locked by the first valid record.",
        ),
        click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N"),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option(
            "--torch-threads",
            type=int,
            default=1,
            show_default=True,
            envvar="STREAMLEARN_TORCH_THREADS",
            help="CPU threads for torch ops. 1 suits small models: the Kafka client and decoding "
            "need the other cores, and oversubscribed torch threads stall.",
        ),
        click.option(
            "--ewc-strength",
            type=float,
            default=0.0,
            show_default=True,
            help="Online EWC penalty strength (0: off). Holds parameters that mattered for past data.",
        ),
        click.option(
            "--ewc-decay",
            type=float,
            default=0.9,
            show_default=True,
            help="Weight of the old Fisher information at each consolidation.",
        ),
        click.option(
            "--ewc-every",
            type=int,
            default=50,
            show_default=True,
            help="Consolidate every N batches (also at each validated version).",
        ),
        click.option(
            "--replay",
            type=click.Choice(["none", "reservoir", "balanced"]),
            default="none",
            show_default=True,
            help="Rehearsal buffer mixed into every update.",
        ),
        click.option(
            "--replay-capacity", type=int, default=2000, show_default=True, help="Buffer size in events."
        ),
        click.option(
            "--replay-mix",
            type=float,
            default=1.0,
            show_default=True,
            help="Replayed events per new event in each update.",
        ),
        click.option(
            "--avalanche",
            default=None,
            metavar="STRATEGY",
            help="Train --model with an Avalanche strategy instead (Naive, EWC, Replay, LwF, "
            "SynapticIntelligence, GEM, AGEM, ...); needs streamlearn[avalanche].",
        ),
        click.option(
            "--avalanche-option",
            "avalanche_options",
            multiple=True,
            help="Strategy keyword KEY=VALUE (JSON value), e.g. ewc_lambda=10 or mem_size=2000.",
        ),
        click.option(
            "--avalanche-plugin",
            "avalanche_plugins",
            multiple=True,
            help='An extra Avalanche plugin, NAME or NAME:{json kwargs}, e.g. LwFPlugin:{"alpha":0.5}.',
        ),
    ]
    fn_with_options = user_errors(with_choice)  # a bad choice is a one-line error too
    for deco in reversed(decorators):
        fn_with_options = deco(fn_with_options)
    return fn_with_options


def registry_options(fn: Callable) -> Callable:
    """Options that choose the model registry and the validation gate (shared by run and demo)."""
    decorators = [
        click.option(
            "--registry",
            default=None,
            help="Where versions are published: a directory, redis://HOST:6379/0 (rediss:// for TLS, "
            "password in the URL), or 'none' [env STREAMLEARN_REGISTRY_URL; default "
            ".streamlearn/registry].",
        ),
        click.option(
            "--registry-namespace",
            default=None,
            help="Redis key prefix [env STREAMLEARN_REGISTRY_NAMESPACE].",
        ),
        click.option(
            "--publish-every-batches",
            type=int,
            default=20,
            show_default=True,
            help="Publish a candidate version every N micro-batches ...",
        ),
        click.option(
            "--publish-every-seconds",
            type=float,
            default=2.0,
            show_default=True,
            help="... or every T seconds, whichever comes first.",
        ),
        click.option(
            "--validation-tolerance",
            type=float,
            default=0.01,
            show_default=True,
            help="A candidate is validated if its holdout metric is no worse than the validated "
            "version's by more than this (accuracy points, or RMSE).",
        ),
        click.option(
            "--holdout-min-events",
            type=int,
            default=100,
            show_default=True,
            help="Smallest newest-batch accepted as holdout evidence.",
        ),
    ]
    for deco in reversed(decorators):
        fn = deco(fn)
    return fn


def drift_options(fn: Callable) -> Callable:
    """Options of drift detection and the drift policy (shared by run and demo); one ``drift`` argument."""

    @functools.wraps(fn)
    def with_choice(*args, **kwargs):
        from drift.choice import DriftChoice

        choice = DriftChoice(
            detectors=tuple(kwargs.pop("drift_detectors")) or ("adwin",),
            feature_method=kwargs.pop("feature_drift"),
            feature_window=kwargs.pop("feature_drift_window"),
            options=tuple(kwargs.pop("drift_options")),
        )
        return fn(*args, drift=choice, **kwargs)

    decorators = [
        click.option(
            "--drift-detector",
            "drift_detectors",
            multiple=True,
            metavar="NAME",
            help="Error-stream drift detector: adwin (default), page_hinkley, ddm, eddm, kswin; repeatable; "
            "'none' turns drift handling off.",
        ),
        click.option(
            "--feature-drift",
            type=click.Choice(["none", "ks", "psi"]),
            default="none",
            show_default=True,
            help="Also watch each input feature against a reference window (KS tests with FDR control, "
            "or PSI).",
        ),
        click.option(
            "--feature-drift-window",
            type=int,
            default=1000,
            show_default=True,
            help="Events in the feature reference and recent windows.",
        ),
        click.option(
            "--drift-option",
            "drift_options",
            multiple=True,
            metavar="KEY=VALUE",
            help="Drift policy setting, e.g. warmup_batches=20, evidence_batches=3, rollback_margin=0.05, "
            "cooldown_batches=10, ewc_factor=0.1, replay_refresh=0.5 (see docs/drift.md).",
        ),
    ]
    fn_with_options = user_errors(with_choice)
    for deco in reversed(decorators):
        fn_with_options = deco(fn_with_options)
    return fn_with_options


def open_gate(registry, namespace, every_batches, every_seconds, tolerance, holdout_min_events):
    """The validation gate over the chosen registry, or None for ``--registry none``."""
    from serving.registry.factory import open_registry
    from serving.settings import RegistrySettings
    from stream.engine.gate import GateConfig, ValidationGate

    settings = RegistrySettings()
    target = registry or settings.url
    if target == "none":
        return None
    reg = open_registry(target, namespace=namespace or settings.namespace, keep_states=settings.keep_states)
    require_registry(reg)
    return ValidationGate(
        reg,
        GateConfig(
            every_batches=every_batches,
            every_seconds=every_seconds,
            tolerance=tolerance,
            holdout_min_events=holdout_min_events,
        ),
    )
