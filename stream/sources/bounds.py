"""Where a replay starts and stops: ``--from`` / ``--to`` specs and how they become offsets.

A bound is one of

- ``earliest`` / ``latest`` -- the partition's first offset / its end when the
  replay starts (a bounded replay does not follow new records);
- an offset ``N`` (the same in every partition) or per partition
  ``P:N[,P:N...]`` (``TOPIC:P:N`` with several topics); partitions not named
  get ``earliest`` (for ``--from``) or ``latest`` (for ``--to``);
- a time: ISO-8601 (``2026-11-20T10:00:00Z``, ``2026-11-20``; no zone means
  UTC), epoch milliseconds ``@1700000000000``, ``now``, or relative to now
  (``-2h``, ``-30m``, ``-7d``, ``90m ago``). A time bound is the first offset
  whose record timestamp is at or after it (Kafka's ``offsets_for_times``).

The range is half-open: ``--from`` is included, ``--to`` excluded.

Examples
--------
>>> parse_bound("earliest").kind, parse_bound("1500").offset
('earliest', 1500)
>>> parse_bound("0:100,2:40").per_partition
{('', 0): 100, ('', 2): 40}
>>> parse_bound("2023-11-14T22:13:20Z").ts_ms
1700000000000
>>> parse_bound("-2h", now_ms=1_700_000_000_000).ts_ms
1699992800000
>>> b = parse_bound("0:100", default="latest")
>>> resolve_bound(b, TopicPartition("t", 0), begin=0, end=500), resolve_bound(b, TopicPartition("t", 1), begin=0, end=500)
(100, 500)
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Literal

from stream.core.errors import ConfigError
from stream.core.records import TopicPartition

__all__ = ["RangeBound", "parse_bound", "resolve_bound"]

_UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_RELATIVE = re.compile(r"^(?:now)?\s*-\s*(\d+(?:\.\d+)?)\s*([smhdw])$|^(\d+(?:\.\d+)?)\s*([smhdw])\s+ago$")
_PER_PARTITION = re.compile(r"^(?:(?P<topic>[^:,]+):)?(?P<partition>\d+):(?P<offset>\d+)$")

BoundKind = Literal["earliest", "latest", "offset", "time"]


@dataclass(frozen=True)
class RangeBound:
    """One parsed ``--from``/``--to`` value (see the module docstring).

    ``kind`` is ``earliest``, ``latest``, ``offset`` (``offset`` for every
    partition, or ``per_partition[(topic, partition)]`` with topic ``""`` for
    any topic; ``default`` for partitions not named) or ``time`` (``ts_ms``).
    """

    spec: str
    kind: BoundKind
    offset: int | None = None
    per_partition: dict[tuple[str, int], int] = field(default_factory=dict)
    ts_ms: int | None = None
    default: Literal["earliest", "latest"] = "earliest"


def _time_ms(text: str) -> int | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)  # documented: no zone means UTC
    return int(parsed.timestamp() * 1000)


def parse_bound(
    spec: str, *, default: Literal["earliest", "latest"] = "earliest", now_ms: int | None = None
) -> RangeBound:
    """Parse one bound; ``default`` is what unnamed partitions of a per-partition spec get.

    Raises
    ------
    ConfigError
        The spec is none of the accepted forms (the message lists them).
    """
    text = spec.strip()
    low = text.lower()
    if low in ("earliest", "beginning", "start"):
        return RangeBound(spec, "earliest")
    if low in ("latest", "end"):
        return RangeBound(spec, "latest")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if low == "now":
        return RangeBound(spec, "time", ts_ms=now)
    if text.isdigit():
        return RangeBound(spec, "offset", offset=int(text), default=default)
    if text.startswith("@") and text[1:].isdigit():
        return RangeBound(spec, "time", ts_ms=int(text[1:]))
    rel = _RELATIVE.match(low)
    if rel:
        amount, unit = (rel.group(1), rel.group(2)) if rel.group(1) else (rel.group(3), rel.group(4))
        return RangeBound(spec, "time", ts_ms=now - int(float(amount) * _UNITS_MS[unit]))
    parts = [p.strip() for p in text.split(",")]
    matches = [_PER_PARTITION.match(p) for p in parts]
    if all(matches):
        per = {(m.group("topic") or "", int(m.group("partition"))): int(m.group("offset")) for m in matches}
        return RangeBound(spec, "offset", per_partition=per, default=default)
    ts = _time_ms(text)
    if ts is not None:
        return RangeBound(spec, "time", ts_ms=ts)
    raise ConfigError(
        f"cannot read range bound {spec!r}: use earliest, latest, an offset (1500), per-partition offsets "
        "(0:1500,1:1400 or TOPIC:0:1500), an ISO time (2026-11-20T10:00:00Z), @EPOCH_MS, now, "
        "or a relative time (-2h, -30m, -7d, '90m ago')"
    )


def resolve_bound(
    bound: RangeBound,
    tp: TopicPartition,
    *,
    begin: int,
    end: int,
    offset_for_time: Callable[[TopicPartition, int], int] | None = None,
) -> int:
    """The offset ``bound`` means in partition ``tp`` whose records span ``[begin, end)``; clamped to it.

    ``offset_for_time(tp, ts_ms)`` answers time bounds: the first offset whose
    timestamp is at or after ``ts_ms`` (``end`` when there is none).
    """
    if bound.kind == "earliest":
        return begin
    if bound.kind == "latest":
        return end
    if bound.kind == "time":
        if offset_for_time is None:
            raise ConfigError(
                f"range bound {bound.spec!r} is a time, but this source has no record timestamps; "
                "use row offsets"
            )
        offset = offset_for_time(tp, int(bound.ts_ms))
    elif bound.offset is not None:
        offset = bound.offset
    else:
        offset = bound.per_partition.get(
            (tp.topic, tp.partition), bound.per_partition.get(("", tp.partition))
        )
        if offset is None:
            return begin if bound.default == "earliest" else end
    return min(max(int(offset), begin), end)
