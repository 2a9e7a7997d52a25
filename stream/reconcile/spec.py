"""What one full retrain does: the data range, the learner, the training recipe, where the candidate goes.

A :class:`RetrainSpec` is plain data written as JSON next to the job, so the
torchrun workers (:mod:`stream.reconcile.worker`), the ``streamlearn retrain``
command and the daemon's reconciler all read one description, and a job can
be re-run exactly from its ``spec.json``.

Examples
--------
>>> spec = RetrainSpec(bootstrap="127.0.0.1:9092", topics=("clicks",), start="earliest",
...                    end="clicks:0:5000,clicks:1:5000", registry="/tmp/reg")
>>> RetrainSpec.from_json(spec.to_json()) == spec
True
>>> RetrainSpec(bootstrap="b", topics=("t",), epochs=0)
Traceback (most recent call last):
...
stream.core.errors.ConfigError: retrain epochs must be at least 1, got 0
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from stream.core.errors import ConfigError

__all__ = ["RetrainSpec"]


@dataclass(frozen=True)
class RetrainSpec:
    """One retrain job (see the module docstring).

    ``start``/``end``: ``--from``/``--to`` specs (:mod:`stream.sources.bounds`);
    rank 0 resolves them once and every rank uses its answer. ``learner``:
    the learner options of ``streamlearn run``
    (:class:`~learners.choice.LearnerChoice` fields, task and seed
    included: the seed fixes the initial weights and the shuffling); only
    torch models retrain. ``batch_size`` is the *global* minibatch, split evenly over the
    ``shards``; ``lr`` ``None`` means the learner's. ``registry`` ``None``:
    nothing is published (the state is written to ``out_dir`` only).
    ``record_ids``: list the learned event ids in the result (the daemon's
    exactly-once ledger needs them).
    """

    bootstrap: str
    topics: tuple[str, ...]
    start: str = "earliest"
    end: str = "latest"
    learner: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 3
    batch_size: int = 256
    shards: int = 8
    lr: float | None = None
    registry: str | None = None
    registry_namespace: str = "streamlearn"
    out_dir: str | None = None
    record_ids: bool = False
    kafka: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""
    #: The daemon's codec state (feature schema, label map) at launch; empty: numeric rows.
    codec: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "topics", tuple(self.topics))
        object.__setattr__(self, "learner", dict(self.learner))
        object.__setattr__(self, "kafka", dict(self.kafka))
        if not self.bootstrap:
            raise ConfigError("a retrain reads Kafka: pass --bootstrap HOST:PORT")
        if not self.topics:
            raise ConfigError("a retrain needs at least one --topic")
        for name in ("epochs", "batch_size", "shards"):
            if getattr(self, name) < 1:
                raise ConfigError(f"retrain {name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size < self.shards:
            raise ConfigError(
                f"retrain batch_size ({self.batch_size}) must be at least the number of shards "
                f"({self.shards}): each step takes batch_size/shards rows of every shard"
            )
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"retrain lr must be positive, got {self.lr}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RetrainSpec:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"retrain spec has unknown keys {unknown}; known: {sorted(known)}")
        if isinstance(data.get("learner"), dict):
            # JSON has no tuples; LearnerChoice's repeatable options are tuples.
            data["learner"] = {k: tuple(v) if isinstance(v, list) else v for k, v in data["learner"].items()}
        return cls(**data)
