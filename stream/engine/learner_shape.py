"""The learner's shape follows the stream's: its input layout from the feature schema, its classes from the labels.

The codec learns both online (a schema inferred from the first poll, a label map
that grows); the engine builds the learner with them, and before each batch
grows its output when a new class has appeared since. A learner that cannot grow
(:class:`~learners.base.GrowsClasses` not offered) keeps its classes, and events
of a class beyond them are dead-lettered with the reason instead of stopping the
run.

Examples
--------
>>> from stream.codec.json_codec import CodecConfig, JsonCodec
>>> shape = LearnerShape(JsonCodec(CodecConfig(n_classes=None)))
>>> shape.builder_options()
{'n_classes': 2}
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from learners.base import GrowsClasses, Learner
from stream.codec.json_codec import JsonCodec
from stream.core.deadletter import DeadLetter, late_letters
from stream.core.records import MicroBatch

__all__ = ["LearnerShape"]


class LearnerShape:
    """Builds learners to the codec's schema and classes, and keeps them grown to the classes seen."""

    def __init__(self, codec: JsonCodec) -> None:
        self.codec = codec

    def builder_options(self) -> dict[str, Any]:
        """Keyword arguments for the learner builder beyond ``n_features`` (none for plain numeric rows)."""
        options: dict[str, Any] = {}
        schema = self.codec.schema
        if schema is not None:
            options["layout"] = schema.layout()
        if self.inferred_classes:
            options["n_classes"] = self.codec.n_classes
        return options

    @property
    def inferred_classes(self) -> bool:
        return self.codec.labels is not None and not self.codec.labels.fixed

    def build(self, builder: Callable[..., Learner], n_features: int, saved: Any = None) -> Learner:
        """A learner for ``n_features`` columns, with the classes of a ``saved`` learner state when it grew past them."""
        options = self.builder_options()
        config = saved.get("config") if isinstance(saved, dict) else None
        grown = config.get("n_classes") if isinstance(config, dict) else None
        if "n_classes" in options and isinstance(grown, int) and grown > options["n_classes"]:
            options["n_classes"] = grown
        return builder(n_features, **options)

    def fit(self, learner: Learner, batch: MicroBatch) -> tuple[MicroBatch, list[DeadLetter]]:
        """Grow ``learner`` to the classes seen; the batch less any events it cannot learn, and their letters."""
        if not self.inferred_classes or not len(batch):
            return batch, []
        have = int(getattr(learner, "n_classes", 0) or 0)
        need = int(self.codec.n_classes or 0)
        if need <= have:
            return batch, []
        if isinstance(learner, GrowsClasses):
            learner.grow_classes(need)
            return batch, []
        beyond = batch.y >= have
        if not beyond.any():
            return batch, []
        reason = (
            f"bad label: a new class (label index >= {have}) appeared, but this learner "
            f"({type(learner).__name__}) cannot grow its classes; pass --classes N"
        )
        letters = late_letters(batch.events.take(beyond), reason)
        kept = batch.events.take(np.flatnonzero(~beyond))
        return MicroBatch(kept, batch.seq, batch.window_start, batch.window_end), letters
