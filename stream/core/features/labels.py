"""Class labels as they come: learned online into indices, grown when a new class appears.

A stream's labels are integers (``0, 1, 7``), booleans or strings (``"fraud"``).
:class:`LabelMap` turns them into the class indices every learner uses and back
into the labels the API answers with:

- integers and booleans are their own index (``false``/``true`` are 0/1), and the
  number of classes grows to the largest seen + 1;
- strings get indices in order of first appearance.

A stream mixes the two kinds at its peril: a label of the other kind than the
first one is refused (a dead letter with the reason), as is a new class beyond
``max_classes``. The map is plain data: it goes into checkpoints and into every
published version (``classes`` in the version's schema), so the API answers with
the labels the stream used.

Examples
--------
>>> labels = LabelMap()
>>> [labels.index(v) for v in ["spam", "ham", "spam", "eggs"]]
[0, 1, 0, 2]
>>> labels.n_classes, labels.classes
(3, ['spam', 'ham', 'eggs'])
>>> LabelMap.from_dict(labels.to_dict()).label(2)
'eggs'
>>> numbers = LabelMap()
>>> [numbers.index(v) for v in [1, 0, 4, True]], numbers.n_classes
([1, 0, 4, 1], 5)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["LabelError", "LabelMap", "MAX_CLASSES"]

#: The most classes a map grows to unless told otherwise: a label stream with more is
#: almost certainly a regression target or an id sent as the label.
MAX_CLASSES = 1000


class LabelError(ValueError):
    """A label that cannot become a class index; the message is the dead-letter reason."""


class LabelMap:
    """Labels <-> class indices, learned online; see the module docstring.

    ``fixed``: the classes are declared (``--classes N`` or class names) and a
    label outside them is refused instead of growing the map.
    """

    def __init__(
        self, classes: Sequence[Any] | None = None, *, n_classes: int = 0, fixed: bool = False,
        max_classes: int = MAX_CLASSES,
    ) -> None:  # fmt: skip
        self._names: list[str] | None = [str(c) for c in classes] if classes is not None else None
        self._index = {name: i for i, name in enumerate(self._names)} if self._names is not None else {}
        self._n = len(self._names) if self._names is not None else int(n_classes)
        self.fixed = bool(fixed)
        self.max_classes = int(max_classes)

    @property
    def named(self) -> bool | None:
        """True for string labels, False for integer ones, None before the first label."""
        if self._names is not None:
            return True
        return False if self._n else None

    @property
    def n_classes(self) -> int:
        return self._n

    @property
    def classes(self) -> list[Any] | None:
        """String labels in index order; ``None`` for integer labels (the index is the label)."""
        return list(self._names) if self._names is not None else None

    def index(self, label: Any) -> int:
        """The class index of ``label``, growing the map when allowed; :class:`LabelError` otherwise."""
        if isinstance(label, str):
            return self._named_index(label)
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        if not isinstance(label, int):  # bool is an int: false/true are 0/1
            raise LabelError(f"bad label: class label must be an integer, boolean or string, got {label!r}")
        if self._names is not None:
            raise LabelError(
                f"bad label: {label!r} is a number, but this stream's classes are named {self._show()}"
            )
        if label < 0:
            raise LabelError(f"bad label: {label} is negative")
        if label >= self._n:
            self._grow(label + 1, label)
        return int(label)

    def label(self, index: int) -> Any:
        """The label of class ``index`` (what the API answers with)."""
        return self._names[index] if self._names is not None else int(index)

    def _named_index(self, label: str) -> int:
        found = self._index.get(label)
        if found is not None:
            return found
        if self._names is None:
            if self._n:
                raise LabelError(f"bad label: {label!r} is a string, but this stream's labels are integers")
            self._names = []
        self._grow(len(self._names) + 1, label)
        self._index[label] = len(self._names)
        self._names.append(label)
        return self._index[label]

    def _grow(self, n: int, label: Any) -> None:
        if self.fixed and self._names is None:
            raise LabelError(f"bad label: {label} is outside [0, {self._n})")
        if self.fixed:
            raise LabelError(
                f"bad label: {label!r} is not one of the {self._n} configured classes {self._show()}"
            )
        if n > self.max_classes:
            raise LabelError(
                f"bad label: {label!r} would make {n} classes, more than the limit of {self.max_classes} "
                "(is this a regression target, or an id sent as the label?)"
            )
        self._n = n

    def _show(self) -> str:
        if self._names is None:
            return f"0..{self._n - 1}"
        shown = self._names[:10]
        return repr(shown)[:-1] + (", ...]" if len(self._names) > 10 else "]")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n_classes": self._n, "fixed": self.fixed}
        if self._names is not None:
            out["classes"] = list(self._names)
        return out

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> LabelMap:
        return cls(doc.get("classes"), n_classes=int(doc.get("n_classes", 0)), fixed=bool(doc.get("fixed")))
