"""Count windows: a batch every ``size`` events, in arrival order.

Examples
--------
>>> CountWindow(size=1000)
CountWindow(size=1000)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from stream.core.records import Events, MicroBatch
from stream.window.base import BaseWindower, WindowOutput, positive_int, read_resume

__all__ = ["CountWindow", "CountWindower"]


@dataclass(frozen=True, slots=True)
class CountWindow:
    """Emit a batch every ``size`` events, in arrival order.

    Parameters
    ----------
    size : int
        Events per batch (>= 1). The last, partial batch stays pending until
        more events come or :meth:`CountWindower.flush` is called.

    Raises
    ------
    ConfigError
        If ``size`` is not a positive integer.

    Examples
    --------
    >>> from stream.core.records import Events
    >>> windower = CountWindow(size=2).build()
    >>> out = windower.add(Events.empty(n_features=1))
    >>> out.batches, windower.pending()
    ([], None)
    """

    kind: ClassVar[str] = "count"
    size: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", positive_int("CountWindow", "size", self.size))

    def build(self, resume_state: Mapping[str, Any] | None = None) -> CountWindower:
        """The runtime windower, fresh or resumed from a :meth:`CountWindower.snapshot`."""
        return CountWindower(self, resume_state)


class CountWindower(BaseWindower):
    """Runtime of :class:`CountWindow`: a batch every ``size`` events.

    ``add`` costs a few µs per emitted batch plus one copy of the events that
    straddle two ``add`` calls; full batches inside one chunk are zero-copy
    slices of it.

    Examples
    --------
    >>> import numpy as np
    >>> from stream.core.records import Events
    >>> ev = Events(X=np.zeros((7, 1), np.float32), y=np.zeros(7, np.int64),
    ...             ts=np.zeros(7, np.int64), ids=np.array(list("abcdefg")),
    ...             topic=np.array(["t"] * 7), partition=np.zeros(7, np.int32),
    ...             offset=np.arange(7, dtype=np.int64))
    >>> windower = CountWindow(3).build()
    >>> [(b.seq, b.events.ids.tolist()) for b in windower.add(ev).batches]
    [(0, ['a', 'b', 'c']), (1, ['d', 'e', 'f'])]
    >>> windower.pending().ids.tolist()
    ['g']
    >>> resumed = CountWindow(3).build(resume_state=windower.snapshot())
    >>> [(b.seq, b.events.ids.tolist()) for b in resumed.flush()]
    [(2, ['g'])]
    """

    _kind = "count"

    def __init__(self, config: CountWindow, resume_state: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.config = config
        self._size = config.size
        if resume_state is not None:
            # A changed `size` is fine: a residue >= the new size is emitted by the next add.
            self._base_restore(read_resume(resume_state, self._kind, ("size",)))

    def add(self, events: Events) -> WindowOutput:
        n = len(events)
        if n == 0:
            return WindowOutput([])
        self._check_schema(events)
        size = self._size
        need = size - self._residue.n
        if n < need:
            self._residue.append(events)
            return WindowOutput([])
        if need <= 0:
            # Only after a restore with a smaller size: fold the residue in once.
            events = Events.concat(self._residue.chunks_with(events))
            n, need = len(events), size
        # INVARIANT: batches are consecutive runs of the arrival order, each of
        # exactly `size` events; the residue is the (< size) tail.
        first = events.take(slice(0, need)) if n > need else events
        batches = [self._emit(Events.concat(self._residue.chunks_with(first)))]
        pos = need
        while n - pos >= size:
            batches.append(self._emit(events.take(slice(pos, pos + size))))
            pos += size
        if pos < n:
            self._residue.append(events.take(slice(pos, n)))
        return WindowOutput(batches)

    def tick(self, now_ms: int | None = None) -> WindowOutput:
        """Count windows ignore time: always an empty output."""
        return WindowOutput([])

    def flush(self) -> list[MicroBatch]:
        """Emit the partial tail (if any) as one short batch."""
        rest = self._residue.pop()
        return [] if rest is None else [self._emit(rest)]

    def snapshot(self) -> dict:
        state = self._base_snapshot()
        state["size"] = self._size
        return state
