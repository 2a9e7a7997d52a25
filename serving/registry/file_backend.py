"""A model registry in a local directory: the embedded default (no Redis needed).

Layout under the root::

    versions/000000000007.json          one Version document per version
    states/000000000007.safetensors     its weights (dumps_state bytes)
    pointer.json                        {"version": 7, "generation": 12}
    audit.jsonl                         one AuditEvent per line
    .lock                               flock'd by every writer

Every file is replaced atomically (temp file, fsync, rename), so a reader
never sees a torn document; writers -- the daemon publishing, an operator
promoting through the API -- serialise on ``.lock``, which works across
processes on one machine. Within a transition the version document is
written before the pointer: a crash between the two leaves a version marked
validated that is not yet current, never a pointer to a version that does
not say so.

Examples
--------
>>> import tempfile, torch
>>> from serving.registry.versions import Version
>>> reg = FileRegistry(tempfile.mkdtemp())
>>> v = reg.publish({"w": torch.zeros(1)}, Version(number=0))
>>> reg.validate(v.number).number, reg.pointer()
(1, (1, 1))
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator

import orjson

from learners.state_io import atomic_write_bytes
from serving.registry.base import Pointer, RegistryBase, not_found
from serving.registry.versions import AuditEvent, Version
from stream.core.errors import RegistryError, RegistryUnavailableError

__all__ = ["FileRegistry"]


def _name(number: int) -> str:
    return f"{number:012d}"


class FileRegistry(RegistryBase):
    """A :class:`~serving.registry.base.ModelRegistry` in directory ``root`` (created if missing).

    Raises
    ------
    RegistryUnavailableError
        The directory cannot be created or written.
    """

    def __init__(self, root: str | os.PathLike[str], *, keep_states: int = 100) -> None:
        self.root = Path(root)
        self.keep_states = max(1, int(keep_states))
        self._versions = self.root / "versions"
        self._states = self.root / "states"
        self._pointer = self.root / "pointer.json"
        self._audit = self.root / "audit.jsonl"
        self._live = self.root / "live.json"
        try:
            self._versions.mkdir(parents=True, exist_ok=True)
            self._states.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryUnavailableError(
                f"cannot create the registry directory {self.root}: {exc}"
            ) from exc
        self._pointer_stat: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"FileRegistry({str(self.root)!r})"

    # ------------------------------------------------------------ locking
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RegistryUnavailableError(f"cannot open the registry lock in {self.root}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        except OSError as exc:
            raise RegistryUnavailableError(f"cannot write the registry in {self.root}: {exc}") from exc
        finally:
            os.close(fd)  # closing releases the flock

    # --------------------------------------------------------- primitives
    def _numbers(self) -> list[int]:
        return sorted(int(p.stem) for p in self._versions.glob("*.json") if p.stem.isdigit())

    def _next_number(self) -> int:
        # Reserved by creating the document under the lock, so two writers
        # never get the same number.
        with self._locked():
            numbers = self._numbers()
            number = (numbers[-1] if numbers else 0) + 1
            placeholder = Version(number=number, note="reserved")
            atomic_write_bytes(self._versions / f"{_name(number)}.json", placeholder.to_json())
            return number

    def _store_new(self, version: Version, blob: bytes, event: AuditEvent) -> None:
        with self._locked():
            # Weights first: a version document never names missing weights.
            atomic_write_bytes(self._states / f"{_name(version.number)}.safetensors", blob)
            atomic_write_bytes(self._versions / f"{_name(version.number)}.json", version.to_json())
            self._append_locked(event)

    def _transition(
        self, version: Version, *, move_pointer: bool, demoted: Version | None, event: AuditEvent
    ) -> None:
        with self._locked():
            if demoted is not None:
                atomic_write_bytes(self._versions / f"{_name(demoted.number)}.json", demoted.to_json())
            atomic_write_bytes(self._versions / f"{_name(version.number)}.json", version.to_json())
            if move_pointer:
                _, generation = self._read_pointer()
                atomic_write_bytes(
                    self._pointer, orjson.dumps({"version": version.number, "generation": generation + 1})
                )
            self._append_locked(event)

    def _read_version(self, number: int) -> Version:
        try:
            data = (self._versions / f"{_name(number)}.json").read_bytes()
        except FileNotFoundError:
            raise not_found(number) from None
        except OSError as exc:
            raise RegistryUnavailableError(f"cannot read version {number} in {self.root}: {exc}") from exc
        return Version.from_json(data)

    def _read_versions(self) -> list[Version]:
        out = []
        for number in self._numbers():
            try:
                out.append(self._read_version(number))
            except RegistryError:
                continue  # a document deleted between listing and reading
        return out

    def _read_pointer(self) -> Pointer:
        try:
            doc = orjson.loads(self._pointer.read_bytes())
        except FileNotFoundError:
            return None, 0
        except (OSError, orjson.JSONDecodeError) as exc:
            raise RegistryUnavailableError(f"cannot read {self._pointer}: {exc}") from exc
        return int(doc["version"]), int(doc["generation"])

    def _read_state(self, number: int) -> bytes:
        try:
            return (self._states / f"{_name(number)}.safetensors").read_bytes()
        except FileNotFoundError:
            self._read_version(number)  # raises VersionNotFoundError for an unknown number
            raise RegistryError(f"version {number} has no weights any more (pruned)") from None
        except OSError as exc:
            raise RegistryUnavailableError(f"cannot read weights of version {number}: {exc}") from exc

    def _has_state(self, number: int) -> bool:
        return (self._states / f"{_name(number)}.safetensors").exists()

    def _drop_states_below(self, number: int, keep: int | None) -> None:
        with self._locked():
            for path in self._states.glob("*.safetensors"):
                if path.stem.isdigit() and int(path.stem) < number and int(path.stem) != keep:
                    path.unlink(missing_ok=True)

    def _append_locked(self, event: AuditEvent) -> AuditEvent:
        if not event.id:
            event = AuditEvent(
                event.kind,
                event.version,
                event.at,
                event.reason,
                event.details,
                id=f"{int(event.at * 1000)}-{time.monotonic_ns() % 1_000_000}",
            )
        with open(self._audit, "ab") as fh:
            fh.write(orjson.dumps(event.to_dict()) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        return event

    def _write_live(self, blob: bytes) -> None:
        try:
            atomic_write_bytes(self._live, blob)  # a whole document: readers never see half of one
        except OSError as exc:
            raise RegistryUnavailableError(f"cannot write live metrics in {self.root}: {exc}") from exc

    def _read_live(self) -> bytes | None:
        try:
            return self._live.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RegistryUnavailableError(f"cannot read live metrics in {self.root}: {exc}") from exc

    def _append_event(self, event: AuditEvent) -> AuditEvent:
        with self._locked():
            return self._append_locked(event)

    def _read_events(
        self, kind: str | None, since: float | None, limit: int, until: float | None = None
    ) -> list[AuditEvent]:
        try:
            lines = self._audit.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise RegistryUnavailableError(f"cannot read {self._audit}: {exc}") from exc
        out: list[AuditEvent] = []
        for line in reversed(lines):
            if len(out) >= limit:
                break
            try:
                event = AuditEvent.from_dict(orjson.loads(line))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a torn last line after a power loss
            if since is not None and event.at < since:
                break  # the file is in time order
            if until is not None and event.at > until:
                continue
            if kind is None or event.kind == kind:
                out.append(event)
        return out

    def _wait_for_notification(self, timeout: float) -> None:
        # No notification channel on a plain directory: watch the pointer
        # file's (mtime, size) at a short interval instead.
        deadline = time.monotonic() + timeout
        step = min(0.05, timeout)
        while True:
            try:
                st = self._pointer.stat()
                seen = (st.st_mtime_ns, st.st_ino)
            except FileNotFoundError:
                seen = None
            if seen != self._pointer_stat:
                self._pointer_stat = seen
                return
            if time.monotonic() >= deadline:
                return
            time.sleep(step)

    def ping(self) -> None:
        if not os.access(self.root, os.R_OK | os.W_OK | os.X_OK):
            raise RegistryUnavailableError(f"registry directory {self.root} is not readable and writable")

    def close(self) -> None:
        pass
