"""The streams of :mod:`bench.quality`: river's bundled real sets and synthetic streams with abrupt, gradual and incremental drift.

Every stream is materialised once (``X`` float32, ``y`` int64 class indices,
:class:`bench.learners.Stream`), so every learner sees the same rows in the
same order. The streams :mod:`bench.learners` already builds come from its
:func:`~bench.learners.make_stream`; the others are built here from river's
generators, seeded.

>>> s = make("stagger", 300, seed=1)
>>> s.X.shape, s.n_classes, sorted(set(s.y.tolist()))
((300, 3), 2, [0, 1])
"""

from __future__ import annotations

from bench.learners import Stream, _encode, _from_river, make_stream

#: name -> (kind of drift, what it is); real sets are capped at ``--rows``.
STREAMS = {
    "phishing": ("real", "river bundled, 1,250 rows"),
    "bananas": ("real", "river bundled, 5,300 rows"),
    "segments": ("real", "river ImageSegments, 2,310 rows, 7 classes"),
    "shuttle": ("real", "river bundled, 49,097 rows, 2 classes (river 0.26)"),
    "sea": ("abrupt", "SEA variant 0->1 at mid-stream"),
    "agrawal": ("abrupt", "Agrawal function 0->1 at mid-stream"),
    "agrawal-gradual": ("gradual", "Agrawal function 2->5, centred at mid-stream, over 20% of it"),
    "stagger": ("abrupt", "STAGGER function 0->1->2 at 1/3 and 2/3 (each switch over 1% of the stream)"),
    "led-drift": (
        "abrupt",
        "LED (10% noise, 17 irrelevant features) -> LEDDrift with 7 swapped at mid-stream (over 1%)",
    ),
    "sine": ("gradual", "Sine function 0->2 (reversed), centred at mid-stream, over 5% of it"),
    "hyperplane": ("incremental", "Hyperplane, mag_change 0.001, 5% noise"),
    "rbf": ("incremental", "RandomRBFDrift, change_speed 0.001, 10 of 50 centroids move"),
}
#: Built by bench.learners.make_stream (same names there).
_FROM_LEARNERS = ("phishing", "bananas", "segments", "sea", "agrawal", "hyperplane", "rbf")


def _synthetic(name: str, gen, n: int) -> Stream:
    X, labels, _ = _from_river(gen, n)
    y, k = _encode(labels)
    return Stream(name, X, y, k, STREAMS[name][1])


def make(name: str, n: int, seed: int) -> Stream:
    """Stream ``name`` (a key of :data:`STREAMS`) with at most ``n`` rows, deterministic under ``seed``."""
    from river import datasets
    from river.datasets import synth

    if name not in STREAMS:
        raise ValueError(f"unknown stream {name!r}; known: {', '.join(STREAMS)}")
    if name in _FROM_LEARNERS:
        return make_stream(name, n, seed)
    if name == "shuttle":
        X, labels, _ = _from_river(iter(datasets.Shuttle()), n)
        y, k = _encode(labels)
        return Stream(name, X, y, k, f"river bundled, {len(y)} rows, {k} classes")
    half = max(1, n // 2)
    # "Abrupt": 1% of the stream -- river's sigmoid overflows for a narrower switch far from it.
    abrupt = max(1, n // 100, 4 * n // 700 + 1)
    if name == "agrawal-gradual":
        gen = synth.ConceptDriftStream(
            synth.Agrawal(classification_function=2, seed=seed),
            synth.Agrawal(classification_function=5, seed=seed + 1),
            position=half,
            width=max(1, n // 5),
            seed=seed,
        )
    elif name == "stagger":
        third = max(1, n // 3)
        gen = synth.ConceptDriftStream(
            synth.STAGGER(classification_function=0, seed=seed, balance_classes=True),
            synth.ConceptDriftStream(
                synth.STAGGER(classification_function=1, seed=seed + 1, balance_classes=True),
                synth.STAGGER(classification_function=2, seed=seed + 2, balance_classes=True),
                position=third,
                width=abrupt,
                seed=seed,
            ),
            position=third,
            width=abrupt,
            seed=seed,
        )
    elif name == "led-drift":
        gen = synth.ConceptDriftStream(
            synth.LED(seed=seed, noise_percentage=0.1, irrelevant_features=True),
            synth.LEDDrift(seed=seed + 1, noise_percentage=0.1, irrelevant_features=True, n_drift_features=7),
            position=half,
            width=abrupt,
            seed=seed,
        )
    else:  # sine
        gen = synth.ConceptDriftStream(
            synth.Sine(classification_function=0, seed=seed),
            synth.Sine(classification_function=2, seed=seed + 1),
            position=half,
            width=max(1, n // 20),
            seed=seed,
        )
    return _synthetic(name, gen, n)
