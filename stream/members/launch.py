"""``streamlearn run --members N``: the same command, run by N members that torchrun starts and restarts.

The command a user types is started once per member by torchrun's elastic
agent (``python -m torch.distributed.run ... -m stream.cli run <same
options>``), with :data:`MEMBER_ENV` set so each knows it is a member. On one
machine the rendezvous is torchrun's ``--standalone`` one; across machines
every machine runs the same command with ``--nodes MIN:MAX --rdzv-endpoint
HOST:PORT --rdzv-id ID`` (see docs/scale-out.md).

The agent is what makes membership elastic: when a member dies, it stops the
others and starts them all again (up to ``--member-restarts`` times), and a
machine that joins or leaves makes every agent meet again with the new
count. Every start restores the last committed round
(:mod:`stream.members.engine`), so a restart only redoes work.

Examples
--------
>>> plan = MemberLaunch(members=2)
>>> plan.torchrun_args()[:6]
['--standalone', '--nnodes', '1', '--nproc-per-node', '2', '--max-restarts']
>>> MemberLaunch(members=2, nodes="1:4", rdzv_endpoint="10.0.0.5:29500").torchrun_args()[:2]
['--nnodes', '1:4']
>>> member_args(["run", "--topic", "t", "--members", "2", "--nodes=1:3", "--member-restarts", "5"])
['--topic', 't', '--members', '2']
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Sequence

from stream.core.errors import ConfigError
from stream.reconcile.job import Launch

__all__ = ["MEMBER_ENV", "MemberLaunch", "is_member", "launch_members", "member_args"]

#: Set in every member's environment: this process is one member, not the launcher.
MEMBER_ENV = "STREAMLEARN_MEMBER"
#: The launcher's own options, which a member does not repeat.
_LAUNCH_OPTIONS = {"--nodes": True, "--rdzv-endpoint": True, "--rdzv-id": True,
                   "--member-restarts": True}  # fmt: skip


def is_member() -> bool:
    """Whether this process is a member started by ``run --members`` (through torchrun)."""
    return os.environ.get(MEMBER_ENV) == "1" and "RANK" in os.environ


@dataclass(frozen=True)
class MemberLaunch:
    """How torchrun starts the members: per machine, machines, rendezvous, restarts."""

    members: int
    nodes: str = "1"
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None
    restarts: int = 100

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ConfigError(f"--members must be at least 1, got {self.members}")
        if self.restarts < 0:
            raise ConfigError(f"--member-restarts must be at least 0, got {self.restarts}")

    def torchrun_args(self) -> list[str]:
        launch = Launch(
            nproc=self.members,
            nnodes=self.nodes,
            rdzv_endpoint=self.rdzv_endpoint,
            rdzv_id=self.rdzv_id or "streamlearn-members",
        )
        # A member that dies is seen within half a second and the round restarts without it waiting.
        return [*launch.torchrun_args(), "--max-restarts", str(self.restarts), "--monitor-interval", "0.5"]


def member_args(argv: Sequence[str]) -> list[str]:
    """The ``run`` options every member gets: the command line after ``run``, less torchrun's part."""
    argv = list(argv)
    if "run" not in argv:
        raise ConfigError("--members is given on the command line: streamlearn run --members N ...")
    rest, out, i = argv[argv.index("run") + 1 :], [], 0
    while i < len(rest):
        name = rest[i].split("=", 1)[0]
        if name in _LAUNCH_OPTIONS:
            i += 1 if "=" in rest[i] else 2
            continue
        out.append(rest[i])
        i += 1
    return out


def launch_members(plan: MemberLaunch, argv: Sequence[str]) -> int:
    """Run torchrun over the members until it ends; its exit code. SIGTERM/SIGINT go to the members."""
    cmd = [sys.executable, "-m", "torch.distributed.run", *plan.torchrun_args(), "-m", "stream.cli", "run",
           *member_args(argv)]  # fmt: skip
    env = {**os.environ, MEMBER_ENV: "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.Popen(cmd, env=env)

    def forward(signum, _frame):
        proc.send_signal(signum)  # torchrun passes it to every member: they finish the round together

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return proc.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
