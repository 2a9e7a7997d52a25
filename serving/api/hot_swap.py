"""Hot swap: follow the registry's validated pointer and swap the served model atomically.

:class:`ModelSlot` holds the served model as ONE reference. Requests read it
once (``slot.model``) and use what they got; a swap replaces the reference
under a lock with a compare-and-set on the pointer *generation*, so a slow,
stale load can never overwrite a newer decision (a rollback moves the
version back but the generation forward).

:class:`HotSwapper` is a background thread: it subscribes to the registry
(pub/sub notifications with a polling fallback), loads each newly validated
version off the request path, then swaps. When the registry goes away it keeps
the model it has, marks the registry down (readiness turns degraded) and
reconnects with exponential backoff and jitter (redis-py's backoff classes).

Examples
--------
>>> import tempfile, torch
>>> from learners.neural.learner import TorchLearner
>>> from serving.registry.file_backend import FileRegistry
>>> from serving.registry.versions import Version
>>> reg = FileRegistry(tempfile.mkdtemp())
>>> slot = ModelSlot()
>>> swapper = HotSwapper(reg, slot, poll_interval=0.05)
>>> swapper.start()
>>> v = reg.publish(TorchLearner(n_features=2, device="cpu").state_dict(), Version(number=0))
>>> _ = reg.validate(v.number)
>>> swapper.wait_for_version(v.number, timeout=10)
True
>>> slot.model.version.number
1
>>> swapper.stop()
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from redis.backoff import AbstractBackoff, EqualJitterBackoff

from serving.api.model import ServedModel
from serving.registry.base import ModelRegistry, Pointer
from stream.core.errors import RegistryError, RegistryUnavailableError

log = logging.getLogger(__name__)


class ModelSlot:
    """The one reference the API serves from; see the module docstring."""

    def __init__(self) -> None:
        self._model: ServedModel | None = None
        self._generation = -1
        self._lock = threading.Lock()
        self.swaps = 0

    @property
    def model(self) -> ServedModel | None:
        return self._model  # a single attribute read: atomic

    @property
    def generation(self) -> int:
        return self._generation

    def swap(self, model: ServedModel, generation: int) -> bool:
        """Serve ``model`` if ``generation`` is not older than the served one; True if swapped."""
        with self._lock:
            if generation < self._generation:
                return False
            same = self._model is not None and same_version(self._model, model.version)
            self._model, self._generation = model, generation
            if not same:
                self.swaps += 1
            return not same

    def rebase(self, generation: int) -> None:
        """Accept ``generation`` as the new baseline (after a reconnect).

        A Redis without persistence restarts empty, counting generations from
        zero again; without a rebase the slot would refuse every later swap.
        """
        with self._lock:
            self._generation = generation


def same_version(model: ServedModel, version) -> bool:
    """Whether ``model`` serves ``version`` (same number and creation time)."""
    # Number AND creation time: an emptied-and-refilled registry reuses numbers.
    return (model.version.number, model.version.created_at) == (version.number, version.created_at)


class HotSwapper:
    """Keeps a :class:`ModelSlot` on the registry's validated version (a daemon thread)."""

    def __init__(
        self,
        registry: ModelRegistry,
        slot: ModelSlot,
        *,
        poll_interval: float = 1.0,
        device: str = "cpu",
        backoff: AbstractBackoff | None = None,
        on_swap: Callable[[ServedModel], None] | None = None,
        on_registry_state: Callable[[bool], None] | None = None,
        on_load_failure: Callable[[int, Exception], None] | None = None,
    ) -> None:
        self.registry = registry
        self.slot = slot
        self.poll_interval = poll_interval
        self.device = device
        self.backoff = backoff or EqualJitterBackoff(cap=5.0, base=0.1)
        self._on_swap = on_swap
        self._on_registry_state = on_registry_state
        self._on_load_failure = on_load_failure
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._registry_up: bool | None = None  # None: not contacted yet
        self._failed_loads: dict[tuple[int, int], str] = {}
        self.last_error: str | None = None

    # ------------------------------------------------------------- status
    @property
    def registry_up(self) -> bool:
        """Whether the last contact with the registry succeeded."""
        return bool(self._registry_up)

    def _set_registry_up(self, up: bool) -> None:
        if up != self._registry_up:
            if self._registry_up is not None or not up:
                log.warning(
                    "model registry %s", "reachable again" if up else "unreachable; serving what we have"
                )
            self._registry_up = up
            if self._on_registry_state is not None:
                self._on_registry_state(up)

    # ------------------------------------------------------------ control
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="streamlearn-hot-swap", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def sync_now(self) -> ServedModel | None:
        """Load and serve the registry's current version right away (admin actions, startup).

        Raises
        ------
        RegistryUnavailableError, RegistryError
            As :meth:`ServedModel.load`; the served model is unchanged then.
        """
        try:
            pointer = self.registry.pointer()
        except RegistryUnavailableError:
            self._set_registry_up(False)
            raise
        self._set_registry_up(True)
        self._apply(pointer, raise_errors=True)
        return self.slot.model

    def wait_for_version(self, number: int, timeout: float) -> bool:
        """Block until the slot serves ``number`` (tests, the demo); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                model = self.slot.model
                if model is not None and model.version.number == number:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.1))

    # --------------------------------------------------------------- loop
    def _run(self) -> None:
        failures = 0
        self.backoff.reset()
        while not self._stop.is_set():
            try:
                first = True
                for pointer in self.registry.subscribe(self.poll_interval, self._stop):
                    failures = 0
                    self._set_registry_up(True)
                    if first:
                        # The first pointer of a (re)connection is the truth, see ModelSlot.rebase.
                        self.slot.rebase(pointer[1])
                        first = False
                    self._apply(pointer, raise_errors=False)
            except RegistryUnavailableError as exc:
                failures += 1
                self.last_error = str(exc)
                self._set_registry_up(False)
                delay = self.backoff.compute(failures)
                log.debug("registry down (attempt %d), retrying in %.2fs: %s", failures, delay, exc)
                self._stop.wait(delay)
            except Exception as exc:  # noqa: BLE001 -- the swapper must outlive any one bad event
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("hot swap loop error; retrying")
                self._stop.wait(self.backoff.compute(failures))

    def _apply(self, pointer: Pointer, *, raise_errors: bool) -> None:
        number, generation = pointer
        if number is None:
            return  # an empty (or emptied) registry: keep serving what we have
        current = self.slot.model
        version = self.registry.get(number)
        if current is not None and same_version(current, version):
            # Same version, newer decision (e.g. re-promoted): just record the generation.
            self.slot.swap(current, generation)
            return
        if not raise_errors and (number, generation) in self._failed_loads:
            return  # do not hammer a version whose weights are broken
        try:
            model = ServedModel.load(self.registry, number, device=self.device, version=version)
        except RegistryUnavailableError:
            raise
        except RegistryError as exc:
            self._failed_loads[(number, generation)] = str(exc)
            self.last_error = str(exc)
            log.error("cannot serve validated version %d, keeping the current model: %s", number, exc)
            if self._on_load_failure is not None:
                self._on_load_failure(number, exc)
            if raise_errors:
                raise
            return
        if self.slot.swap(model, generation):
            log.info("now serving model version %d (generation %d)", number, generation)
            if self._on_swap is not None:
                self._on_swap(model)
        with self._changed:
            self._changed.notify_all()
