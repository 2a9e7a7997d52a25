"""Records that must never stop learning: one table of bad-record kinds, for tests and operators.

Each :class:`PoisonKind` is a record a real stream can carry -- broken JSON,
a Kafka tombstone, a 5 MB value, 3,000-deep nesting, numbers beyond float32
-- with the reason kind (:attr:`stream.core.deadletter.DeadLetter.reason_kind`)
the engine must dead-letter it with. :func:`poison_stream` interleaves them
with good records (unique ids) and records that repeat a good id, so one
stream checks the whole promise: every good record learned exactly once,
every bad one dead-lettered with its reason, the daemon never stopping.

Examples
--------
>>> stream = poison_stream(n_good=200, seed=1)
>>> len(stream.good_ids), len(stream.bad) > 30, stream.records[0].key is None or True
(200, True, True)
>>> sorted({kind.expected for kind in POISON_KINDS})[:3]
['bad features', 'bad id', 'bad json']
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import orjson

N_FEATURES = 3


@dataclass(frozen=True)
class PoisonKind:
    """One kind of bad record: its value (``None`` = tombstone), key, and the expected reason kind."""

    name: str
    value: bytes | None
    expected: str
    key: bytes | None = None
    #: True for kinds a file (JSONL line) can carry; tombstones and keys cannot.
    in_files: bool = True


def _doc(**fields) -> bytes:
    return orjson.dumps({"id": "bad", "x": [0.1, 0.2, 0.3], "y": 1, **fields})


def _raw(text: str) -> bytes:
    return text.encode()


POISON_KINDS: tuple[PoisonKind, ...] = (
    PoisonKind("invalid json", _raw('{"id": "bad", "x": [1, 2'), "bad json"),
    PoisonKind("non-UTF-8 bytes", b"\xff\xfe\x00\x9c garbage \xc3\x28", "bad json"),
    PoisonKind("empty value", b"", "empty value", in_files=False),
    PoisonKind("whitespace only", b"   ", "bad json", in_files=False),  # a file reader skips blank lines
    PoisonKind("tombstone with key", None, "empty value", key=b"user-7", in_files=False),
    PoisonKind("tombstone without key", None, "empty value", in_files=False),
    PoisonKind("too few features", _doc(x=[1.0, 2.0]), "wrong dimension"),
    PoisonKind("too many features", _doc(x=[1.0, 2.0, 3.0, 4.0]), "wrong dimension"),
    PoisonKind("zero features", _doc(x=[]), "wrong dimension"),
    PoisonKind("NaN literal", _raw('{"id": "bad", "x": [NaN, 1, 2], "y": 0}'), "bad json"),
    PoisonKind("Infinity literal", _raw('{"id": "bad", "x": [Infinity, 1, 2], "y": 0}'), "bad json"),
    PoisonKind(
        "1e39 (beyond float32)", _raw('{"id": "bad", "x": [1e39, 1, 2], "y": 0}'), "non-finite feature"
    ),
    PoisonKind(
        "10^40 integer",
        _raw('{"id": "bad", "x": [' + "1" + "0" * 40 + ', 1, 2], "y": 0}'),
        "non-finite feature",
    ),
    PoisonKind("string in x", _doc(x=["a", 1, 2]), "bad features"),
    PoisonKind("x as a number", _doc(x=5), "bad features"),
    PoisonKind("x as an object", _doc(x={"a": 1}), "bad features"),
    PoisonKind("missing x", orjson.dumps({"id": "bad", "y": 1}), "missing features"),
    PoisonKind("missing y", orjson.dumps({"id": "bad", "x": [1, 2, 3]}), "missing label"),
    PoisonKind("null label", _doc(y=None), "missing label"),
    PoisonKind("negative label", _doc(y=-1), "bad label"),
    PoisonKind("fractional label", _doc(y=0.5), "bad label"),
    PoisonKind("string label", _doc(y="1"), "bad label"),
    PoisonKind("out-of-range label", _doc(y=2), "bad label"),
    PoisonKind("bad timestamp", _doc(ts="yesterday"), "bad timestamp"),
    PoisonKind("1000-character id", _doc(id="i" * 1000), "bad id"),
    PoisonKind("top-level array", _raw("[1, 2, 3]"), "bad json"),
    PoisonKind("top-level string", _raw('"hello"'), "bad json"),
    PoisonKind(
        "3,000-deep nesting", _raw('{"id": "bad", "x": ' + "[" * 3000 + "]" * 3000 + ', "y": 0}'), "bad json"
    ),
    PoisonKind("1.5 MB record", _doc(pad="p" * 1_500_000), "oversize"),
    PoisonKind("5 MB record", _doc(pad="p" * 5_000_000), "oversize"),
)


@dataclass(frozen=True)
class PoisonRecord:
    """One record of a poison stream: its key, value and what the engine must do with it."""

    key: bytes | None
    value: bytes | None
    #: The expected reason kind; ``None`` for a good record (to be learned once).
    expected: str | None
    kind: str
    #: Records of one ``lane`` must stay in order (a repeat after its original).
    lane: int = 0


@dataclass(frozen=True)
class PoisonStream:
    records: list[PoisonRecord]
    good_ids: list[str]

    @property
    def bad(self) -> list[PoisonRecord]:
        return [r for r in self.records if r.expected is not None]


def poison_stream(
    n_good: int = 6_000,
    *,
    repeats: int = 31,
    lanes: int = 3,
    seed: int = 0,
    files: bool = False,
    copies: int = 1,
) -> PoisonStream:
    """Good records with unique ids, ``copies`` of every poison kind, and ``repeats`` records reusing a good id.

    Records are spread over ``lanes`` (send each lane to one partition): a
    repeat always follows its original in the same lane, so the original is
    the one learned. ``files=True`` leaves out what a JSONL line cannot carry.
    """
    rng = random.Random(seed)
    records: list[PoisonRecord] = []
    good_ids = []
    for i in range(n_good):
        x = [rng.uniform(-1, 1) for _ in range(N_FEATURES)]
        eid = f"good-{seed}-{i}"
        good_ids.append(eid)
        value = orjson.dumps({"id": eid, "x": x, "y": int(x[0] + x[1] > 0)})
        records.append(PoisonRecord(None, value, None, "good", lane=i % lanes))
    kinds = [k for k in POISON_KINDS if k.in_files or not files] * copies
    for kind in kinds:
        at = rng.randrange(len(records) + 1)
        records.insert(
            at, PoisonRecord(kind.key, kind.value, kind.expected, kind.name, lane=rng.randrange(lanes))
        )
    for _ in range(repeats):
        original_index = rng.randrange(n_good // 2)
        position = [j for j, r in enumerate(records) if r.kind == "good"][original_index]
        original = records[position]
        at = rng.randrange(position + 1, len(records) + 1)
        records.insert(
            at, PoisonRecord(None, original.value, "duplicate id", "repeated id", lane=original.lane)
        )
    return PoisonStream(records, good_ids)
