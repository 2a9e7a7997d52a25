"""Writing judged model versions to the registry: on the learning thread, or beside it.

The validation gate (:mod:`stream.engine.gate`) judges a candidate on the
learning thread -- cheap: one prediction of the holdout by the validated
version -- and hands the result, a :class:`Publication`, to a publisher. What
is slow (serialising the weights to safetensors, the registry's writes and
fsyncs, the notification) is the publisher's job:

- :class:`InlinePublisher` writes at once, on the caller's thread: replays and
  tests, where the same run must give the same registry every time;
- :class:`BackgroundPublisher` writes on one worker thread and never makes
  the learning thread wait. It holds at most one publication: while one is
  being written it is ``busy`` and the gate skips its due points, so the next
  publication is of the newest model when the worker is free again (latest
  wins; nothing queues). Skipping, rather than replacing a waiting
  publication, keeps the evidence chain whole: every judged candidate was
  compared with a version that is in the registry.

Either way the outcome comes back as a :class:`Published` through
:meth:`collect`, errors included, and the gate applies it on the learning thread.

Examples
--------
>>> import tempfile, torch
>>> from serving.registry.file_backend import FileRegistry
>>> from serving.registry.versions import Version
>>> publisher = BackgroundPublisher(FileRegistry(tempfile.mkdtemp()))
>>> publisher.submit(Publication({"w": torch.ones(1)}, Version(number=0), validate=True, reason="first"))
>>> publisher.wait(timeout=30)
True
>>> [(p.version.number, p.version.status, p.error) for p in publisher.collect()]
[(1, 'validated', None)]
>>> publisher.close()
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Mapping

from serving.registry.base import ModelRegistry, Pointer
from serving.registry.versions import Version

__all__ = [
    "STALE",
    "BackgroundPublisher",
    "InlinePublisher",
    "Publication",
    "Published",
    "Publisher",
    "write",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Publication:
    """A judged candidate: its weights (a snapshot, never the live tensors), draft and verdict.

    ``judged_at``: the pointer generation the verdict was judged against; a
    validation is not recorded if the pointer has moved since (an operator or
    another run decided in between): the candidate is rejected instead, and
    the gate judges the next one against the new validated version.
    """

    state: Mapping[str, Any]
    draft: Version
    validate: bool
    reason: str
    judged_at: int | None = None


STALE = "not validated: the validated version changed while this one was judged"


@dataclass(frozen=True)
class Published:
    """What became of a :class:`Publication`.

    ``version`` is the registry's record (``None`` if even the publish failed;
    a ``candidate`` if the verdict could not be recorded); ``pointer`` the
    validated pointer read after the write; ``error`` what went wrong, if anything.
    """

    publication: Publication
    version: Version | None
    pointer: Pointer | None
    error: Exception | None


def write(registry: ModelRegistry, publication: Publication) -> Published:
    """Publish ``publication`` and record its verdict; an exception is returned, not raised."""
    version = None
    try:
        version = registry.publish(publication.state, publication.draft)
        judged_at = publication.judged_at
        if judged_at is not None and publication.validate and registry.pointer()[1] != judged_at:
            version = registry.reject(version.number, reason=f"{publication.reason}; {STALE}")
        elif publication.validate:
            version = registry.validate(version.number, reason=publication.reason)
        else:
            version = registry.reject(version.number, reason=publication.reason)
        return Published(publication, version, registry.pointer(), None)
    except Exception as exc:  # noqa: BLE001 -- handed to the learning thread, which reports or re-raises it
        return Published(publication, version, None, exc)


class Publisher:
    """What the gate needs from a publisher (see the module docstring)."""

    #: True while a publication is being written: the gate does not judge another.
    busy: bool = False
    #: The validated pointer read after the latest background write (``None``: read it yourself).
    observed_pointer: Pointer | None = None

    def submit(self, publication: Publication) -> None:
        raise NotImplementedError

    def collect(self) -> list[Published]:
        """The outcomes written since the last call, oldest first."""
        raise NotImplementedError

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until nothing is being written; False if ``timeout`` passed first."""
        raise NotImplementedError

    def close(self, timeout: float | None = 60.0) -> None:
        """Finish the publication being written (up to ``timeout``) and stop."""


class InlinePublisher(Publisher):
    """Writes each publication at once, on the caller's thread (deterministic)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._done: list[Published] = []

    def submit(self, publication: Publication) -> None:
        self._done.append(write(self.registry, publication))

    def collect(self) -> list[Published]:
        done, self._done = self._done, []
        return done

    def wait(self, timeout: float | None = None) -> bool:
        return True


class BackgroundPublisher(Publisher):
    """Writes publications on one worker thread, one at a time; see the module docstring.

    Raises
    ------
    RuntimeError
        From :meth:`submit` while ``busy`` (the gate checks ``busy`` first) or during :meth:`close`.
    """

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._cond = threading.Condition()
        self._job: Publication | None = None
        self._done: list[Published] = []
        self._closing = False
        self._thread: threading.Thread | None = None
        self.observed_pointer: Pointer | None = None

    @property
    def busy(self) -> bool:
        return self._job is not None  # a plain read: the learning thread asks once per batch

    def submit(self, publication: Publication) -> None:
        with self._cond:
            if self._closing:
                raise RuntimeError("the publisher is closing")
            if self._job is not None:
                raise RuntimeError("a publication is still being written; check `busy` before submitting")
            self._job = publication
            if self._thread is None:
                # Daemon: a process that dies mid-write loses at most this version, as a crash would.
                self._thread = threading.Thread(target=self._work, name="streamlearn-publisher", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def collect(self) -> list[Published]:
        if not self._done:  # the common case, without the lock
            return []
        with self._cond:
            done, self._done = self._done, []
        return done

    def wait(self, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._job is None, timeout)

    def close(self, timeout: float | None = 60.0) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("a model version was still being written after %ss; it may be lost", timeout)
                return
        with self._cond:  # stopped: a later submit starts a new worker
            self._closing, self._thread = False, None

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._job is not None or self._closing)
                job = self._job
                if job is None:
                    return  # closing, nothing left to write
            outcome = write(self.registry, job)
            with self._cond:
                if outcome.pointer is not None:
                    self.observed_pointer = outcome.pointer
                self._done.append(outcome)
                self._job = None
                self._cond.notify_all()
