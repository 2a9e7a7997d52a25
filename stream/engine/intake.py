"""The engine's intake before windowing: decoding that waits out a schema registry, and repeated ids kept out.

A Schema Registry that does not answer is nobody's record defect: the poll is
decoded again after a backoff (:func:`decode_patiently`) instead of
dead-lettering everything it holds, and a stop request ends the wait with the
poll untaken (its offsets are not advanced, so a restart reads it again).
Repeated event ids are kept out (``dedup_window``).

Examples
--------
>>> from stream.codec.json_codec import CodecConfig, JsonCodec
>>> from stream.core.poll import PollColumns
>>> from stream.testing.doubles import make_records
>>> records = make_records(3, n_features=2)
>>> again = PollColumns.from_records(records + [records[0]._replace(offset=3)])
>>> decoded = JsonCodec(CodecConfig(n_features=2)).decode(again)
>>> events, letters = without_repeats(decoded, again, RecentIds(10), dead_letter=True)
>>> len(events), len(letters)  # the repeat of e0 is refused, as a dead letter
(3, 1)
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np

from stream.codec.json_codec import DecodeResult, JsonCodec
from stream.codec.registry_errors import RegistryUnreachable
from stream.core.deadletter import DeadLetter
from stream.core.poll import PollColumns
from stream.core.records import Events
from stream.core.retry import default_backoff
from stream.engine.dedup import RecentIds, repeated

__all__ = ["decode_patiently", "without_repeats"]

log = logging.getLogger(__name__)


def decode_patiently(
    codec: JsonCodec, poll: PollColumns, stop_requested: Callable[[], bool], sleep=time.sleep
) -> DecodeResult | None:
    """``codec.decode(poll)``, retried with backoff while the schema registry is unreachable; ``None`` if told to stop."""
    backoff, failures = default_backoff(), 0
    while True:
        try:
            return codec.decode(poll)
        except RegistryUnreachable as exc:
            failures += 1
            if stop_requested():
                return None
            delay = backoff.compute(failures)
            if failures == 1 or failures % 10 == 0:
                log.warning("%s; decoding this poll again in %.1fs (attempt %d)", exc, delay, failures)
            sleep(delay)


def without_repeats(
    decoded: DecodeResult, poll: PollColumns, recent: RecentIds, *, dead_letter: bool
) -> tuple[Events, list[DeadLetter]]:
    """The decoded events minus those whose own id was taken in recently (or earlier in this poll).

    Also returns the refused events as dead letters when ``dead_letter`` (else
    an empty list; their number is the events' length difference).
    """
    events = decoded.events
    repeats = repeated(recent, events.ids, decoded.own_ids)
    if not len(repeats):
        return events, []
    letters = []
    if dead_letter:
        rows = decoded.event_rows()
        letters = [
            DeadLetter(poll.record(rows[i]), f"duplicate id: {events.ids[i]!r} was already taken in")
            for i in repeats.tolist()
        ]
    keep = np.ones(len(events), dtype=bool)
    keep[repeats] = False
    return events.take(keep), letters
