"""Drift detection: delay and false alarms per detector, and change-point F1 on river's TCPD series.

Part 1 -- **error-stream detectors** on synthetic error streams, fed the way
the engine feeds them (micro-batches of ``--batch`` events through
:class:`drift.detectors.ErrorDriftDetector`): a stationary stretch of
``--stationary`` events at a 10% error rate, then either an *abrupt* rise to
``--after`` or a *gradual* one (a linear ramp over ``--ramp`` events). Per
detector, over ``--runs`` seeds:

* false alarms per 100k stationary events (drift signals before the change);
* detection delay: events from the change's start to the first drift signal
  (median; with a ramp, counted from where the ramp starts);
* missed: runs with no signal within ``--horizon`` events of the change;
* throughput of our per-batch wrapper vs the bare river detector fed the same
  events one by one in a Python loop (the peer: what river users write).

Part 2 -- **feature-drift mode on TCPD**: river bundles seven series of the
Turing Change Point Detection benchmark (van den Burg & Williams, 2020) with
their human annotations. Each series is fed row by row to
:class:`drift.detectors.FeatureDriftDetector` (KS with FDR control, and PSI;
their default thresholds, window = length / 10 clamped to 20..100 rows);
each drift signal becomes a change point located inside its window by a CUSUM
split. Scored with TCPDBench's F1 (margin 5, every annotator counted, index 0
always a change point), beside two baselines computed in the same run on the
same series -- *zero* (no change points) and *binary segmentation*
(``ruptures.Binseg``, l2 cost, an MBIC-like penalty ``3 d log(n) sigma^2``,
sigma^2 from first differences) -- and the
figures TCPDBench publishes over its full 37-series set (default settings:
zero 0.669, binseg 0.744).

    python -m bench.drift             # about a minute on 2 cores
    python -m bench.drift --quick     # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np

from drift.detectors import ERROR_DETECTORS, ErrorDriftDetector, FeatureDriftDetector

PUBLISHED_F1 = {"zero": 0.669, "binseg": 0.744}  # TCPDBench, default experiment, mean over its series


# ------------------------------------------------------------------ part 1
def error_stream(
    rng: np.random.Generator, stationary: int, after: float, ramp: int, horizon: int
) -> np.ndarray:
    """0/1 errors: ``stationary`` events at 10%, then a rise to ``after`` (abrupt, or over ``ramp`` events)."""
    n = stationary + horizon
    rate = np.full(n, 0.1)
    t = np.arange(horizon)
    rate[stationary:] = 0.1 + (after - 0.1) * (np.minimum(1.0, (t + 1) / ramp) if ramp > 0 else 1.0)
    return (rng.random(n) < rate).astype(np.float64)


def run_detector(name: str, errors: np.ndarray, batch: int, change: int) -> tuple[int, int | None]:
    """(false alarms before ``change``, delay of the first drift signal at or after it in events, or None)."""
    det = ErrorDriftDetector(name)
    false_alarms, delay = 0, None
    for start in range(0, len(errors), batch):
        signal = det.update(errors[start : start + batch])
        end = start + batch
        if signal.is_drift:
            if end <= change:
                false_alarms += 1
            elif delay is None:
                delay = end - change
                break
    return false_alarms, delay


def raw_river_rate(name: str, errors: np.ndarray) -> float:
    """Events/s of the bare river detector, one ``update`` per event (KSWIN: per batch mean is ours only)."""
    spec = ERROR_DETECTORS[name]
    det = spec.build(**spec.drift_params)
    values = errors.tolist()
    t = time.perf_counter()
    for v in values:
        det.update(v)
        _ = det.drift_detected
    return len(values) / (time.perf_counter() - t)


def ours_rate(name: str, errors: np.ndarray, batch: int) -> float:
    det = ErrorDriftDetector(name)
    t = time.perf_counter()
    for start in range(0, len(errors), batch):
        det.update(errors[start : start + batch])
    return len(errors) / (time.perf_counter() - t)


def part_one(args: argparse.Namespace) -> dict:
    results = {}
    for kind, ramp in (("abrupt", 0), ("gradual", args.ramp)):
        print(
            f"\n### Error-stream detectors, {kind} rise 0.10 -> {args.after:.2f}"
            + (f" over {ramp:,} events" if ramp else "")
            + f" ({args.runs} runs, batches of {args.batch})\n"
        )
        print(
            "| detector | false alarms / 100k stationary | median delay (events) | missed | "
            "ours events/s | river per-event loop events/s | ours / river |"
        )
        print("|---|--:|--:|--:|--:|--:|--:|")
        for name in ERROR_DETECTORS:
            fa, delays, missed = 0, [], 0
            for seed in range(args.runs):
                errors = error_stream(
                    np.random.default_rng(seed), args.stationary, args.after, ramp, args.horizon
                )
                f, d = run_detector(name, errors, args.batch, args.stationary)
                fa += f
                if d is None:
                    missed += 1
                else:
                    delays.append(d)
            probe = error_stream(np.random.default_rng(999), 50_000, args.after, 0, 1)
            ours = ours_rate(name, probe, args.batch)
            river = raw_river_rate(name, probe) if ERROR_DETECTORS[name].per_event else float("nan")
            per100k = fa / (args.runs * args.stationary) * 1e5
            delay = statistics.median(delays) if delays else float("nan")
            results[(kind, name)] = {
                "false_alarms_per_100k": per100k,
                "median_delay": delay,
                "missed": missed,
                "ours_eps": ours,
                "river_eps": river,
            }
            ratio = f"{ours / river:.2f}" if river == river else "n/a (fed batch means)"
            print(
                f"| {name} | {per100k:.1f} | {delay:,.0f} | {missed}/{args.runs} | {ours:,.0f} | "
                f"{river:,.0f} | {ratio} |"
            )
    return results


# ------------------------------------------------------------------ part 2
def true_positives(T: set[int], X: set[int], margin: int = 5) -> set[int]:
    """TCPDBench's matching: each annotation takes the closest unused prediction within ``margin``."""
    X = set(X)
    TP = set()
    for tau in sorted(T):
        close = sorted((abs(tau - x), x) for x in X if abs(tau - x) <= margin)
        if close:
            TP.add(tau)
            X.remove(close[0][1])
    return TP


def f_measure(annotations: dict, predictions, margin: int = 5, alpha: float = 0.5) -> float:
    """TCPDBench's F1 over several annotators (index 0 counts as a change point for all).

    >>> f_measure({1: [10, 20], 2: [11, 20], 3: [10], 4: [0, 5]}, [10, 20])
    1.0
    >>> round(f_measure({1: [50], 2: [55]}, []), 3)  # the zero baseline: precision 1, recall 1/2
    0.667
    """
    Tks = {k: set(v) | {0} for k, v in annotations.items()}
    X = set(int(p) for p in predictions) | {0}
    Tstar = set().union(*Tks.values())
    P = len(true_positives(Tstar, X, margin)) / len(X)
    R = sum(len(true_positives(Tk, X, margin)) / len(Tk) for Tk in Tks.values()) / len(Tks)
    return P * R / (alpha * R + (1 - alpha) * P) if P + R else 0.0


def series(dataset) -> np.ndarray:
    rows = []
    for _, y in dataset:
        rows.append(list(y.values()) if isinstance(y, dict) else [y])
    arr = np.asarray(rows, dtype=np.float64)
    return arr[:, np.nanstd(arr, axis=0) > 0]


def locate(segment: np.ndarray) -> int:
    """The CUSUM split of ``segment`` (rows): where the mean shifts most, summed over standardised columns."""
    z = (segment - segment.mean(axis=0)) / (segment.std(axis=0) + 1e-12)
    cusum = np.cumsum(z, axis=0)
    return int(np.argmax((cusum**2).sum(axis=1))) + 1


def feature_mode(values: np.ndarray, method: str, window: int) -> list[int]:
    """Change points our feature-drift detector finds, fed one row at a time."""
    det = FeatureDriftDetector(method, window=window)  # the detector's defaults: no tuning on these series
    found = []
    for t in range(len(values)):
        ref = det._reference  # read before update: a drift re-references
        if det.update(values[t : t + 1]).is_drift:
            recent = values[max(0, t + 1 - window) : t + 1]
            segment = np.concatenate([ref, recent]) if ref is not None else recent
            found.append(t + 1 - len(segment) + locate(segment))
    return found


def binseg(values: np.ndarray) -> list[int]:
    import ruptures

    n, d = values.shape
    z = (values - values.mean(axis=0)) / (values.std(axis=0) + 1e-12)
    sigma2 = float(np.median(np.var(np.diff(z, axis=0), axis=0)) / 2)  # noise level, robust to shifts
    bkps = ruptures.Binseg(model="l2", min_size=2, jump=1).fit(z).predict(pen=3 * d * np.log(n) * sigma2)
    return [b for b in bkps if b < n]


def part_two(args: argparse.Namespace) -> dict:
    from river.drift import datasets

    names = ["AirlinePassengers", "Apple", "Bitcoin", "BrentSpotPrice", "Occupancy", "RunLog", "UKCoalEmploy"]
    print("\n### Feature-drift mode on river's TCPD series (F1, margin 5)\n")
    print("| series | length | ours KS | ours PSI | zero (this run) | binseg (this run) |")
    print("|---|--:|--:|--:|--:|--:|")
    scores: dict[str, list[float]] = {"ks": [], "psi": [], "zero": [], "binseg": []}
    for name in names[: 3 if args.quick else None]:
        ds = getattr(datasets, name)()
        values = series(ds)
        window = max(20, min(100, len(values) // 10))
        row = {
            "ks": f_measure(ds.annotations, feature_mode(values, "ks", window)),
            "psi": f_measure(ds.annotations, feature_mode(values, "psi", window)),
            "zero": f_measure(ds.annotations, []),
            "binseg": f_measure(ds.annotations, binseg(values)),
        }
        for k, v in row.items():
            scores[k].append(v)
        print(
            f"| {name} | {len(values):,} | {row['ks']:.3f} | {row['psi']:.3f} | {row['zero']:.3f} | "
            f"{row['binseg']:.3f} |"
        )
    means = {k: float(np.mean(v)) for k, v in scores.items()}
    print(
        f"| **mean** | | **{means['ks']:.3f}** | **{means['psi']:.3f}** | {means['zero']:.3f} | "
        f"{means['binseg']:.3f} |"
    )
    print(
        f"\nTCPDBench's published means over its 37 series: zero {PUBLISHED_F1['zero']}, "
        f"binseg {PUBLISHED_F1['binseg']} (default experiment)."
    )
    return means


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--stationary", type=int, default=50_000)
    parser.add_argument("--after", type=float, default=0.2, help="Error rate after the change.")
    parser.add_argument("--ramp", type=int, default=10_000, help="Events of the gradual rise.")
    parser.add_argument(
        "--horizon", type=int, default=20_000, help="Events after the change before 'missed'."
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.stationary, args.horizon = 3, 10_000, 12_000
    warnings.simplefilter("ignore")
    return {"detectors": part_one(args), "tcpd": part_two(args)}


if __name__ == "__main__":
    main()
