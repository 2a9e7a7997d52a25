"""The validation gate: publish candidates, validate only those the evidence supports.

Every ``every_batches`` micro-batches (or ``every_seconds``, whichever comes
first) the engine hands the gate its learner *before* it learns the newest
batch. That batch is the holdout: data the candidate has not trained on. The
gate scores the candidate and the current validated version on it, publishes
the candidate with parent, offsets, metrics and schema, and then validates it
only if its metric is no worse than the validated version's within
``tolerance``; otherwise it is rejected. The first candidate of an empty
registry is validated on its own evidence (there is nothing to compare with).

The registry is the source of truth for what is validated: the gate reloads
its baseline whenever the pointer's generation moves (an operator promoted or
rolled back through the API, or another run published). A registry that is
unreachable never stops learning: the gate logs, counts the failure and tries
again at the next due point.

Judging is on the learning thread (deterministic, and the EWC anchor of a
validated version is taken on the spot); writing the judged version is a
publisher's job (:mod:`stream.engine.publisher`). With ``background`` the
serialisation, registry writes and fsyncs run on one worker thread: the
learning thread only copies the weights, and while a write is in flight the
gate is not due (the newest model goes out when the worker is free); the
pointer it compares against is the one the worker read after its last write.
The returned version is then the judged draft (number 0, status ``validated``
or ``rejected``) and ``last_version`` / ``counts`` follow when the write is
done. Rollbacks, adoptions and :meth:`ValidationGate.validated` wait for the
write in flight first (rare), so the registry sees every decision in order.

Examples
--------
>>> import tempfile, numpy as np
>>> from learners.neural.learner import TorchLearner
>>> from serving.registry.file_backend import FileRegistry
>>> from stream.testing.doubles import make_batch
>>> gate = ValidationGate(FileRegistry(tempfile.mkdtemp()), GateConfig(every_batches=1, holdout_min_events=1))
>>> learner = TorchLearner(n_features=3, device="cpu")
>>> batch = make_batch(50, n_features=3)
>>> learner.learn_batch(batch.X, batch.y).n_samples
50
>>> gate.after_learn(batch)
>>> holdout = make_batch(50, n_features=3, start_offset=50)
>>> gate.before_learn(learner, holdout, learner.predict_batch(holdout.X), {"n_features": 3}).status
'validated'
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import numpy as np

from learners.base import Learner
from serving.registry.base import ModelRegistry
from serving.registry.versions import Version
from stream.core import metrics
from stream.core.errors import ConfigError, RegistryError, SchemaMismatchError
from stream.core.records import Events, MicroBatch, merge_ranges
from stream.engine.publisher import BackgroundPublisher, InlinePublisher, Publication, Published, Publisher

log = logging.getLogger(__name__)

#: Due points in a row whose batch is too small to judge on, before the gate says so (once).
_TOO_SMALL_WARN_AFTER = 20


@dataclass(frozen=True)
class GateConfig:
    """When to publish a candidate and how much worse than the validated version it may be.

    ``tolerance`` is in the metric's units: accuracy points for
    classification (0.01 = one point), RMSE for regression. A holdout batch
    smaller than ``holdout_min_events`` is not evidence enough; the gate
    waits for the next one. ``background``: write versions on a worker thread
    that never blocks learning (``streamlearn run``); ``False`` writes them on the
    learning thread, deterministically (replays, tests).
    """

    every_batches: int = 20
    every_seconds: float | None = 2.0
    tolerance: float = 0.01
    holdout_min_events: int = 100
    background: bool = False

    def __post_init__(self) -> None:
        if self.every_batches < 1:
            raise ConfigError("the gate's every_batches must be at least 1")
        if self.every_seconds is not None and self.every_seconds <= 0:
            raise ConfigError("the gate's every_seconds must be positive (or None)")
        if self.tolerance < 0:
            raise ConfigError("the gate's tolerance must be >= 0")
        if self.holdout_min_events < 1:
            raise ConfigError("the gate's holdout_min_events must be at least 1")


def holdout_metric(pred: np.ndarray, y: np.ndarray) -> tuple[str, float, bool]:
    """``(name, value, higher_is_better)``: accuracy for integer labels, RMSE otherwise.

    >>> holdout_metric(np.array([1, 0, 1]), np.array([1, 1, 1]))
    ('holdout_accuracy', 0.6666666666666666, True)
    >>> holdout_metric(np.array([1.0, 3.0]), np.array([1.0, 1.0]))[:2]
    ('holdout_rmse', 1.4142135623730951)
    """
    if metrics.is_classification(y):
        return "holdout_accuracy", metrics.accuracy(pred, y), True
    return "holdout_rmse", metrics.rmse(pred, y), False


class ValidationGate:
    """Runs the gate for one engine; see the module docstring.

    ``counts`` tracks published / validated / rejected / failed publications.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        config: GateConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        publisher: Publisher | None = None,
    ) -> None:
        self.registry = registry
        self.config = config or GateConfig()
        self._clock = clock
        if publisher is None:
            publisher = BackgroundPublisher(registry) if self.config.background else InlinePublisher(registry)
        self._publisher = publisher
        # The baseline before the judgement being written, restored if the write fails.
        self._prior: tuple[Learner | None, Version | None, int | None] | None = None
        self._baseline: Learner | None = None
        self._baseline_version: Version | None = None
        self._baseline_generation: int | None = None  # None: not loaded yet
        self._batches_since = 0
        self._last_publish = clock()
        self._ranges: dict[str, list[int]] = {}
        self._pending: list[Events] = []
        self.counts = {"published": 0, "validated": 0, "rejected": 0, "failed": 0}
        self.last_version: Version | None = None
        self._too_small = 0  # due points in a row passed over: the batch was below the holdout minimum
        #: A further condition for a candidate, e.g. a scale-out round's rank 0 judges only the
        #: freshly combined model (:mod:`stream.members.engine`); ``None``: none.
        self.only_when: Callable[[], bool] | None = None

    # ------------------------------------------------------------ engine API
    def after_learn(self, batch: MicroBatch) -> None:
        """Note that ``batch`` was learned (its offsets join the next version's range)."""
        # Ranges are merged at publish time only: np.unique per batch would
        # cost a few percent of the loop.
        self._pending.append(batch.events)
        self._batches_since += 1

    def count_elsewhere(self, batches: int) -> None:
        """Batches learned into the same model elsewhere (another member of a scale-out round) count toward the cadence."""
        self._batches_since += int(batches)

    def due(self) -> bool:
        """A candidate should be judged now: enough batches or seconds, and no write in flight."""
        if self._batches_since == 0 or self._publisher.busy:
            return False
        if self.only_when is not None and not self.only_when():
            return False
        if self._batches_since >= self.config.every_batches:
            return True
        every = self.config.every_seconds
        return every is not None and self._clock() - self._last_publish >= every

    def before_learn(
        self, learner: Learner, batch: MicroBatch, pred: np.ndarray | None, schema: Mapping[str, Any]
    ) -> Version | None:
        """If due and ``batch`` is a big enough holdout, publish ``learner`` and gate it.

        ``pred`` is ``learner.predict_batch(batch.X)`` when the engine already
        computed it (prequential scoring); ``None`` makes the gate compute it.
        Returns the published version, or ``None`` when nothing was published.
        """
        if not self.due():
            return None
        if len(batch) < self.config.holdout_min_events:
            self._passed_over(len(batch))
            return None
        self._too_small = 0
        self._last_publish = self._clock()
        try:
            self._collect()
            return self._publish(learner, batch, pred, schema)
        except RegistryError as exc:
            self._failed(exc)
            return None

    def _passed_over(self, size: int) -> None:
        """Say once, loudly, when small windows keep every version from being published."""
        self._too_small += 1
        if self._too_small == _TOO_SMALL_WARN_AFTER:
            log.warning(
                "no model version has been published for %d due points: every batch (the last had %d "
                "events) is smaller than the gate's holdout minimum of %d; use larger windows or a "
                "smaller --holdout-min-events",
                self._too_small,
                size,
                self.config.holdout_min_events,
            )

    def drain(self, timeout: float | None = None) -> None:
        """Wait for the version being written, then take in its outcome (errors reported as at a due point)."""
        self._publisher.wait(timeout)
        try:
            self._collect()
        except RegistryError as exc:
            self._failed(exc)

    def close(self, timeout: float | None = 60.0) -> None:
        """Finish writing the last judged version and stop the publisher (the engine closes the gate).

        Never raises (the engine closes its source after it): a write that
        failed with an unexpected error is logged with its traceback.
        """
        try:
            self.drain(timeout)
        except Exception:  # noqa: BLE001 -- closing goes on; the error is reported, not lost
            log.exception("writing the last model version failed")
        finally:
            self._publisher.close(timeout)

    def _failed(self, exc: Exception) -> None:
        self.counts["failed"] += 1
        log.warning(
            "could not publish a model version (learning goes on; next try at the next due point): %s", exc
        )

    def validated(self, learner: Learner) -> tuple[Learner, Version] | None:
        """The validated version as a ready-to-predict learner, and its metadata (or ``None``).

        The drift policy's snapshot. Follows the registry's pointer; while the
        registry is unreachable it answers with the baseline it already has.
        """
        self.drain()
        try:
            self._sync_baseline(learner, self.registry.pointer())
        except RegistryError as exc:
            log.warning(
                "could not refresh the validated version from the registry (using the one loaded): %s", exc
            )
        if self._baseline is None or self._baseline_version is None:
            return None
        return self._baseline, self._baseline_version

    def rolled_back(self, version: Version) -> None:
        """The learner was rolled back to ``version``: the next candidate learned what it learned, no more.

        The offset ranges restart from the version's own (events learned
        since then were discarded with the live model), and the next due
        point is counted afresh.
        """
        self.drain()
        self._pending.clear()
        self._ranges = {k: [int(v[0]), int(v[1])] for k, v in version.offsets.items()}
        self._batches_since = 0
        self._last_publish = self._clock()

    def adopted(self, version: Version, learner: Learner) -> None:
        """The engine adopted a reconciled retrain published as ``version``: it is the baseline and the range."""
        self.drain()
        baseline = learner.clone()
        baseline.load_state_dict(learner.state_dict())
        self._baseline, self._baseline_version = baseline, version
        try:
            self._baseline_generation = self.registry.pointer()[1]
        except RegistryError:
            self._baseline_generation = None  # reload at the next due point
        self._pending.clear()
        self._ranges = {k: [int(v[0]), int(v[1])] for k, v in version.offsets.items()}
        self._batches_since = 0
        self._last_publish = self._clock()
        self.last_version = version

    # --------------------------------------------------------------- gating
    def _pointer(self):
        """The validated pointer to judge against: read now, or as the background writer last saw it."""
        seen = self._publisher.observed_pointer
        if seen is not None and self._baseline_generation is not None:
            return seen  # no registry read on the learning thread in the steady state
        return self.registry.pointer()

    def _collect(self) -> None:
        """Take in the outcomes of finished writes; a registry error is raised after all are applied."""
        failure = None
        for outcome in self._publisher.collect():
            failure = self._apply(outcome) or failure
        if failure is not None:
            raise failure

    def _apply(self, outcome: Published) -> Exception | None:
        prior, self._prior = self._prior, None
        if outcome.version is not None:
            self.counts["published"] += 1
            self.last_version = outcome.version
        if outcome.error is not None:
            if not isinstance(outcome.error, RegistryError):
                raise outcome.error  # a bug, not an outage: as loud as on the learning thread
            if prior is not None:  # the judged version is not the validated one after all
                self._baseline, self._baseline_version, self._baseline_generation = prior
            return outcome.error
        version = outcome.version
        self.counts["validated" if version.status == "validated" else "rejected"] += 1
        log.info("model version %d %s: %s", version.number, version.status, version.note)
        if version.status != "validated" and prior is not None:
            # Judged validated against a pointer that moved meanwhile: back to the prior
            # baseline, and the moved pointer reloads the new one at the next due point.
            self._baseline, self._baseline_version, self._baseline_generation = prior
        if version.status == "validated":
            self._baseline_version = version
            self._baseline_generation = outcome.pointer[1] if outcome.pointer is not None else None
        return None

    def _sync_baseline(self, learner: Learner, pointer) -> None:
        """Load the validated version as the baseline when the pointer moved (or first time)."""
        number, generation = pointer
        if generation == self._baseline_generation:
            return
        self._baseline, self._baseline_version = None, None
        if number is not None:
            baseline = learner.clone()
            try:
                baseline.load_state_dict(self.registry.load_state(number))
            except SchemaMismatchError as exc:
                # Another model shape (features, classes, architecture) was validated
                # before: it cannot score this holdout, so candidates stand on their own.
                log.warning(
                    "validated version %d does not fit this learner, so candidates are judged "
                    "without a baseline: %s",
                    number,
                    exc,
                )
            else:
                self._baseline, self._baseline_version = baseline, self.registry.get(number)
        self._baseline_generation = generation

    def _publish(
        self, learner: Learner, batch: MicroBatch, pred: np.ndarray | None, schema: Mapping[str, Any]
    ) -> Version | None:
        self._sync_baseline(learner, self._pointer())
        for events in self._pending:
            merge_ranges(self._ranges, events)
        self._pending.clear()
        y = batch.y
        name, cand, higher = holdout_metric(learner.predict_batch(batch.X) if pred is None else pred, y)
        metrics = {name: cand}
        base = None
        if self._baseline is not None:
            _, base = holdout_metric(self._baseline.predict_batch(batch.X), y)[:2]
            metrics[f"baseline_{name}"] = base
        holdout: dict[str, list[int]] = {}
        merge_ranges(holdout, batch.events)
        parent = self._baseline_version.number if self._baseline_version is not None else None
        state = learner.state_dict()  # a snapshot: learning on does not change what is written
        draft = Version(
            number=0,
            parent=parent,
            offsets={k: list(v) for k, v in self._ranges.items()},
            holdout=holdout,
            metrics=metrics,
            events_learned=int(learner.n_learned),
            schema=dict(schema),
            learner=repr(learner),
        )
        tol = self.config.tolerance
        if base is None:
            ok, why = True, f"first version: {name} {cand:.4f} on {len(batch)} held-out events"
        else:
            ok = cand >= base - tol if higher else cand <= base + tol
            why = (
                f"{name} {cand:.4f} vs validated v{parent} {base:.4f} (tolerance {tol:g}) "
                f"on {len(batch)} held-out events: {'no worse' if ok else 'worse'}"
            )
        self._batches_since = 0
        if ok:
            # The judged state is the baseline from now on; restored if its write fails.
            self._prior = (self._baseline, self._baseline_version, self._baseline_generation)
            baseline = learner.clone()
            baseline.load_state_dict(state)
            self._baseline = baseline
        self._publisher.submit(
            Publication(state, draft, validate=ok, reason=why, judged_at=self._baseline_generation)
        )
        if self._publisher.busy:
            return replace(draft, status="validated" if ok else "rejected", note=why)
        self._collect()  # written already (inline): the registry's record, or its error raised
        return self.last_version

    # ------------------------------------------------------- snapshot/resume
    def snapshot(self) -> dict:
        """Plain data for the checkpoint: the learned offset ranges and counters."""
        for events in self._pending:
            merge_ranges(self._ranges, events)
        self._pending.clear()
        return {
            "ranges": {k: list(v) for k, v in self._ranges.items()},
            "counts": dict(self.counts),
            "batches_since": self._batches_since,
        }

    def restore(self, snapshot: Mapping[str, Any] | None) -> None:
        if not snapshot:
            return
        self._ranges = {str(k): [int(v[0]), int(v[1])] for k, v in snapshot.get("ranges", {}).items()}
        self.counts.update({k: int(v) for k, v in snapshot.get("counts", {}).items()})
        self._batches_since = int(snapshot.get("batches_since", 0))
