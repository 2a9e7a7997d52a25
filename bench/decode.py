"""Decoding alone, in process: rows/s of each JSON decoder on the records the other benches produce.

No broker: the values are built in memory and decoded poll by poll (``--poll``
records each), best of ``--repeats``, with the cyclic collector paused as the
codec pauses it. Three kinds of polls:

* **clean**: bench/pipeline's records (``{"id", "ts", "x": [10 floats], "y"}``);
* **poison**: the poison stream of :mod:`stream.testing.poison` (3 features,
  every bad-record kind, ~1 bad record in 60; the multi-megabyte ones left out);
* **named**: click records of named mixed-type fields (the feature-schema path).

Rows (a decoder that only parses is marked *parse only*: it builds no arrays
and judges nothing, so it is a floor for that library, not a codec):

* ``codec``: :meth:`JsonCodec.decode` as the engine calls it;
* ``orjson batch + reference``: the path before the typed tier (orjson per value,
  arrays built in a few passes, the whole poll record by record on any bad record);
* ``reference``: record by record, the path every other must agree with;
* parse-only candidates: orjson per value and over one joined array, msgspec typed
  per value and over one joined array, pyarrow's JSON reader over newline-joined values.

    python -m bench.decode                # 100,000 rows per kind, polls of 5,000
    python -m bench.decode --rows 20000 --poll 1000
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Callable

import msgspec
import numpy as np
import orjson

from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.features import infer_schema
from stream.core.poll import PollColumns
from stream.core.records import RawRecord
from stream.sources.produce import synthetic_rows
from stream.testing.click_stream import click_records
from stream.testing.poison import N_FEATURES as POISON_FEATURES
from stream.testing.poison import poison_stream

PIPELINE_FEATURES = 10


def polls_of(values: list[bytes | None], size: int) -> list[PollColumns]:
    recs = [RawRecord("bench", i % 3, i, 1_700_000_000_000 + i, None, v) for i, v in enumerate(values)]
    return [PollColumns.from_records(recs[i : i + size]) for i in range(0, len(recs), size)]


def rate(fn: Callable[[], object], rows: int, repeats: int) -> float:
    fn()  # warm-up: builds the typed decoder, locks label maps
    best = float("inf")
    for _ in range(repeats):
        gc.disable()
        try:
            started = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - started)
        finally:
            gc.enable()
    return rows / best


def codec_rows(make: Callable[[], JsonCodec], polls: list[PollColumns]) -> dict[str, Callable[[], object]]:
    codec, before, reference = make(), make(), make()

    def orjson_batch(cols: PollColumns):
        out = before._decode_fast(cols)
        return out if out is not None else before._decode_slow(cols.records())

    return {
        "codec (typed tier + fallbacks)": lambda: [codec.decode(p) for p in polls],
        "orjson batch + reference (before)": lambda: [orjson_batch(p) for p in polls],
        "reference (record by record)": lambda: [reference._decode_slow(p.records()) for p in polls],
    }


def parse_only_rows(polls: list[PollColumns], n_features: int) -> dict[str, Callable[[], object]]:
    record = msgspec.defstruct(
        "Record",
        [("x", list[float]), ("y", int), ("ts", int | None, None), ("id", str | int | None, None)],
        forbid_unknown_fields=True,
        gc=False,
    )
    one, many = msgspec.json.Decoder(record).decode, msgspec.json.Decoder(list[record]).decode
    rows = {
        "orjson per value (parse only)": lambda: [list(map(orjson.loads, p.values)) for p in polls],
        "orjson joined array (parse only)": lambda: [
            orjson.loads(b"[" + b",".join(p.values) + b"]") for p in polls
        ],
        "msgspec typed per value (parse only)": lambda: [list(map(one, p.values)) for p in polls],
        "msgspec typed joined array (parse only)": lambda: [
            many(b"[" + b",".join(p.values) + b"]") for p in polls
        ],
    }
    try:
        import pyarrow as pa
        import pyarrow.json as pa_json
    except ImportError:
        return rows
    schema = pa.schema(
        [("id", pa.string()), ("ts", pa.int64()), ("x", pa.list_(pa.float64())), ("y", pa.int64())]
    )
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")

    def arrow(cols: PollColumns) -> np.ndarray:
        table = pa_json.read_json(pa.BufferReader(b"\n".join(cols.values)), parse_options=options)
        return table.column("x").combine_chunks().flatten().to_numpy().reshape(-1, n_features)

    rows["pyarrow.json over lines, X only (parse only)"] = lambda: [arrow(p) for p in polls]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000, help="records per kind")
    parser.add_argument(
        "--poll", type=int, default=5_000, help="records per poll (bench/pipeline's max_poll_records)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    clean = [
        orjson.dumps(r)
        for r in synthetic_rows("hyperplane", args.rows, n_features=PIPELINE_FEATURES, id_prefix="1a2b3c4d-")
    ]
    poison = [
        r.value
        for r in poison_stream(n_good=args.rows, copies=max(1, args.rows // 2_000), seed=3).records
        if r.value is None or len(r.value) < 100_000
    ]
    clicks = list(click_records(args.rows, seed=0))
    named = [orjson.dumps(r) for r in clicks]
    schema, _ = infer_schema([r["x"] for r in clicks[:2_000]])

    kinds = {
        "clean": (clean, lambda: JsonCodec(CodecConfig(n_features=PIPELINE_FEATURES))),
        "poison": (poison, lambda: JsonCodec(CodecConfig(n_features=POISON_FEATURES))),
        "named": (named, lambda: JsonCodec(CodecConfig(schema=schema))),
    }
    table: dict[str, dict[str, float]] = {}
    for kind, (values, make) in kinds.items():
        polls = polls_of(values, args.poll)
        rows = codec_rows(make, polls)
        if kind == "clean":
            rows.update(parse_only_rows(polls, PIPELINE_FEATURES))
        if kind == "named":
            rows = {"codec (typed tier + fallbacks)": rows["codec (typed tier + fallbacks)"]}
        for name, fn in rows.items():
            table.setdefault(name, {})[kind] = rate(fn, len(values), args.repeats)
            print(f"  {kind:<7} {name:<46} {table[name][kind]:>12,.0f} rows/s", flush=True)
    names = list(kinds)
    print()
    print(f"| decoder (polls of {args.poll:,}) | " + " | ".join(f"{k} rows/s" for k in names) + " |")
    print("|---|" + "---:|" * len(names))
    for name, by_kind in table.items():
        cells = [f"{by_kind[k]:,.0f}" if k in by_kind else "" for k in names]
        print(f"| {name} | " + " | ".join(cells) + " |")
    ref = table["reference (record by record)"]
    codec, before = table["codec (typed tier + fallbacks)"], table["orjson batch + reference (before)"]
    print(
        "codec / before: "
        + ", ".join(f"{k} {codec[k] / before[k]:.2f}x" for k in names if k in before)
        + "; codec / reference: "
        + ", ".join(f"{k} {codec[k] / ref[k]:.2f}x" for k in names if k in ref)
    )


if __name__ == "__main__":
    main()
