"""The engine's intake before windowing: repeated event ids are kept out (``dedup_window``).

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

import numpy as np

from stream.codec.json_codec import DecodeResult
from stream.core.deadletter import DeadLetter
from stream.core.poll import PollColumns
from stream.core.records import Events
from stream.engine.dedup import RecentIds, repeated

__all__ = ["without_repeats"]


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
