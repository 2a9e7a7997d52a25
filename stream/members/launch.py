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

__all__ = [
    "MEMBER_ENV",
    "MemberLaunch",
    "fatal_path",
    "is_member",
    "launch_members",
    "member_args",
    "note_fatal",
]

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
        args = [*launch.torchrun_args(), "--max-restarts", str(self.restarts), "--monitor-interval", "0.5"]
        if not launch.standalone:
            # Once MIN machines are there, wait 3 s (not torchrun's 30) for more before starting.
            args += ["--rdzv-conf", "last_call_timeout=3"]
        return args


def global_args(argv: Sequence[str]) -> list[str]:
    """The options given before ``run`` (``-v``): the members log as the launcher was asked to.

    >>> global_args(["streamlearn", "-vv", "run", "--topic", "t"])
    ['-vv']
    """
    argv = list(argv)
    return argv[1 : argv.index("run")] if "run" in argv else []


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


def fatal_path(checkpoint_dir: str) -> str:
    """Where a member writes a mistake no restart can mend (its launcher stops the members and says it)."""
    return os.path.join(checkpoint_dir, "members", "fatal-error.txt")


def note_fatal(checkpoint_dir: str, message: str, code: int = 2) -> None:
    """Record ``message`` (and the exit ``code`` it deserves) for the launcher.

    torchrun would otherwise restart the members into the same mistake, and
    lose a bounded run's verdict: any member exiting non-zero is a failure to restart.
    """
    path = fatal_path(checkpoint_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(f"{code}\n{message}")


def stop_path(checkpoint_dir: str) -> str:
    """Where the launcher notes a stop request, so a member (re)starting after the signal still sees it."""
    return os.path.join(checkpoint_dir, "members", "stop-requested")


def stop_requested(checkpoint_dir: str) -> str | None:
    """The launcher's stop request for this run (``None``: none)."""
    try:
        with open(stop_path(checkpoint_dir)) as f:
            return f.read().strip() or "stop requested"
    except FileNotFoundError:
        return None


def _read_fatal(path: str) -> tuple[int, str]:
    with open(path) as f:
        first, _, rest = f.read().partition("\n")
    return (int(first), rest.strip()) if first.strip().isdigit() else (2, f"{first}\n{rest}".strip())


def launch_members(plan: MemberLaunch, argv: Sequence[str], checkpoint_dir: str) -> tuple[int, str | None]:
    """Run torchrun over the members until it ends: its exit code, and a member's fatal mistake if one was noted.

    SIGTERM/SIGINT/SIGHUP go to the members (they end after one last round
    together); a noted mistake comes back with the exit code it deserves.
    """
    fatal, stop = fatal_path(checkpoint_dir), stop_path(checkpoint_dir)
    for stale in (fatal, stop):  # an earlier run's: this run finds out for itself
        if os.path.exists(stale):
            os.remove(stale)
    cmd = [sys.executable, "-m", "torch.distributed.run", *plan.torchrun_args(), "-m", "stream.cli",
           *global_args(argv), "run", *member_args(argv)]  # fmt: skip
    env = {
        **os.environ,
        MEMBER_ENV: "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        # torch 2.x reuses round 0's store address after a machine joins, and the next rendezvous hangs
        # (pytorch/pytorch#147064); a store per rendezvous round does not.
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
    }
    # A process group of its own: a terminal's Ctrl-C reaches the launcher only, not torchrun's agent
    # too (which would signal the members a second time, and a second SIGINT aborts them).
    proc = subprocess.Popen(cmd, env=env, process_group=0)

    def forward(signum, _frame):
        # Noted first, for members that are starting (or restarting) and have no handler yet;
        # then to the members themselves: they end after one last round together and torchrun
        # exits 0. (torchrun's agent, signalled, would abort them and exit 1.)
        os.makedirs(os.path.dirname(stop), exist_ok=True)
        with open(stop, "w") as f:
            f.write(f"received {signal.Signals(signum).name}")
        _signal_members(proc.pid, signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        while True:
            try:
                code = proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                code = None
            # Read also once torchrun has ended by itself (restarts spent, --member-restarts 0):
            # the mistake, not only its exit code, is what the user needs to see.
            if os.path.exists(fatal):
                if code is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                proc.wait()
                return _read_fatal(fatal)
            if code is not None:
                return code, None
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _signal_members(torchrun_pid: int, signum: int) -> None:
    """Send ``signum`` to every process torchrun started on this machine (the members)."""
    import psutil

    try:
        members = psutil.Process(torchrun_pid).children()
    except psutil.NoSuchProcess:
        return
    for member in members:
        try:
            member.send_signal(signum)
        except psutil.NoSuchProcess:
            pass
