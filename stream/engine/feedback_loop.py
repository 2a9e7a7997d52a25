"""The engine's side of delayed labels: join them with their predictions, score the versions that served, report.

A :class:`FeedbackLoop` sits between a poll and the codec
(:meth:`stream.engine.loop.Engine._ingest`): :meth:`FeedbackLoop.take` turns
a poll of both topics into the poll of joined training records
(:mod:`stream.engine.join`) and scores each joined pair against the version
that answered it (:mod:`stream.engine.live`). Both are one checkpoint
component, saved with the positions of both topics. After each checkpoint
:meth:`FeedbackLoop.report` records the live-metrics document in the
registry, for the API's ``/metrics`` and ``GET /models/{version}`` and for
``streamlearn inspect``; a version that newly does worse live than on its
holdout gets an audit event (``live_below_holdout``) with the evidence.

Examples
--------
>>> import tempfile
>>> from serving.registry.factory import open_registry
>>> from stream.core.poll import PollColumns
>>> from stream.core.records import RawRecord
>>> registry = open_registry(tempfile.mkdtemp())
>>> loop = FeedbackLoop(JoinConfig(labels_topic="labels"), registry)
>>> poll = PollColumns.from_records([
...     RawRecord("predictions", 0, 0, 1_000, b"a", b'{"id":"a","x":[1.0],"version":1,"prediction":1.5}'),
...     RawRecord("labels", 0, 0, 1_500, b"a", b'{"id":"a","y":2.0}'),
... ])
>>> joined, letters, _ = loop.take(poll)
>>> joined.record(0).value, letters
(b'{"id":"a","x":[1.0],"y":2.0,"ts":1000}', [])
>>> loop.report(); registry.live()["served"]["1"]["mae"]
0.5
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Mapping, NamedTuple

from stream.core.deadletter import DeadLetter
from stream.core.poll import PollColumns
from stream.engine.join import JoinConfig, LabelJoin
from stream.engine.live import LiveScores

if TYPE_CHECKING:
    from serving.registry.base import ModelRegistry

__all__ = ["FeedbackLoop", "JoinConfig", "Taken"]

log = logging.getLogger(__name__)

#: After a failed report, the registry is left alone this long (seconds).
REPORT_BACKOFF_S = 30.0


class Taken(NamedTuple):
    """A poll through the join: the joined records, every dead letter, and the bad records among them
    (``refused``: a prediction whose label never came is the loop working, not a bad record)."""

    poll: PollColumns
    letters: list[DeadLetter]
    refused: list[DeadLetter]


class FeedbackLoop:
    """The join, the live scores and their report; see the module docstring.

    ``registry`` ``None``: nothing is reported (the scores are still kept and checkpointed).
    """

    def __init__(self, config: JoinConfig, registry: ModelRegistry | None = None) -> None:
        self.config = config
        self.registry = registry
        self.join = LabelJoin(config)
        self.live = LiveScores()
        self._holdout: dict[int, Mapping[str, float]] = {}
        self._flagged: set[str] = set()
        self._quiet_until = 0.0

    def take(self, poll: PollColumns, now_ms: int = 0) -> Taken:
        """The joined training records ``poll`` (read at ``now_ms``, engine clock) completes, as a poll, the
        dead letters of the join, and which of them are bad records (see :class:`Taken`)."""
        out = self.join.feed(poll.records(), now_ms)
        for pair in out.pairs:
            try:
                self.live.add(pair)
            except (TypeError, ValueError, IndexError, OverflowError) as exc:
                # A score is a report: a pair it cannot score is still learned, never a crash on every restart.
                log.warning("could not score the prediction for id %r live: %s", pair.prediction.id, exc)
        joined = PollColumns.from_records(out.records) if out.records else PollColumns.empty()
        return Taken(joined, out.letters, out.refused)

    # ------------------------------------------------------------ checkpoint
    def snapshot(self) -> dict:
        return {"join": self.join.snapshot(), "live": self.live.snapshot(), "flagged": sorted(self._flagged)}

    def restore(self, snap: dict | None) -> None:
        """Take the checkpointed state (``None``: start empty)."""
        snap = snap or {}
        self.join = LabelJoin.from_snapshot(snap.get("join"), self.config)
        self.live = LiveScores.from_snapshot(snap.get("live"))
        self._flagged = set(snap.get("flagged", ()))

    # ------------------------------------------------------------ reporting
    def document(self) -> dict:
        """The live-metrics document as of now (what :meth:`report` records)."""
        return self.live.document(self._holdout_of, join=self.join.report())

    def report(self) -> None:
        """Record the live metrics in the registry (after a checkpoint: the figures are committed ones)."""
        if self.registry is None or time.monotonic() < self._quiet_until:
            return
        from stream.core.errors import RegistryError

        try:
            doc = self.document()
            self.registry.record_live(doc)
            self._audit_new_flags(doc)
        except RegistryError as exc:
            # Reporting only, on the learning thread: a registry that is away is not asked again for a while
            # (each ask may wait out its timeouts), and the next report carries the figures up to then.
            self._quiet_until = time.monotonic() + REPORT_BACKOFF_S
            log.warning(
                "could not record live metrics in the registry (next try in %.0fs): %s", REPORT_BACKOFF_S, exc
            )

    def _holdout_of(self, version: int) -> Mapping[str, float] | None:
        if version not in self._holdout:
            from stream.core.errors import VersionNotFoundError

            try:
                metrics = dict(self.registry.get(version).metrics) if self.registry is not None else {}
            except VersionNotFoundError:
                metrics = {}
            if not metrics:
                return None  # not judged yet (or unknown here): asked again next time
            self._holdout[version] = metrics
        return self._holdout[version]

    def _audit_new_flags(self, doc: dict) -> None:
        from serving.registry.versions import AuditEvent

        for role in ("served", "shadow"):
            for version, entry in doc.get(role, {}).items():
                key = f"{role}:{version}"
                if not entry["flagged"] or key in self._flagged:
                    continue
                log.warning(
                    "version %s (%s) does worse live than on its holdout: %s",
                    version,
                    role,
                    entry["flag_reason"],
                )
                self.registry.record_event(
                    AuditEvent(
                        "live_below_holdout",
                        int(version),
                        reason=entry["flag_reason"],
                        details={
                            "role": role,
                            "n": entry["n"],
                            "accuracy": entry["accuracy"],
                            "rmse": entry["rmse"],
                        },
                    )
                )
                self._flagged.add(key)  # once recorded: a failed write is tried again at the next report
