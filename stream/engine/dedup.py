"""Idempotence by event id: a bounded, checkpointed memory of the ids recently taken in.

At-least-once producers (retries without idempotence) send the same event
twice. :class:`RecentIds` remembers the last ``capacity`` ids the engine
accepted, so a repeat inside that horizon is refused instead of learned
again. It is checkpointed with the model and the positions, so after a crash
it remembers exactly what the restored model took in.

Ids are kept as 64-bit FNV-1a hashes of their text (stable across processes,
unlike Python's ``hash``): 8 bytes per id, so the default million ids cost
8 MB. Two different ids collide with probability ~``capacity / 2**64`` per
check (about 5e-14 at the default): negligible next to the duplicates it
catches. Memory is kept in generations: the newest is a Python set, the
older ones sorted arrays searched with ``np.searchsorted``; the oldest
generation is forgotten whole when the horizon is full.

Examples
--------
>>> import numpy as np
>>> recent = RecentIds(capacity=1000)
>>> recent.admit(np.array(["a", "b", "a"])).tolist()      # the second "a" repeats the first
[True, True, False]
>>> recent.admit(np.array(["b", "c"])).tolist()
[False, True]
>>> RecentIds.from_snapshot(recent.snapshot()).admit(np.array(["c", "d"])).tolist()
[False, True]
"""

from __future__ import annotations

import numpy as np

from stream.core.errors import ConfigError

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_GENERATIONS = 10


def hash_ids(ids: np.ndarray) -> np.ndarray:
    """Stable 64-bit FNV-1a hashes of string ids, vectorised over the batch.

    numpy stores ``<U`` strings as zero-padded UTF-32 code points; padding is
    skipped, so an id hashes the same whatever the longest id of its batch.

    >>> bool(hash_ids(np.array(["ab", "abcdef"]))[0] == hash_ids(np.array(["ab"]))[0])
    True
    """
    ids = np.asarray(ids, dtype=str)
    n = len(ids)
    width = ids.dtype.itemsize // 4
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    if n == 0 or width == 0:
        return h
    codes = np.ascontiguousarray(ids).view(np.uint32).reshape(n, width).astype(np.uint64)
    for j in range(width):
        c = codes[:, j]
        h = np.where(c != 0, (h ^ c) * _FNV_PRIME, h)
    return h


class RecentIds:
    """The last ``capacity`` admitted ids (as hashes); see the module docstring."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        if capacity < _GENERATIONS:
            raise ConfigError(
                f"the duplicate-id window must hold at least {_GENERATIONS} ids, got {capacity}"
            )
        self.capacity = capacity
        self._generation_size = capacity // _GENERATIONS
        self._current: set[int] = set()
        self._current_arrays: list[np.ndarray] = []  # the same hashes, for a cheap seal
        # Sealed generations, merged: one sorted array (one binary search per
        # batch) and, beside it, each key's generation number, so the oldest
        # generation is dropped with one mask.
        self._keys = np.empty(0, np.uint64)
        # Each key's generation, counted from the oldest alive (0): never more than
        # _GENERATIONS, so uint8 holds it at an eighth of int64's size in every checkpoint.
        self._gens = np.empty(0, np.uint8)
        self._oldest = 0
        self._next = 0

    def __len__(self) -> int:
        return len(self._current) + len(self._keys)

    def admit(self, ids: np.ndarray) -> np.ndarray:
        """Remember ``ids``; True where an id is new (not seen recently, nor earlier in ``ids``)."""
        return self.admit_hashes(hash_ids(ids))

    def admit_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """:meth:`admit` for ids already hashed (:func:`hash_ids`): e.g. what another member of a round admitted."""
        fresh = np.zeros(len(hashes), dtype=bool)
        # First occurrence within the batch only; np.unique also sorts, and
        # sorted queries walk the keys in order (fewer cache misses).
        uniq, first = np.unique(hashes, return_index=True)
        keys = self._keys
        if len(keys):
            at = np.searchsorted(keys, uniq)
            at[at == len(keys)] = 0
            first = first[keys[at] != uniq]
        fresh[first] = True
        current = self._current
        candidates = np.flatnonzero(fresh)
        values = hashes[candidates].tolist()
        if current.isdisjoint(values):  # the common case, answered in C
            current.update(values)
        else:
            for i, h in zip(candidates.tolist(), values):
                if h in current:
                    fresh[i] = False
                else:
                    current.add(h)
        self._current_arrays.append(hashes[fresh])
        if len(current) >= self._generation_size:
            self._seal()
        return fresh

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """True where an id was admitted and is still remembered; remembers nothing (a read-only ask).

        >>> recent = RecentIds(capacity=100); _ = recent.admit(np.array(["a"]))
        >>> recent.contains(np.array(["a", "b"])).tolist()
        [True, False]
        """
        hashes = hash_ids(ids)
        found = np.zeros(len(hashes), dtype=bool)
        keys = self._keys
        if len(keys) and len(hashes):
            at = np.searchsorted(keys, hashes)
            at[at == len(keys)] = 0
            found = keys[at] == hashes
        if self._current:
            found |= np.fromiter((h in self._current for h in hashes.tolist()), bool, len(hashes))
        return found

    def _seal(self) -> None:
        new = np.sort(np.concatenate(self._current_arrays))
        # Insert the sorted generation into the sorted keys: one O(N) copy,
        # cheaper than sorting the union again.
        at = np.searchsorted(self._keys, new)
        self._keys = np.insert(self._keys, at, new)
        self._gens = np.insert(self._gens, at, np.uint8(self._next - self._oldest))
        self._current = set()
        self._current_arrays = []
        self._next += 1
        if self._next - self._oldest >= _GENERATIONS:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        keep = self._gens != 0
        self._keys, self._gens = self._keys[keep], self._gens[keep] - np.uint8(1)
        self._oldest += 1

    def snapshot(self) -> dict:
        """Plain data for the checkpoint (numpy arrays and ints)."""
        return {
            "capacity": self.capacity,
            "keys": self._keys,
            "generations": self._gens,
            # The same hashes as the set, already in arrays: no walk over a million Python ints.
            "current": np.concatenate(self._current_arrays)
            if self._current_arrays
            else np.empty(0, np.uint64),
        }

    @classmethod
    def from_snapshot(cls, snap: dict, capacity: int | None = None) -> RecentIds:
        """Restore; a different ``capacity`` keeps the newest ids that fit."""
        out = cls(capacity or int(snap["capacity"]))
        out._keys = np.asarray(snap["keys"], dtype=np.uint64)
        out._gens = np.asarray(snap["generations"]).astype(np.uint8)  # int64 in checkpoints before uint8
        out._next = int(out._gens.max()) + 1 if len(out._gens) else 0
        current = np.asarray(snap["current"], dtype=np.uint64)
        out._current = set(current.tolist())
        out._current_arrays = [current]
        # Only a smaller capacity trims: generations may overshoot their size by
        # part of a batch, and a restore must forget exactly what the live memory would.
        while out.capacity < int(snap["capacity"]) and len(out) > out.capacity and len(out._keys):
            out._drop_oldest()
        return out


def repeated(recent: RecentIds, ids: np.ndarray, own_ids: np.ndarray | None = None) -> np.ndarray:
    """Indices of ``ids`` that repeat a recent id; the others are remembered.

    ``own_ids`` marks the ids the records carried (``None``: all of them);
    ids made from positions are unique by construction and are not checked.

    >>> recent = RecentIds(capacity=100)
    >>> repeated(recent, np.array(["a", "t:0:1", "a"]), np.array([True, False, True])).tolist()
    [2]
    """
    if own_ids is None:
        return np.flatnonzero(~recent.admit(ids))
    if not own_ids.any():
        return np.empty(0, dtype=np.int64)
    own = np.flatnonzero(own_ids)
    return own[~recent.admit(ids[own])]
