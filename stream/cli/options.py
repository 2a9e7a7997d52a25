"""The options several commands share, each declared once, and how their values become typed configuration.

Groups (tuples of :class:`~stream.cli.table.Option`) are listed by the
commands that take them, in ``--help`` order; a command words an option its
own way with ``.but(help=...)``. The ``*_from`` functions turn a command's
resolved :class:`~stream.cli.table.Values` into the typed values of
:mod:`stream.engine.spec`: :class:`~learners.choice.LearnerChoice`,
:class:`~drift.choice.DriftChoice`, :class:`~stream.engine.gate.GateConfig`,
:class:`~stream.engine.spec.RegistrySpec`,
:class:`~stream.reconcile.reconciler.ReconcileConfig`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from stream.cli.errors import require_registry
from stream.cli.table import Env, Option, Values

if TYPE_CHECKING:  # the parts are imported when a command runs: `--help` stays fast
    from drift.choice import DriftChoice
    from learners.choice import LearnerChoice
    from stream.engine.gate import GateConfig, ValidationGate
    from stream.engine.spec import EngineSpec, RegistrySpec, SourceSpec
    from stream.reconcile.reconciler import ReconcileConfig

# ------------------------------------------------------------------ Kafka and files
BOOTSTRAP = Option(
    "--bootstrap",
    "bootstrap",
    help="Kafka bootstrap servers [env STREAMLEARN_KAFKA_BOOTSTRAP].",
    env=Env("stream.core.settings.KafkaSettings", "bootstrap"),
)
#: The environment's Kafka client settings (client id, timeouts, security): no flag.
KAFKA_SETTINGS = Option(None, "kafka", env=Env("stream.core.settings.KafkaSettings"))
TOPICS = Option("--topic", "topics", multiple=True, help="Topic to learn from (repeatable).")
PARTITIONS = Option(
    "--partition",
    "partitions",
    multiple=True,
    help="Explicit TOPIC:N partition instead of group subscription (repeatable).",
)
KAFKA_OPTIONS = Option(
    "--kafka-option",
    "kafka_options",
    multiple=True,
    help="Extra client option KEY=VALUE (JSON value: 10, true; else a string).",
)
FILES = Option(
    "--file",
    "files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Learn from JSONL/CSV files instead of Kafka (repeatable).",
)
LABEL_COLUMN = Option(
    "--label-column",
    "label_column",
    default="y",
    show_default=True,
    help="With --file: the CSV column (or JSONL field) that holds the label.",
)
WINDOW = Option(
    "--window",
    "window",
    # Not count:1000,max=250ms: below 400 events/s its batches are smaller than the
    # gate's 100-event holdout, so a slow stream would never publish a version.
    default="count:1000",
    show_default=True,
    help="count:N[,max=DUR] | processing:5s | event:10s[,lateness=2s,idle=5s]. max: a partial count "
    "window closes once DUR old (bounds an event's wait when the stream is slow; pair it with a "
    "--holdout-min-events its batches reach).",
)
#: Backtests: the same default; there ``max=DUR`` closes a window by record time.
REPLAY_WINDOW = WINDOW.but(
    default="count:1000",
    help="count:N[,max=DUR] | event:10s[,lateness=2s] | processing:5s (processing time = record timestamps)",
)
INTAKE = (
    Option(
        "--intake",
        "intake",
        type=click.Choice(["inline", "process"]),
        help="Where the Kafka client polls and records are decoded: inline (on the learning thread) or "
        "process (a second process, overlapping with learning: worth it with a spare core; explicit "
        "partitions only; docs/running.md) [env STREAMLEARN_INTAKE_MODE; default inline].",
        env=Env("stream.core.settings.IntakeSettings", "mode"),
    ),
    Option(None, "intake_prefetch", env=Env("stream.core.settings.IntakeSettings", "prefetch")),
)
MAX_POLL_RECORDS = Option("--max-poll-records", "max_poll_records", type=int, default=5000, show_default=True)
QUIET = Option("--quiet", "quiet", is_flag=True, help="No progress lines.")
MAX_DEAD_LETTER_RATE = Option(
    "--max-dead-letter-rate",
    "max_dead_letter_rate",
    type=click.FloatRange(0.0, 1.0),
    metavar="RATE",
    help="Share of records that may go unlearned (undecodable or late; judged from 200 records on) "
    "before the run warns loudly (log, progress line, summary, /metrics); a bounded run "
    "(--until-idle, --max-events, --file, demo) then exits 1 at its end; 1: off "
    "[env STREAMLEARN_DEAD_LETTER_MAX_RATE; default 0.05].",
    env=Env("stream.core.settings.DeadLetterSettings", "max_rate"),
)
RANGE_FROM = Option(
    "--from",
    "range_from",
    default="earliest",
    show_default=True,
    help="Start (included): earliest, an offset, P:N[,P:N], ISO time, @EPOCH_MS, or relative (-2h).",
)
RANGE_TO = Option(
    "--to",
    "range_to",
    default="latest",
    show_default=True,
    help="End (excluded): latest (the end when the replay starts), or any --from form.",
)

# ------------------------------------------------------------------ checkpoints
CHECKPOINTS = (
    Option(
        "--checkpoint-dir",
        "checkpoint_dir",
        help="Checkpoint directory [env STREAMLEARN_CHECKPOINT_DIR].",
        env=Env("stream.core.settings.CheckpointSettings", "dir"),
    ),
    Option(
        "--checkpoint-every-batches",
        "checkpoint_every_batches",
        type=int,
        env=Env("stream.core.settings.CheckpointSettings", "every_batches"),
    ),
    Option(
        "--checkpoint-every-seconds",
        "checkpoint_every_seconds",
        type=float,
        env=Env("stream.core.settings.CheckpointSettings", "every_seconds"),
    ),
    Option(None, "checkpoint_keep", env=Env("stream.core.settings.CheckpointSettings", "keep")),
    Option(
        "--on-unreadable-checkpoint",
        "on_unreadable_checkpoint",
        type=click.Choice(["refuse", "fresh"]),
        default="refuse",
        show_default=True,
        help="When checkpoints exist but none can be read: refuse to start, or set them aside "
        "(*.unreadable) and learn from scratch.",
    ),
)

# ------------------------------------------------------------------ learner
LEARNER = (
    Option(
        "--model",
        "model",
        default="mlp",
        show_default=True,
        help="mlp | logistic | resmlp | hedge (a self-weighting ensemble, docs/learners.md), or any river estimator by name, e.g. "
        "river.tree.HoeffdingAdaptiveTreeClassifier",
    ),
    Option(
        "--model-option",
        "model_options",
        multiple=True,
        help="Model keyword KEY=VALUE (JSON value), e.g. hidden=[128,64], standardize=false, "
        "or a river estimator's parameter.",
    ),
    Option("--optimizer", "optimizer", default="adam", show_default=True, help="adam | adamw | sgd"),
    Option(
        "--lr",
        "lr",
        type=float,
        help="Learning rate. Default: the model's own, 0.01 for mlp and resmlp, 0.05 for logistic.",
    ),
    Option(
        "--steps-per-batch",
        "steps_per_batch",
        type=int,
        default=1,
        show_default=True,
        help="Passes over each micro-batch (Avalanche: train epochs).",
    ),
    Option(
        "--minibatch-size",
        "minibatch_size",
        type=int,
        help="Split each micro-batch into shuffled chunks of N rows, one step each (more updates "
        "per event: better accuracy, lower throughput). Default: one step per micro-batch.",
    ),
    Option(
        "--score-chunk",
        "score_chunk",
        type=int,
        help="Test-then-train inside each micro-batch, N rows at a time: each chunk is predicted by the "
        "model already updated on the chunks before it, then learned (fresher predictions and N-row "
        "updates; the window stays the unit of checkpoints). Torch models. Default: 32; 0: off (the "
        "whole micro-batch predicted, then learned).",
    ),
    Option(
        "--young-steps",
        "young_steps",
        type=int,
        default=4,
        show_default=True,
        help="Optimizer steps per update while the model is young: its first --young-events events, "
        "and as many again after each drift-policy adapt decision. Torch models.",
    ),
    Option(
        "--young-events",
        "young_events",
        type=int,
        default=1000,
        show_default=True,
        help="How long a model is young, in events (0: never).",
    ),
    Option(
        "--rehearse-steps",
        "rehearse_steps",
        type=int,
        default=8,
        show_default=True,
        help="Extra steps on samples of the latest batch (and the replay buffer) after each batch, "
        "taken only while the source is caught up; in replay after every batch (deterministic). "
        "Torch models. 0: off.",
    ),
    Option(
        "--task",
        "task",
        type=click.Choice(["classification", "regression"]),
        default="classification",
        show_default=True,
    ),
    Option(
        "--classes",
        "n_classes",
        type=int,
        help="Number of classes (labels are 0..N-1); a label outside is a dead letter. Default: "
        "inferred from the labels (integers, booleans or strings) and grown when a new class appears.",
    ),
    Option(
        "--n-features",
        "n_features",
        type=int,
        help="Feature dimension; default: locked by the first valid record.",
    ),
    Option("--device", "device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N"),
    Option("--seed", "seed", type=int, default=0, show_default=True),
    Option(
        "--torch-threads",
        "torch_threads",
        type=int,
        default=1,
        show_default=True,
        env=Env("stream.core.settings.TorchSettings", "threads"),
        help="CPU threads for torch ops. 1 suits small models: the Kafka client and decoding "
        "need the other cores, and oversubscribed torch threads stall.",
    ),
    Option(
        "--max-model-mb",
        "max_model_mb",
        type=float,
        default=1024.0,
        show_default=True,
        help="Memory budget of a torch model: parameters plus optimizer state (Adam: ~3x the "
        "parameters), checked before anything is allocated. Embedding tables dominate it: "
        "lower a field's buckets or dim in the feature schema rather than raising this.",
    ),
    Option(
        "--ewc-strength",
        "ewc_strength",
        type=float,
        default=0.0,
        show_default=True,
        help="Online EWC penalty strength (0: off). Holds parameters that mattered for past data.",
    ),
    Option(
        "--ewc-decay",
        "ewc_decay",
        type=float,
        default=0.9,
        show_default=True,
        help="Weight of the old Fisher information at each consolidation.",
    ),
    Option(
        "--ewc-every",
        "ewc_every",
        type=int,
        default=50,
        show_default=True,
        help="Consolidate every N batches (also at each validated version).",
    ),
    Option(
        "--replay",
        "replay",
        type=click.Choice(["none", "reservoir", "balanced"]),
        default="none",
        show_default=True,
        help="Rehearsal buffer mixed into every update.",
    ),
    Option(
        "--replay-capacity",
        "replay_capacity",
        type=int,
        default=2000,
        show_default=True,
        help="Buffer size in events.",
    ),
    Option(
        "--replay-mix",
        "replay_mix",
        type=float,
        default=1.0,
        show_default=True,
        help="Replayed events per new event in each update.",
    ),
    Option(
        "--avalanche",
        "avalanche",
        metavar="STRATEGY",
        help="Train --model with an Avalanche strategy instead (Naive, EWC, Replay, LwF, "
        "SynapticIntelligence, GEM, AGEM, ...); needs streamlearn[avalanche].",
    ),
    Option(
        "--avalanche-option",
        "avalanche_options",
        multiple=True,
        help="Strategy keyword KEY=VALUE (JSON value), e.g. ewc_lambda=10 or mem_size=2000.",
    ),
    Option(
        "--avalanche-plugin",
        "avalanche_plugins",
        multiple=True,
        help='An extra Avalanche plugin, NAME or NAME:{json kwargs}, e.g. LwFPlugin:{"alpha":0.5}.',
    ),
)

# ------------------------------------------------------------------ registry and gate
REGISTRY = Option(
    "--registry",
    "registry",
    help="Where versions are published: a directory, redis://HOST:6379/0 (rediss:// for TLS, "
    "password in the URL), or 'none' [env STREAMLEARN_REGISTRY_URL; default "
    ".streamlearn/registry].",
    env=Env("serving.settings.RegistrySettings", "url"),
)
REGISTRY_NAMESPACE = Option(
    "--registry-namespace",
    "registry_namespace",
    help="Redis key prefix [env STREAMLEARN_REGISTRY_NAMESPACE].",
    env=Env("serving.settings.RegistrySettings", "namespace"),
)
REGISTRY_KEEP_STATES = Option(
    None, "registry_keep_states", env=Env("serving.settings.RegistrySettings", "keep_states")
)
PUBLISH_EVERY_BATCHES = Option(
    "--publish-every-batches",
    "publish_every_batches",
    type=int,
    default=20,
    show_default=True,
    help="Publish a candidate version every N micro-batches ...",
)
VALIDATION_TOLERANCE = Option(
    "--validation-tolerance",
    "validation_tolerance",
    type=float,
    default=0.01,
    show_default=True,
    help="A candidate is validated if its holdout metric is no worse than the validated "
    "version's by more than this (accuracy points, or RMSE).",
)
HOLDOUT_MIN_EVENTS = Option(
    "--holdout-min-events",
    "holdout_min_events",
    type=int,
    default=100,
    show_default=True,
    help="Smallest newest-batch accepted as holdout evidence.",
)
#: The registry and the validation gate of run and demo.
REGISTRY_AND_GATE = (
    REGISTRY,
    REGISTRY_NAMESPACE,
    PUBLISH_EVERY_BATCHES,
    Option(
        "--publish-every-seconds",
        "publish_every_seconds",
        type=float,
        default=2.0,
        show_default=True,
        help="... or every T seconds, whichever comes first.",
    ),
    Option(
        "--publish-in-background/--publish-inline",
        "publish_background",
        default=True,
        show_default=True,
        help="Serialise and write versions to the registry on a worker thread that never blocks "
        "learning (a due point is skipped while a write is in flight), or on the learning thread.",
    ),
    VALIDATION_TOLERANCE,
    HOLDOUT_MIN_EVENTS,
    REGISTRY_KEEP_STATES,
)

# ------------------------------------------------------------------ drift
DRIFT = (
    Option(
        "--drift-detector",
        "drift_detectors",
        multiple=True,
        metavar="NAME",
        help="Error-stream drift detector: adwin (default), page_hinkley, ddm, eddm, kswin; repeatable; "
        "'none' turns drift handling off.",
    ),
    Option(
        "--feature-drift",
        "feature_drift",
        type=click.Choice(["none", "ks", "psi"]),
        default="none",
        show_default=True,
        help="Also watch each input feature against a reference window (KS tests with FDR control, or PSI).",
    ),
    Option(
        "--feature-drift-window",
        "feature_drift_window",
        type=int,
        default=1000,
        show_default=True,
        help="Events in the feature reference and recent windows.",
    ),
    Option(
        "--drift-option",
        "drift_options",
        multiple=True,
        metavar="KEY=VALUE",
        help="Drift policy setting, e.g. warmup_events=2000, evidence_batches=3, rollback_margin=0.05, "
        "cooldown_events=5000, plasticity_events=10000, ewc_factor=0.1, replay_refresh=0.5 "
        "(periods in events, not batches; see docs/drift.md).",
    ),
)

# ------------------------------------------------------------------ full retrains (run)
RETRAIN = (
    Option(
        "--retrain-every-events",
        "retrain_every_events",
        type=int,
        help="Run a distributed full retrain after every N learned events (reconciliation).",
    ),
    Option("--retrain-every-seconds", "retrain_every_seconds", type=float, help="... or every T seconds."),
    Option(
        "--retrain-on-drift",
        "retrain_on_drift",
        is_flag=True,
        help="... and whenever the drift policy asks for one (the world changed).",
    ),
    Option(
        "--retrain-from",
        "retrain_history",
        default="earliest",
        show_default=True,
        help="Start of every retrain's range (earliest, -7d, ...); it ends where the live model is.",
    ),
    Option(
        "--retrain-nproc",
        "retrain_nproc",
        type=int,
        default=1,
        show_default=True,
        help="torchrun processes per retrain (gloo on CPU, NCCL on CUDA).",
    ),
    Option("--retrain-epochs", "retrain_epochs", type=int, default=3, show_default=True),
    Option("--retrain-batch-size", "retrain_batch_size", type=int, default=256, show_default=True),
    Option("--retrain-shards", "retrain_shards", type=int, default=8, show_default=True),
    Option(
        "--retrain-holdout-events",
        "retrain_holdout_events",
        type=int,
        default=1000,
        show_default=True,
        help="Events on which the caught-up candidate and the live model are compared.",
    ),
    Option(
        "--retrain-tolerance",
        "retrain_tolerance",
        type=float,
        default=0.01,
        show_default=True,
        help="The candidate is adopted if no worse than the live model by more than this.",
    ),
    Option(
        "--retrain-timeout",
        "retrain_timeout_s",
        type=float,
        default=3600.0,
        show_default=True,
        help="Stop (and report) a retrain that runs longer than SECONDS.",
    ),
)


# ------------------------------------------------------------------ values -> typed configuration
def learner_from(opts: Values) -> LearnerChoice:
    """The validated learner choice of the :data:`LEARNER` options."""
    from learners.choice import LearnerChoice

    return LearnerChoice(**{opt.name: opts[opt.name] for opt in LEARNER})


def drift_from(opts: Values) -> DriftChoice:
    """The validated drift choice of the :data:`DRIFT` options (adwin unless a detector is named)."""
    from drift.choice import DriftChoice

    return DriftChoice(
        detectors=tuple(opts.drift_detectors) or ("adwin",),
        feature_method=opts.feature_drift,
        feature_window=opts.feature_drift_window,
        options=tuple(opts.drift_options),
    )


def gate_from(opts: Values) -> GateConfig:
    """The gate of the registry options; without ``--publish-every-seconds`` (replay) it is paced in batches
    only, and without ``--publish-in-background`` (replay) it writes versions on the learning thread."""
    from stream.engine.gate import GateConfig

    return GateConfig(
        every_batches=opts.publish_every_batches,
        every_seconds=opts.get("publish_every_seconds"),
        background=opts.get("publish_background", False),
        tolerance=opts.validation_tolerance,
        holdout_min_events=opts.holdout_min_events,
    )


def registry_from(opts: Values, url: str | None = None) -> RegistrySpec | None:
    """The registry ``url`` (default: ``--registry``) names with the namespace and retention; ``None`` for 'none'."""
    from stream.engine.spec import RegistrySpec

    url = url or opts.registry
    if url == "none":
        return None
    return RegistrySpec(url=url, namespace=opts.registry_namespace, keep_states=opts.registry_keep_states)


def reconcile_from(opts: Values) -> ReconcileConfig:
    """The reconciler's configuration of the :data:`RETRAIN` options (``job_root`` is set by the builder)."""
    from stream.reconcile.job import Launch
    from stream.reconcile.reconciler import ReconcileConfig

    return ReconcileConfig(
        every_events=opts.retrain_every_events,
        every_seconds=opts.retrain_every_seconds,
        on_drift=opts.retrain_on_drift,
        history=opts.retrain_history,
        launch=Launch(nproc=opts.retrain_nproc),
        epochs=opts.retrain_epochs,
        batch_size=opts.retrain_batch_size,
        shards=opts.retrain_shards,
        holdout_events=opts.retrain_holdout_events,
        tolerance=opts.retrain_tolerance,
        timeout_s=opts.retrain_timeout_s,
    )


def source_from(opts: Values, **overrides) -> SourceSpec:
    """Where ``run`` reads from, from the source options (``overrides``: a command's fixed values)."""
    from learners.choice import parse_options
    from stream.engine.spec import SourceSpec

    values = {
        "bootstrap": opts.bootstrap,
        "topics": tuple(opts.topics),
        "partitions": tuple(opts.get("partitions", ())),
        "group": opts.get("group"),
        "backend": opts.get("backend", "kafka-python"),
        "kafka_options": parse_options(opts.get("kafka_options", ()), "--kafka-option"),
        "kafka": opts.kafka,
        "files": tuple(opts.get("files", ())),
        "label_column": opts.get("label_column", "y"),
        **overrides,
    }
    return SourceSpec(**values)


def open_gate(spec: EngineSpec) -> ValidationGate | None:
    """The validation gate of ``spec``, its registry pinged (unreachable at start is a user error); ``None``: no gate."""
    from stream.engine.builder import open_gate as open_spec_gate

    gate = open_spec_gate(spec)
    if gate is not None:
        require_registry(gate.registry)
    return gate
