"""Members as threads of one test: a DistContext double per thread over a real gloo group.

``torch.distributed``'s module-level collectives work on the default group,
one per process, so threads cannot each be a rank through
:class:`~stream.reconcile.distributed.DistContext`. :class:`ThreadDist` has
its interface: tensors are summed by a real gloo process group of the
thread's own (``ProcessGroupGloo`` over a ``FileStore``, as
``test_round_average`` does), objects go through a shared
:class:`threading.Barrier` and are pickled on the way, as between processes;
members making different object collectives at the same time fail the test.
A member that fails aborts the barrier, so the others fail at their next
collective instead of waiting: what a dead process does to torchrun's group.
"""

from __future__ import annotations

import pickle
import threading
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist


class Group:
    """What the members of one start share: a gloo store and an object exchange."""

    def __init__(self, world: int, store_path: str, *, start: int = 0, timeout_s: float = 30.0) -> None:
        self.world, self.timeout_s = world, timeout_s
        self.store = dist.PrefixStore(f"start-{start}", dist.FileStore(store_path, world))
        self.barrier = threading.Barrier(world, timeout=timeout_s)
        self.slots: list[Any] = [None] * world

    def member(self, rank: int) -> ThreadDist:
        return ThreadDist(self, rank)


class ThreadDist:
    """:class:`~stream.reconcile.distributed.DistContext`'s collectives for one thread-member."""

    backend = "gloo"
    device = torch.device("cpu")

    def __init__(self, group: Group, rank: int) -> None:
        self.group, self.rank, self.world, self.local_rank = group, rank, group.world, rank
        self._pg = None

    @property
    def distributed(self) -> bool:
        return True

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self._pg is None:  # joined at the first sum: every member makes it at the same round
            timeout = timedelta(seconds=self.group.timeout_s)
            self._pg = dist.ProcessGroupGloo(self.group.store, self.rank, self.world, timeout)
        self._pg.allreduce([tensor]).wait()
        return tensor

    def gather_objects(self, obj: Any) -> list[Any]:
        return self._exchange("gather_objects", obj, lambda slots: slots)

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        return self._exchange(
            f"broadcast_object(src={src})", obj if self.rank == src else None, lambda s: s[src]
        )

    def gather_to_root(self, obj: Any) -> list[Any] | None:
        out = self._exchange("gather_to_root", obj, lambda slots: slots)
        return out if self.rank == 0 else None

    def barrier(self) -> None:
        self.group.barrier.wait()

    def close(self) -> None:
        self._pg = None

    def _exchange(self, kind: str, obj: Any, pick: Callable[[list], Any]) -> Any:
        group = self.group
        group.slots[self.rank] = (kind, pickle.dumps(obj))
        group.barrier.wait()  # every slot written
        kinds = [k for k, _ in group.slots]
        # Between processes, members making different collectives at once hang or garble: fail loudly here.
        assert len(set(kinds)) == 1, f"the members diverged: member {self.rank} {kind}, all {kinds}"
        out = pick([pickle.loads(s) for _, s in group.slots])
        group.barrier.wait()  # every slot read before the next exchange writes again
        return out


def run_members(world: int, body: Callable[[int], Any], group: Group, *, join_s: float = 60) -> tuple:
    """``body(rank)`` in one thread per member; (results, errors by rank). A failing member breaks the group."""
    results: list[Any] = [None] * world
    errors: dict[int, BaseException] = {}

    def member(rank: int) -> None:
        try:
            results[rank] = body(rank)
        except BaseException as exc:  # noqa: BLE001 -- reported to the test thread
            errors[rank] = exc
            group.barrier.abort()  # the others fail at their next collective, as after a dead process

    threads = [threading.Thread(target=member, args=(r,), daemon=True) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(join_s)
    assert not any(t.is_alive() for t in threads), "a member hung"
    return results, errors
