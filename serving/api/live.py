"""The registry's live-metrics document as the API reads it: cached, defensive, and as Prometheus gauges.

The daemon writes ``registry.live()`` at each checkpoint: per version, how its
answers fared against the labels that came back (docs/serving.md#feedback-loop).
:class:`LiveMetrics` reads it at most once per ``ttl_s`` (a scrape every
second, or many of them, costs one registry read), keeps the last good
document when the registry is down, and never raises: ``/metrics`` must answer
whatever the registry does. As a prometheus_client collector it gives, per
version and role (``served``, ``shadow``): ``streamlearn_live_accuracy``,
``streamlearn_live_log_loss``, ``streamlearn_live_mae``,
``streamlearn_live_labelled_total`` and ``streamlearn_live_flagged``.

Examples
--------
>>> class Reg:
...     def live(self):
...         return {"served": {"7": {"n": 120, "accuracy": 0.9, "log_loss": None, "flagged": False}}}
>>> live = LiveMetrics(Reg())
>>> live.entry(7), live.entry(8, "shadow")
({'n': 120, 'accuracy': 0.9, 'log_loss': None, 'flagged': False}, None)
>>> from prometheus_client import CollectorRegistry, generate_latest
>>> registry = CollectorRegistry()
>>> registry.register(live)
>>> [line for line in generate_latest(registry).decode().splitlines() if line.startswith("streamlearn_live_acc")]
['streamlearn_live_accuracy{role="served",version="7"} 0.9']
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Callable, Iterator

from prometheus_client.core import GaugeMetricFamily

from serving.registry.base import ModelRegistry

log = logging.getLogger(__name__)

__all__ = ["LiveMetrics"]

#: (series, field of a version's entry, help); ``n`` is a gauge named ``_total`` on purpose: it is
#: the daemon's cumulative count, which may restart with it, so no counter semantics are promised.
_GAUGES = (
    ("streamlearn_live_accuracy", "accuracy", "Accuracy of a version's answers on the labels joined so far"),
    ("streamlearn_live_log_loss", "log_loss", "Log loss of a version's answers on the labels joined so far"),
    ("streamlearn_live_mae", "mae", "Mean absolute error of a version's answers on the labels joined so far"),
    ("streamlearn_live_labelled_total", "n", "Labels joined to a version's answers"),
    ("streamlearn_live_flagged", "flagged", "1 if the daemon flagged the version's live figures"),
)


class LiveMetrics:
    """The live document of ``registry``, read at most once per ``ttl_s``."""

    def __init__(
        self, registry: ModelRegistry, *, ttl_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.registry, self.ttl_s, self.clock = registry, ttl_s, clock
        self._doc: dict[str, Any] = {}
        self._read_at: float | None = None
        self._lock = threading.Lock()

    def document(self) -> dict[str, Any]:
        """The document (``{}`` before any, or while the registry has never answered)."""
        with self._lock:
            now = self.clock()
            if self._read_at is None or now - self._read_at >= self.ttl_s:
                self._read_at = now
                try:
                    doc = self.registry.live()
                    self._doc = doc if isinstance(doc, dict) else {}
                except Exception as exc:  # noqa: BLE001 -- down or unreadable: keep the last one
                    log.debug("live metrics not read: %s", exc)
            return self._doc

    def entry(self, version: int, role: str = "served") -> dict[str, Any] | None:
        """One version's figures under ``role`` (``served`` or ``shadow``), or ``None``."""
        entries = self.document().get(role)
        entry = entries.get(str(version)) if isinstance(entries, dict) else None
        return entry if isinstance(entry, dict) else None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        doc = self.document()
        for name, key, help_text in _GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=["version", "role"])
            for role in ("served", "shadow"):
                entries = doc.get(role)
                for version, entry in entries.items() if isinstance(entries, dict) else ():
                    value = _number(entry.get(key) if isinstance(entry, dict) else None)
                    if value is not None:
                        family.add_metric([str(version), role], value)
            yield family


def _number(value: Any) -> float | None:
    """A gauge's value, or ``None`` for a figure that is absent or not a finite number (null: not computed)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None
