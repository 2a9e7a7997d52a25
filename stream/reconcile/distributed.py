"""The process group of a distributed job, and the few collectives a retrain needs.

:class:`DistContext` reads what torchrun puts in the environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...) and joins the process
group with NCCL when this rank has a CUDA device and gloo otherwise. Outside
torchrun it is a world of one with no process group, and every collective is
the identity: the same training code runs in a test, a notebook or a
1000-rank job.

Examples
--------
>>> import torch
>>> ctx = DistContext.single()
>>> ctx.rank, ctx.world, ctx.backend
(0, 1, 'none')
>>> ctx.all_reduce_sum(torch.tensor([1.0, 2.0])).tolist(), ctx.gather_objects("x"), ctx.broadcast_object(7)
([1.0, 2.0], ['x'], 7)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistContext"]


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: rank, world size, backend and device."""

    rank: int
    world: int
    local_rank: int
    backend: str  # "gloo", "nccl" or "none" (a world of one without a process group)
    device: torch.device

    @classmethod
    def single(cls, device: str = "cpu") -> DistContext:
        return cls(0, 1, 0, "none", torch.device(device))

    @classmethod
    def from_env(cls, device: str = "auto", timeout_s: float = 600.0) -> DistContext:
        """Join torchrun's process group (or a world of one when not launched by torchrun).

        ``device``: ``auto`` uses ``cuda:LOCAL_RANK`` (NCCL) when CUDA is
        available, else CPU (gloo); ``cpu`` forces gloo.
        """
        if "WORLD_SIZE" not in os.environ:
            return cls.single(
                "cuda"
                if device == "auto" and torch.cuda.is_available()
                else ("cpu" if device == "auto" else device)
            )
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        else:
            dev = torch.device("cpu")
        backend = "nccl" if use_cuda else "gloo"
        timeout = timedelta(seconds=timeout_s)
        dist.init_process_group(backend, timeout=timeout, **_store_of_this_start(timeout))
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, backend, dev)

    @property
    def distributed(self) -> bool:
        return self.backend != "none"

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks (in place on ``tensor``, which is also returned)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable plain data), in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def gather_to_root(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` in rank order on rank 0 (``None`` elsewhere): one message per rank, not all to all."""
        if not self.distributed:
            return [obj]
        out: list[Any] | None = [None] * self.world if self.rank == 0 else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _store_of_this_start(timeout: timedelta) -> dict:
    """The process group's store under torchrun, keyed by its restart count and world size (``{}``: not torchrun).

    After a member dies, torchrun restarts the group on the same agent store:
    without a prefix per start, a new process could read a dead one's address
    from the last start and fail to connect ("Connection refused") every time.
    """
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if restart is None:
        return {}  # not an elastic start (e.g. a plain env:// launch)
    from torch.distributed.rendezvous import _create_c10d_store

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    base = _create_c10d_store(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), rank, world, timeout)
    run = os.environ.get("TORCHELASTIC_RUN_ID", "")
    return {
        "store": dist.PrefixStore(f"streamlearn/{run}/{restart}", base),
        "rank": rank,
        "world_size": world,
    }
