"""What an engine is made of, as typed configuration: one frozen value per concern, composed into :class:`EngineSpec`.

Every way of starting an engine -- ``streamlearn run``, ``demo``, each lane of
``replay`` -- describes it with an :class:`EngineSpec` and hands it to
:func:`stream.engine.builder.build_engine`. The concerns:

- :class:`SourceSpec`: where records come from (Kafka, or files and their label column);
- :class:`~stream.codec.json_codec.CodecConfig`: how records are decoded (task, classes, features, label);
- the window spec string (``count:1000``, parsed by :func:`~stream.window.spec.parse_window`);
- :class:`CheckpointSpec`: where checkpoints go and what to do with unreadable ones;
- the dead-letter target (``kafka``, ``file:PATH``, ``none``);
- :class:`~stream.engine.config.EngineConfig`: loop pacing, checkpoint cadence, when to stop;
- :class:`~learners.choice.LearnerChoice`, :class:`~drift.choice.DriftChoice`;
- :class:`~stream.engine.gate.GateConfig` and :class:`RegistrySpec`: the validation gate and its registry;
- :class:`IntakeSpec`: whether polling and decoding run on the learning thread or in a second process;
- :class:`~stream.engine.join.JoinConfig`: delayed labels from a labels topic, joined by id (``None``: records carry them).

Each value validates itself when it is made (a :class:`~stream.core.errors.ConfigError`
names the mistake), so a spec that exists is one the builder can build.
How command-line options, the environment and replay files map onto it:
docs/configuration.md.

Examples
--------
>>> spec = EngineSpec(source=SourceSpec(files=("rows.jsonl",)), window="count:100")
>>> spec.decode.task, spec.decode.y_field, spec.dead_letter, spec.gate is None
('classification', 'y', 'kafka', True)
>>> SourceSpec(bootstrap="k:9092", topics=("t",), partitions=("t:x",))
Traceback (most recent call last):
...
stream.core.errors.ConfigError: partition 't:x' must look like TOPIC:N, e.g. events:0
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, Mapping

from drift.choice import DriftChoice
from learners.choice import LearnerChoice
from stream.codec.json_codec import CodecConfig
from stream.codec.value_format import ValueFormat
from stream.core.errors import ConfigError
from stream.core.features import FeatureSchema
from stream.core.settings import KafkaSettings
from stream.engine.config import EngineConfig
from stream.engine.gate import GateConfig
from stream.engine.join import JoinConfig

__all__ = [
    "CheckpointSpec",
    "EngineSpec",
    "IntakeSpec",
    "RegistrySpec",
    "SourceSpec",
    "check_join",
    "check_label_column",
    "without_checkpoint_cadence",
]


def check_label_column(name: str, files: tuple[str, ...]) -> None:
    """``--label-column`` names a column of --file input, and not the features, id or event time.

    >>> check_label_column("label", ("a.csv",))
    >>> check_label_column("x", ("a.csv",))
    Traceback (most recent call last):
    ...
    stream.core.errors.ConfigError: --label-column 'x': name the label's own column; 'x', 'id' and 'ts' hold the features, the event id and the event time

    Raises
    ------
    ConfigError
        ``name`` is empty or one of ``x``, ``id``, ``ts``, or is set without ``--file``.
    """
    if not files:
        if name != "y":
            raise ConfigError("--label-column names a column of --file input; Kafka records carry 'y'")
        return
    if not name or name in ("x", "id", "ts"):
        raise ConfigError(
            f"--label-column {name!r}: name the label's own column; 'x', 'id' and 'ts' hold the "
            "features, the event id and the event time"
        )


@dataclass(frozen=True)
class SourceSpec:
    """Where records come from: Kafka topics (or explicit ``TOPIC:N`` partitions), or ``files``.

    ``kafka_options`` are the ``--kafka-option`` client options as given;
    ``kafka`` the environment's client settings (id, timeouts, security),
    which the builder merges under them.
    """

    bootstrap: str | None = None
    topics: tuple[str, ...] = ()
    partitions: tuple[str, ...] = ()
    group: str | None = None
    backend: Literal["kafka-python", "confluent"] = "kafka-python"
    kafka_options: Mapping[str, Any] = field(default_factory=dict)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    files: tuple[str, ...] = ()
    label_column: str = "y"

    def __post_init__(self) -> None:
        from stream.sources.base import parse_partitions

        parse_partitions(self.partitions)
        check_label_column(self.label_column, self.files)
        if self.backend not in ("kafka-python", "confluent"):
            raise ConfigError(f"backend {self.backend!r}: use kafka-python or confluent")

    @property
    def kafka_bootstrap(self) -> str | None:
        """The Kafka servers this spec reads from: ``None`` for files (a bootstrap from the environment is unused)."""
        return None if self.files else self.bootstrap


@dataclass(frozen=True)
class CheckpointSpec:
    """Where checkpoints go, how many are kept, and what happens when none can be read.

    The cadence (every N batches or T seconds) is the loop's: :class:`~stream.engine.config.EngineConfig`.
    The store checks the values when the builder opens it.
    """

    dir: str = ".streamlearn/checkpoints"
    keep: int = 3
    on_unreadable: Literal["refuse", "fresh"] = "refuse"


@dataclass(frozen=True)
class IntakeSpec:
    """Where polling and decoding run: ``inline`` (the learning thread) or ``process`` (a child process).

    ``prefetch``: with ``process``, polls in flight at most (see :mod:`stream.engine.intake_process`).

    >>> IntakeSpec(mode="thread")
    Traceback (most recent call last):
    ...
    stream.core.errors.ConfigError: --intake 'thread': use inline or process
    """

    mode: Literal["inline", "process"] = "inline"
    prefetch: int = 2

    def __post_init__(self) -> None:
        if self.mode not in ("inline", "process"):
            raise ConfigError(f"--intake {self.mode!r}: use inline or process")
        if self.prefetch < 1:
            raise ConfigError(f"the intake prefetch must be at least 1 poll, got {self.prefetch}")


@dataclass(frozen=True)
class RegistrySpec:
    """The registry the gate publishes to: a directory or a ``redis://`` URL (defaults as the registry's own)."""

    url: str
    namespace: str = "streamlearn"
    keep_states: int = 100


@dataclass(frozen=True)
class EngineSpec:
    """Everything :func:`~stream.engine.builder.build_engine` needs, one typed value per concern.

    ``decode`` defaults to the learner's task, classes and features with the
    source's label column and ``schema`` (named fields; ``None``: inferred when
    records have them). ``gate`` and ``registry`` together make the
    validation gate (either ``None``: no gate); ``drift`` ``None`` or
    ``DriftChoice(detectors=("none",))``: no drift policy.
    """

    source: SourceSpec
    window: str = "count:1000"
    learner: LearnerChoice = field(default_factory=LearnerChoice)
    schema: FeatureSchema | None = None
    value_format: ValueFormat | None = None
    decode: CodecConfig | None = None
    checkpoints: CheckpointSpec = field(default_factory=CheckpointSpec)
    dead_letter: str = "kafka"
    loop: EngineConfig = field(default_factory=EngineConfig)
    gate: GateConfig | None = None
    registry: RegistrySpec | None = None
    drift: DriftChoice | None = None
    intake: IntakeSpec = field(default_factory=IntakeSpec)
    join: JoinConfig | None = None

    def __post_init__(self) -> None:
        from stream.window.spec import parse_window

        if self.join is not None:
            check_join(self)
        if self.intake.mode == "process" and self.source.group:
            # Group rebalances would round-trip to this process mid-poll; not proven yet: refused.
            raise ConfigError(
                "--intake process reads explicit partitions only (--topic without --group, or --partition); "
                "drop --group or use --intake inline"
            )

        parse_window(self.window)  # a typo is reported before anything is opened
        if self.decode is None:
            learner = self.learner
            decode = CodecConfig(
                task=learner.task,
                n_classes=learner.n_classes,
                n_features=learner.n_features,
                y_field=self.source.label_column,
                schema=self.schema,
                value_format=self.value_format,
            )
            object.__setattr__(self, "decode", decode)


def check_join(spec: EngineSpec) -> None:
    """A join of delayed labels needs every partition of both topics, read here, as JSON records.

    Raises
    ------
    ConfigError
        Files, explicit partitions, a consumer group, ``--intake process``, a non-JSON format or an
        event-time window.
    """
    src = spec.source
    if src.files or src.partitions or not src.topics:
        raise ConfigError(
            "--labels-topic joins Kafka topics: name the features with --topic (not --file or --partition)"
        )
    if src.group:
        # A rebalance would move a partition away while its records wait in this daemon's join state.
        raise ConfigError("--labels-topic reads every partition of both topics itself: drop --group")
    if spec.intake.mode != "inline":
        raise ConfigError("--labels-topic joins on the learning thread: drop --intake process")
    if spec.value_format is not None and spec.value_format.record_format != "json":
        raise ConfigError("--labels-topic joins JSON records (prediction logs and labels): drop --format")
    if spec.window.strip().lower().startswith("event"):
        # Joined records come in label order with their predictions' times: out of order by up to the TTL.
        raise ConfigError(
            "--labels-topic joins records in the order labels arrive: use a count: or processing: --window"
        )
    if spec.join.labels_topic in src.topics:
        raise ConfigError(
            f"--labels-topic {spec.join.labels_topic!r} is also a --topic of features: name another"
        )


def without_checkpoint_cadence(loop: EngineConfig) -> EngineConfig:
    """``loop`` checkpointing only when the engine finishes (a backtest: mid-run checkpoints would only cost).

    >>> without_checkpoint_cadence(EngineConfig()).checkpoint_every_batches is None
    True
    """
    return replace(loop, checkpoint_every_batches=None, checkpoint_every_seconds=None)
