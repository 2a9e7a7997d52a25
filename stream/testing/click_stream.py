"""A click-like stream over categorical ids with a known ground truth (issue 19's feature bench).

Each record is an impression: a user (Zipf-distributed over ``n_users`` ids)
sees an ad (Zipf over ``n_ads`` ids) on a device, from a country, with a few
numeric fields, some of them missing; the label is a click. The click
probability is a logistic model whose parts are chosen so that each kind of
learner has something to find:

* **user x ad affinity**: the dot product of a latent user vector and a latent
  ad vector (``dim`` dimensions). Embeddings can learn it; a linear model over
  one-hot ids cannot (it has no term for a pair);
* **per-id biases**: a bias per user and per ad, which one-hot or hashed linear
  models can learn for ids they see often enough;
* **context**: device and country effects (a user has a home country and a
  main device), an hour-of-day cycle, ``is_new``;
* **numeric fields**: log ``amount`` and ``age`` enter linearly; ``amount`` is
  missing for ~10% of records and ``age`` for ~20%, and a missing age is itself
  informative (it raises the click odds a little);
* **drift**: at ``drift_at`` (a fraction of the stream) a ``drift_fraction`` of
  the ads get new latent vectors and new biases -- their audience and their
  overall click rate change, the rest of the world does not.

Each record also carries ``"p"``, the probability the label was drawn from (the
Bayes-optimal prediction, outside ``"x"``): the mean log loss of ``p`` against
``y`` is the floor no learner can beat in expectation.

The world (latent vectors, biases, user attributes, which ads drift) depends on
the seed and the world's sizes only; the records are drawn in whole chunks of
:data:`CHUNK` from per-chunk generators, so the same seed gives the same
records, and a record before the drift point does not depend on ``n``.

Examples
--------
>>> recs = list(click_records(3, seed=1, n_users=1000, n_ads=100))
>>> sorted(recs[0]), sorted(recs[0]["x"])
(['id', 'p', 'ts', 'x', 'y'], ['ad', 'age', 'amount', 'country', 'device', 'hour', 'is_new', 'user'])
>>> recs[0]["x"]["user"][:2], recs[0]["x"]["ad"][:2], recs[0]["y"] in (0, 1), 0.0 < recs[0]["p"] < 1.0
('u_', 'a_', True, True)
>>> recs == list(click_records(3, seed=1, n_users=1000, n_ads=100))
True
>>> ClickStream(n_users=0)
Traceback (most recent call last):
...
ValueError: n_users must be >= 1, got 0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

__all__ = ["CHUNK", "COUNTRIES", "DEVICES", "ClickStream", "ClickWorld", "click_columns", "click_records"]

#: Records are drawn this many at a time, each chunk from its own generator (see the module docstring).
CHUNK = 8192
DEVICES = ("ios", "android", "web", "tablet")
#: The share of users whose main device is each of :data:`DEVICES`, and its effect on the logit.
DEVICE_SHARE = (0.45, 0.40, 0.10, 0.05)
DEVICE_EFFECT = (0.3, 0.0, -0.5, 0.2)
COUNTRIES = (
    "US", "FR", "DE", "GB", "ES", "IT", "BR", "IN", "JP", "CA",
    "MX", "NL", "PL", "SE", "AU", "KR", "TR", "AR", "BE", "CH",
)  # fmt: skip
#: Milliseconds of the first record (2023-11-14T22:13:20Z) and the mean gap between records.
T0_MS, GAP_MS = 1_700_000_000_000, 500


@dataclass(frozen=True)
class ClickStream:
    """The configuration of a click stream; :meth:`records` draws it.

    Parameters
    ----------
    n_users, n_ads
        Distinct user and ad ids (``"u_<k>"``, ``"a_<k>"``; ``k`` is the
        popularity rank, 0 the most frequent).
    seed
        Seeds the world and the draws.
    drift_at
        Where the ads drift, as a fraction of the stream (``0.5``: from record
        ``n // 2`` on); ``None``: no drift.
    drift_fraction
        The share of ads that drift (chosen at random, once per world).
    dim
        Dimensions of the latent user and ad vectors.
    affinity
        Standard deviation of the user x ad term on the logit.
    user_zipf, ad_zipf
        Zipf exponents of the user and ad popularity (``p_k ~ 1/(k+1)^s``).
    missing_amount, missing_age
        The share of records whose ``amount`` / ``age`` is ``None``.
    intercept
        The logit's constant (sets the base click rate, ~0.25 by default).
    """

    n_users: int = 100_000
    n_ads: int = 10_000
    seed: int = 0
    drift_at: float | None = 0.5
    drift_fraction: float = 0.3
    dim: int = 8
    affinity: float = 1.5
    user_zipf: float = 0.9
    ad_zipf: float = 1.0
    missing_amount: float = 0.10
    missing_age: float = 0.20
    intercept: float = -1.6

    def __post_init__(self) -> None:
        for name in ("n_users", "n_ads", "dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("drift_fraction", "missing_amount", "missing_age"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.drift_at is not None and not 0.0 <= self.drift_at <= 1.0:
            raise ValueError(
                f"drift_at must be in [0, 1] (a fraction of the stream) or None, got {self.drift_at}"
            )
        if self.affinity < 0 or self.user_zipf < 0 or self.ad_zipf < 0:
            raise ValueError("affinity, user_zipf and ad_zipf must be >= 0")

    def world(self) -> ClickWorld:
        """The fixed parts of the ground truth for this seed and these sizes."""
        return ClickWorld.build(self)

    def drift_row(self, n: int) -> int | None:
        """The first drifted record of a stream of ``n`` (``None``: no drift)."""
        return None if self.drift_at is None else int(round(self.drift_at * n))

    def columns(self, n: int, world: ClickWorld | None = None) -> Iterator[dict[str, np.ndarray]]:
        """The ``n`` records as column chunks of at most :data:`CHUNK` rows (see :func:`click_columns`)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        w = world if world is not None else self.world()
        drift = self.drift_row(n)
        for c, start in enumerate(range(0, n, CHUNK)):
            # Always a whole chunk, then cut: row k's draws do not depend on where the stream ends.
            cols = w.draw(np.random.default_rng([self.seed, 1, c]), start, CHUNK, drift)
            yield {k: v[: n - start] for k, v in cols.items()} if n - start < CHUNK else cols

    def records(self, n: int) -> Iterator[dict]:
        """``n`` records as plain dicts (see :func:`click_records`)."""
        for cols in self.columns(n):
            yield from _as_records(cols)


@dataclass(frozen=True, eq=False)
class ClickWorld:
    """Latent vectors, biases and per-user attributes of one :class:`ClickStream` (arrays indexed by rank)."""

    config: ClickStream
    user_p: np.ndarray  # cumulative popularity, for inverse-CDF draws
    ad_p: np.ndarray
    user_vec: np.ndarray  # (n_users, dim)
    user_bias: np.ndarray
    user_device: np.ndarray  # main device index
    user_country: np.ndarray
    user_age: np.ndarray
    ad_vec: np.ndarray  # (n_ads, dim), before the drift
    ad_bias: np.ndarray
    ad_vec_after: np.ndarray  # after the drift (equal to ad_vec for ads that do not drift)
    ad_bias_after: np.ndarray
    drifted: np.ndarray  # bool per ad
    country_effect: np.ndarray

    @classmethod
    def build(cls, cfg: ClickStream) -> ClickWorld:
        rng = np.random.default_rng([cfg.seed, 0])
        # Each factor ~ N(0, dim^-1/2) so the dot product has unit variance whatever dim is.
        scale = cfg.dim**-0.5
        user_vec = rng.normal(0.0, 1.0, (cfg.n_users, cfg.dim)) * math.sqrt(scale)
        ad_vec = rng.normal(0.0, 1.0, (cfg.n_ads, cfg.dim)) * math.sqrt(scale)
        ad_bias = rng.normal(0.0, 0.7, cfg.n_ads)
        drifted = rng.random(cfg.n_ads) < cfg.drift_fraction
        new_vec = rng.normal(0.0, 1.0, (cfg.n_ads, cfg.dim)) * math.sqrt(scale)
        new_bias = rng.normal(0.0, 0.7, cfg.n_ads)
        n_countries = len(COUNTRIES)
        return cls(
            config=cfg,
            user_p=_zipf_cdf(cfg.n_users, cfg.user_zipf),
            ad_p=_zipf_cdf(cfg.n_ads, cfg.ad_zipf),
            user_vec=user_vec,
            user_bias=rng.normal(0.0, 0.5, cfg.n_users),
            user_device=rng.choice(len(DEVICES), cfg.n_users, p=DEVICE_SHARE),
            user_country=np.minimum(rng.zipf(1.6, cfg.n_users) - 1, n_countries - 1),
            user_age=rng.integers(18, 75, cfg.n_users),
            ad_vec=ad_vec,
            ad_bias=ad_bias,
            ad_vec_after=np.where(drifted[:, None], new_vec, ad_vec),
            ad_bias_after=np.where(drifted, new_bias, ad_bias),
            drifted=drifted,
            country_effect=rng.normal(0.0, 0.3, n_countries),
        )

    def logit(
        self,
        user: np.ndarray,
        ad: np.ndarray,
        device: np.ndarray,
        amount: np.ndarray,
        age: np.ndarray,
        hour: np.ndarray,
        is_new: np.ndarray,
        after_drift: np.ndarray,
    ) -> np.ndarray:
        """The ground-truth logit; ``amount`` / ``age`` are NaN where missing."""
        cfg = self.config
        vec = np.where(after_drift[:, None], self.ad_vec_after[ad], self.ad_vec[ad])
        bias = np.where(after_drift, self.ad_bias_after[ad], self.ad_bias[ad])
        z = cfg.intercept + self.user_bias[user] + bias
        z += cfg.affinity * np.einsum("ij,ij->i", self.user_vec[user], vec)
        z += np.asarray(DEVICE_EFFECT)[device] + self.country_effect[self.user_country[user]]
        z += 0.3 * np.sin(2 * np.pi * (hour - 8) / 24) - 0.4 * is_new
        # A missing amount says nothing; a missing age raises the odds (privacy-minded users click more).
        z += np.where(np.isnan(amount), 0.0, 0.6 * (np.log(np.where(np.isnan(amount), 1.0, amount)) - 3.0))
        z += np.where(np.isnan(age), 0.4, -0.02 * (np.nan_to_num(age, nan=40.0) - 40.0))
        return z

    def draw(self, rng: np.random.Generator, start: int, n: int, drift: int | None) -> dict[str, np.ndarray]:
        """Rows ``start .. start+n`` as columns (see :func:`click_columns`)."""
        cfg = self.config
        row = np.arange(start, start + n)
        user = np.searchsorted(self.user_p, rng.random(n), side="right")
        ad = np.searchsorted(self.ad_p, rng.random(n), side="right")
        device = np.where(rng.random(n) < 0.85, self.user_device[user], rng.integers(0, len(DEVICES), n))
        ts = T0_MS + row * GAP_MS + rng.integers(0, GAP_MS, n)
        hour = (ts // 3_600_000) % 24
        amount = np.round(rng.lognormal(3.0, 0.6, n), 2)
        amount[rng.random(n) < cfg.missing_amount] = np.nan
        age = self.user_age[user].astype(np.float64)
        age[rng.random(n) < cfg.missing_age] = np.nan
        is_new = rng.random(n) < 0.15
        after = row >= drift if drift is not None else np.zeros(n, bool)
        p = 1.0 / (1.0 + np.exp(-self.logit(user, ad, device, amount, age, hour, is_new, after)))
        y = (rng.random(n) < p).astype(np.int64)
        return {
            "row": row,
            "ts": ts,
            "user": user,
            "ad": ad,
            "device": device,
            "country": self.user_country[user],
            "amount": amount,
            "age": age,
            "hour": hour,
            "is_new": is_new,
            "after_drift": after,
            "p": p,
            "y": y,
        }


def _zipf_cdf(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    cdf[-1] = 1.0 + 1e-12  # searchsorted(side="right") of a draw in [0, 1) never runs past the end
    return cdf


def _as_records(cols: dict[str, np.ndarray]) -> Iterator[dict]:
    amount = [None if math.isnan(v) else v for v in cols["amount"].tolist()]
    age = [None if math.isnan(v) else int(v) for v in cols["age"].tolist()]
    device = [DEVICES[i] for i in cols["device"].tolist()]
    country = [COUNTRIES[i] for i in cols["country"].tolist()]
    for row, ts, u, a, d, c, am, ag, h, new, p, y in zip(
        cols["row"].tolist(),
        cols["ts"].tolist(),
        cols["user"].tolist(),
        cols["ad"].tolist(),
        device,
        country,
        amount,
        age,
        cols["hour"].tolist(),
        cols["is_new"].tolist(),
        cols["p"].tolist(),
        cols["y"].tolist(),
    ):
        yield {
            "id": f"c{row}",
            "ts": ts,
            "x": {
                "user": f"u_{u}",
                "ad": f"a_{a}",
                "device": d,
                "country": c,
                "amount": am,
                "age": ag,
                "hour": h,
                "is_new": new,
            },
            "y": y,
            "p": p,
        }


def click_columns(n: int, seed: int = 0, **options) -> Iterator[dict[str, np.ndarray]]:
    """The records of :func:`click_records` as numpy column chunks, for vectorised consumers.

    Keys: ``row``, ``ts``, ``user`` / ``ad`` (rank indices), ``device`` /
    ``country`` (indices into :data:`DEVICES` / :data:`COUNTRIES`), ``amount`` /
    ``age`` (float, NaN where missing), ``hour``, ``is_new``, ``after_drift``,
    ``p`` and ``y``.

    >>> cols = next(click_columns(5, seed=3, n_users=50, n_ads=20))
    >>> sorted(cols)[:4], cols["y"].dtype.name, len(cols["p"])
    (['ad', 'after_drift', 'age', 'amount'], 'int64', 5)
    """
    return ClickStream(seed=seed, **options).columns(n)


def click_records(
    n: int,
    seed: int = 0,
    n_users: int = 100_000,
    n_ads: int = 10_000,
    drift_at: float | None = 0.5,
    **options,
) -> Iterator[dict]:
    """``n`` click records: ``{"id", "ts", "x": {...}, "y": 0|1, "p": P(y=1)}``.

    ``x`` holds ``user`` (``"u_<k>"``), ``ad`` (``"a_<k>"``), ``device`` (one
    of :data:`DEVICES`), ``country`` (one of :data:`COUNTRIES`), ``amount``
    (float or ``None``), ``age`` (int or ``None``), ``hour`` (0..23, from
    ``ts``) and ``is_new`` (bool). ``p`` is the ground-truth click probability
    (not a feature). ``options`` are the other fields of :class:`ClickStream`.

    >>> r = next(click_records(1, seed=0, n_users=10, n_ads=10))
    >>> r["id"], type(r["ts"]).__name__, r["x"]["device"] in DEVICES, r["x"]["hour"] in range(24)
    ('c0', 'int', True, True)
    """
    return ClickStream(n_users=n_users, n_ads=n_ads, seed=seed, drift_at=drift_at, **options).records(n)
