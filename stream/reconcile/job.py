"""A full retrain as a separate process: torchrun launched, watched, and reported, never fatal to the caller.

:class:`RetrainJob` writes the job's ``spec.json`` into its own directory,
starts ``python -m torch.distributed.run ... -m stream.reconcile.worker`` in a new
session (a signal to the daemon does not reach it), sends its output to
``log.txt`` and, when it ends, answers with a :class:`JobOutcome`: the
``result.json`` rank 0 wrote, or the exit code and the log's last lines.
The daemon polls it between batches; ``streamlearn retrain`` waits on it.

On one machine the job uses torchrun's ``--standalone`` rendezvous on
localhost; with :class:`Launch` ``nnodes > 1`` every machine runs the same
command with ``--rdzv-endpoint HOST:PORT`` (see the README).

Examples
--------
>>> Launch(nproc=2).torchrun_args()
['--standalone', '--nnodes', '1', '--nproc-per-node', '2']
>>> Launch(nproc=4, nnodes="2", rdzv_endpoint="10.0.0.5:29400", rdzv_id="nightly").torchrun_args()[:4]
['--nnodes', '2', '--nproc-per-node', '4']
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from stream.core.errors import ConfigError
from stream.reconcile.spec import RetrainSpec
from stream.reconcile.worker import RetrainResult

__all__ = ["JobOutcome", "Launch", "RetrainJob", "worker_line"]


@dataclass(frozen=True)
class Launch:
    """How torchrun starts the workers: processes per node, nodes and the rendezvous."""

    nproc: int = 1
    nnodes: str = "1"
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None
    rdzv_backend: str = "c10d"

    def __post_init__(self) -> None:
        object.__setattr__(self, "nnodes", str(self.nnodes))
        if self.nproc < 1:
            raise ConfigError(f"--nproc must be at least 1, got {self.nproc}")
        if self.nnodes != "1" and not self.rdzv_endpoint:
            raise ConfigError(
                "several nodes need a rendezvous: pass --rdzv-endpoint HOST:PORT (the same on every "
                "node) and --rdzv-id"
            )

    @property
    def standalone(self) -> bool:
        return self.nnodes == "1" and not self.rdzv_endpoint

    def torchrun_args(self) -> list[str]:
        if self.standalone:
            return ["--standalone", "--nnodes", "1", "--nproc-per-node", str(self.nproc)]
        return [
            "--nnodes",
            self.nnodes,
            "--nproc-per-node",
            str(self.nproc),
            "--rdzv-backend",
            self.rdzv_backend,
            "--rdzv-endpoint",
            str(self.rdzv_endpoint),
            "--rdzv-id",
            self.rdzv_id or "streamlearn-retrain",
        ]


@dataclass(frozen=True)
class JobOutcome:
    """How a retrain job ended: ``result`` when it succeeded, else the exit code and the log's tail.

    ``worker_error`` is set when a worker stopped on a StreamlearnError (a
    mistake its message explains, e.g. ``on rank 0: no decodable record ...``)
    rather than crashing.
    """

    ok: bool
    exit_code: int | None
    seconds: float
    log_path: str
    result: RetrainResult | None = None
    message: str = ""
    worker_error: str = ""


def worker_line(line: str) -> str:
    """A log line without the ``[rankN]:`` prefix torchrun may give it, stripped.

    >>> worker_line("[rank1]: [retrain] error on rank 1: boom")
    '[retrain] error on rank 1: boom'
    """
    return line.split("]:", 1)[1].strip() if line.startswith("[rank") and "]:" in line else line.strip()


class RetrainJob:
    """One retrain process tree; see the module docstring.

    Raises
    ------
    ConfigError
        On :meth:`start`, if ``job_dir`` already holds a job.
    """

    def __init__(
        self,
        spec: RetrainSpec,
        job_dir: str | os.PathLike,
        launch: Launch | None = None,
        *,
        timeout_s: float | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.dir = Path(job_dir)
        self.spec = replace(spec, out_dir=str(self.dir))
        self.launch = launch or Launch()
        self.timeout_s = timeout_s
        self.env = env or {}
        self._proc: subprocess.Popen | None = None
        self._started = 0.0
        self._outcome: JobOutcome | None = None

    @property
    def log_path(self) -> Path:
        return self.dir / "log.txt"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            *self.launch.torchrun_args(),
            "-m",
            "stream.reconcile.worker",
            "--spec",
            str(self.dir / "spec.json"),
        ]

    def start(self) -> RetrainJob:
        if (self.dir / "spec.json").exists():
            raise ConfigError(f"{self.dir} already holds a retrain job; use a new directory")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "spec.json").write_text(self.spec.to_json())
        env = {**os.environ, **self.env}
        if self.launch.standalone:
            # Keep gloo's sockets on loopback: a single-machine job has no business on another interface.
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        env.setdefault("OMP_NUM_THREADS", "1")
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self._started = time.monotonic()
        return self

    def poll(self) -> JobOutcome | None:
        """``None`` while the job runs; its outcome once it ended (a timed-out job is stopped first)."""
        if self._outcome is not None:
            return self._outcome
        if self._proc is None:
            raise ConfigError("the retrain job was not started")
        code = self._proc.poll()
        elapsed = time.monotonic() - self._started
        if code is None:
            if self.timeout_s is not None and elapsed > self.timeout_s:
                self.stop()
                self._outcome = JobOutcome(
                    False,
                    self._proc.returncode,
                    elapsed,
                    str(self.log_path),
                    message=f"timed out after {self.timeout_s:g}s and was stopped; log: {self.tail()}",
                )
                return self._outcome
            return None
        self._outcome = self._finish(code, elapsed)
        return self._outcome

    def wait(self, poll_s: float = 0.5) -> JobOutcome:
        while (outcome := self.poll()) is None:
            time.sleep(poll_s)
        return outcome

    def stop(self, grace_s: float = 10.0) -> None:
        """Terminate the whole process tree (torchrun forwards SIGTERM to its workers)."""
        if self._proc is None or self._proc.poll() is not None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGTERM)
            self._proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        except ProcessLookupError:
            pass

    def tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        # torchrun repeats the worker's traceback; the most telling lines are last.
        return " | ".join(line.strip() for line in text[-lines:])

    def cause(self) -> str:
        """The first worker error line (the root cause; its peers' errors and torchrun's summary follow), or the tail."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        for line in lines:
            text = worker_line(line)
            if text.startswith("[retrain] error") or (
                "Error:" in text and not text.startswith(("torch.distributed.elastic", "raise "))
            ):
                return text
        return self.tail()

    def _finish(self, code: int, elapsed: float) -> JobOutcome:
        result_file = self.dir / "result.json"
        if code == 0 and result_file.exists():
            result = RetrainResult.from_dict(json.loads(result_file.read_text()))
            return JobOutcome(
                True,
                0,
                elapsed,
                str(self.log_path),
                result=result,
                message=f"candidate version {result.version} from {result.events:,} events",
            )
        why = (
            "exited 0 without a result.json"
            if code == 0
            else (f"killed by signal {-code}" if code < 0 else f"exited with code {code}")
        )
        cause = self.cause()
        return JobOutcome(
            False,
            code,
            elapsed,
            str(self.log_path),
            message=f"retrain {why}: {cause} (log: {self.log_path})",
            worker_error=cause.removeprefix("[retrain] error ")
            if cause.startswith("[retrain] error")
            else "",
        )
