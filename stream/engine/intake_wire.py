"""What the intake process hands the learning process for one poll: a :class:`ShippedPoll`, and its :class:`DecodedPoll`.

With ``--intake process`` (:mod:`stream.engine.intake_process`) a child
process polls the client and decodes; the learning process receives, per
poll, the decoded columns, the codec's dead letters, the poll's positions
(offsets travel with the batch) and -- only when it changed -- the codec's
state. :class:`ShippedPoll` is that message (plain, picklable data);
:meth:`ShippedPoll.columns` turns it back into a :class:`DecodedPoll`, a
:class:`~stream.core.poll.PollColumns` the engine ingests like any other, except
that it skips decoding.

A record of the poll is rebuilt on demand (a duplicate id's dead letter) only
when the child shipped the keys, timestamps and headers (``with_records``).

Examples
--------
>>> from stream.codec.json_codec import CodecConfig, JsonCodec
>>> from stream.core.poll import PollColumns
>>> from stream.testing.doubles import make_records
>>> poll = PollColumns.from_records(make_records(3, n_features=2))
>>> shipped = ShippedPoll.of(poll, JsonCodec(CodecConfig(n_features=2)).decode(poll), with_records=True)
>>> cols = shipped.columns()
>>> len(cols), len(cols.decoded.events), cols.record(2).offset == poll.record(2).offset
(3, 3, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.codec.result import DecodeResult
from stream.core.poll import PollColumns
from stream.core.records import RawRecord, TopicPartition
from stream.sources.base import Outage

__all__ = ["DecodedPoll", "ShippedPoll"]


class DecodedPoll(PollColumns):
    """A poll already decoded by the intake process: ``decoded``, and the codec state after it (``None``: unchanged)."""

    __slots__ = ("decoded", "codec_state")

    def __init__(self, *args: Any, decoded: DecodeResult, codec_state: dict | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.decoded = decoded
        self.codec_state = codec_state


@dataclass(frozen=True)
class ShippedPoll:
    """One poll as it crosses the process boundary (see the module docstring).

    ``lag``, ``outage`` and ``exhausted`` are the child's source's answers
    right after this poll: the learning process answers with them until the next.
    """

    values: list
    topic: np.ndarray
    partition: np.ndarray
    offset: np.ndarray
    positions: dict[TopicPartition, int]
    decoded: DecodeResult
    codec_state: dict | None = None
    keys: list | None = None
    timestamps: np.ndarray | None = None
    headers: list | None = None
    lag: int | None = None
    outage: Outage | None = None
    exhausted: bool = False

    @classmethod
    def of(
        cls, poll: PollColumns, decoded: DecodeResult, *, with_records: bool, **status: Any
    ) -> ShippedPoll:
        """``poll`` and its decoding; the keys, timestamps and headers too when ``with_records``."""
        keys = timestamps = headers = None
        if with_records and len(poll):
            keys, headers = poll.keys_and_headers()
            timestamps = poll.timestamps()
        return cls(
            values=poll.values,
            topic=poll.topic,
            partition=poll.partition,
            offset=poll.offset,
            positions=dict(poll.next_positions()),
            decoded=decoded,
            keys=keys,
            timestamps=timestamps,
            headers=headers,
            **status,
        )

    def columns(self) -> DecodedPoll:
        """The poll as the engine ingests it (records rebuilt on demand)."""
        return DecodedPoll(
            self.values,
            self.topic,
            self.partition,
            self.offset,
            record=self._record,
            timestamps=self._timestamps,
            positions=self.positions,
            decoded=self.decoded,
            codec_state=self.codec_state,
        )

    def _record(self, i: int) -> RawRecord:
        if self.keys is None:
            # INVARIANT: the child ships records whenever the engine may dead-letter a decoded
            # event (duplicate ids); reaching here means that rule was broken, not bad input.
            raise RuntimeError("the intake process did not ship this poll's records")
        return RawRecord(
            str(self.topic[i]),
            int(self.partition[i]),
            int(self.offset[i]),
            int(self.timestamps[i]),
            self.keys[i],
            self.values[i],
            self.headers[i] or (),
        )

    def _timestamps(self) -> np.ndarray:
        if not len(self.values):
            return np.empty(0, np.int64)
        if self.timestamps is None:
            raise RuntimeError("the intake process did not ship this poll's timestamps")
        return self.timestamps
