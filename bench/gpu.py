"""The GPU path in one prepared run: learner rows/s on CUDA vs CPU, host syncs per batch, the engine's batch cost.

Made for a session that is lent a GPU for a few minutes: one command, one
table, no tuning on the device. It measures, in the same run:

* **learner rows/s** -- ``learn_prequential`` (predict, then learn, as the
  engine does) of the default model on a synthetic 32-feature stream, at
  micro-batches of 1k, 16k and 64k rows, on CPU and on CUDA, for the default
  learner (chunked test-then-train, young steps) and for one step per batch
  (``--score-chunk 0 --young-steps 1``: what large GPU batches want);
* **host syncs per batch** -- under ``torch.cuda.set_sync_debug_mode("warn")``
  every call that waits for the device warns; the table shows how many a
  batch makes (the target: none on the learning path, the loss read only at
  report time);
* **the engine** -- :mod:`bench.batch_cost` with the learner on CUDA.

The retrain's NCCL row is :mod:`bench.retrain`'s own (it adds it when CUDA is
present): ``python -m bench.retrain --events 60000``.

    python -m bench.gpu                 # on the GPU machine; ~3 minutes
    python -m bench.gpu --device cpu    # the same script here, to check it runs

Target (issue 20): on an H100/H200-class GPU, >= 2M rows/s for the default model.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

TARGET_ROWS_PER_S = 2_000_000
BATCHES = (1_024, 16_384, 65_536)
VARIANTS = {"default": {}, "one step per batch": {"score_chunk": 0, "young_steps": 1}}


def _learner(device: str, n_features: int, options: dict):
    from learners.choice import LearnerChoice

    return LearnerChoice(n_classes=2, device=device, **options).factory()(n_features)


def _stream(rows: int, n_features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, n_features)).astype(np.float32)
    w = rng.standard_normal(n_features).astype(np.float32)
    return X, (X @ w > 0).astype(np.int64)


def rows_per_second(
    device: str, batch: int, options: dict, *, n_features: int = 32, seconds: float = 3.0
) -> float:
    """Rows learned per second of wall time, over as many batches as fit in ``seconds``."""
    import torch

    learner = _learner(device, n_features, options)
    X, y = _stream(batch * 4, n_features)
    learner.learn_prequential(X[:batch], y[:batch])  # warm-up: kernels, allocator
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    rows, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        i = (rows // batch) % 4
        learner.learn_prequential(X[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch])
        rows += batch
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return rows / (time.perf_counter() - started)


def syncs_per_batch(batch: int, options: dict, *, n_features: int = 32, batches: int = 10) -> float | None:
    """Host syncs per ``learn_prequential`` call on CUDA (``None`` without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    learner = _learner("cuda", n_features, options)
    X, y = _stream(batch, n_features)
    learner.learn_prequential(X, y)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(batches):
                learner.learn_prequential(X, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught) / batches


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="the accelerator to compare with the CPU")
    parser.add_argument("--seconds", type=float, default=3.0, help="per cell")
    parser.add_argument("--skip-engine", action="store_true", help="leave out bench.batch_cost")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    device = args.device if args.device == "cpu" or torch.cuda.is_available() else "cpu"
    if device != args.device:
        print(f"no CUDA device here: measuring on {device} only (the figures are not the GPU's)")
    devices = ["cpu"] if device == "cpu" else ["cpu", device]
    results: dict = {"device": torch.cuda.get_device_name(0) if device != "cpu" else "cpu", "cells": []}
    print("| learner | batch | " + " | ".join(f"rows/s {d}" for d in devices) + " | syncs/batch | target |")
    print("|---|--:|" + "--:|" * len(devices) + "--:|---|")
    for name, options in VARIANTS.items():
        for batch in BATCHES:
            rates = {d: rows_per_second(d, batch, options, seconds=args.seconds) for d in devices}
            syncs = syncs_per_batch(batch, options) if device != "cpu" else None
            best = max(rates.values())
            verdict = (
                "PASS"
                if device != "cpu" and best >= TARGET_ROWS_PER_S
                else ("MISS" if device != "cpu" else "n/a")
            )
            cells = " | ".join(f"{rates[d]:,.0f}" for d in devices)
            print(f"| {name} | {batch:,} | {cells} | {'-' if syncs is None else f'{syncs:g}'} | {verdict} |")
            results["cells"].append(
                {"learner": name, "batch": batch, "rows_per_s": rates, "syncs_per_batch": syncs}
            )
    if not args.skip_engine:
        from bench import batch_cost

        print()
        batch_cost.main(["--events", "50000", "--windows", "100,1000", "--device", device])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
