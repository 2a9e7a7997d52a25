"""Running moments merged across learners exactly: one round of members == one learner that saw every row."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from learners.neural.moments import combine_round, merge, split
from learners.neural.standardize import InputStandardizer, MaskedStandardizer

pytestmark = pytest.mark.unit


def _rows(draw, n_features: int, *, missing: bool) -> torch.Tensor:
    n = draw(st.integers(0, 12))
    values = draw(
        st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=n * n_features, max_size=n * n_features)
    )
    x = torch.tensor(values, dtype=torch.float64).reshape(n, n_features)
    if missing and n:
        mask = draw(st.lists(st.booleans(), min_size=n * n_features, max_size=n * n_features))
        x[torch.tensor(mask).reshape(n, n_features)] = float("nan")
    return x


@st.composite
def rounds(draw, missing: bool):
    """Rows seen before the round, and each member's own rows (some members may have none)."""
    n_features = draw(st.integers(1, 3))
    start = _rows(draw, n_features, missing=missing)
    members = [_rows(draw, n_features, missing=missing) for _ in range(draw(st.integers(1, 4)))]
    return start, members


def _standardizer(kind, rows: list[torch.Tensor]):
    s = kind(rows[0].shape[1])
    for x in rows:
        s.update(x)
    return s


def _moments(s) -> tuple:
    return s.count.clone(), s.mean.clone(), s.m2.clone()


@pytest.mark.parametrize("kind", [InputStandardizer, MaskedStandardizer])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_round_of_members_has_the_statistics_of_one_learner_that_saw_every_row(kind, data):
    start_rows, member_rows = data.draw(rounds(missing=kind is MaskedStandardizer))
    start = _standardizer(kind, [start_rows])
    members = []
    for rows in member_rows:
        member = copy.deepcopy(start)  # each member starts the round from the shared statistics
        member.update(rows)
        members.append(_moments(member))
    combined = combine_round(_moments(start), members)
    one = _standardizer(kind, [start_rows, *member_rows])
    for got, want in zip(combined, _moments(one)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-9, atol=1e-6)
    # And the combined statistics standardise as the one learner does.
    fresh = kind(start_rows.shape[1])
    fresh.set_moments(*combined)
    x = torch.randn(5, start_rows.shape[1])
    torch.testing.assert_close(fresh(x), one(x), rtol=1e-5, atol=1e-5)


def test_split_undoes_merge_and_an_empty_part_changes_nothing():
    a = (torch.tensor(3.0), torch.tensor([1.0, 2.0]), torch.tensor([4.0, 0.5]))
    b = (torch.tensor(5.0), torch.tensor([-2.0, 7.0]), torch.tensor([1.0, 9.0]))
    for got, want in zip(split(merge([a, b]), a), b):
        torch.testing.assert_close(got, want.to(torch.float64))
    empty = (torch.tensor(0.0), torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.0]))
    for got, want in zip(merge([a, empty]), a):
        torch.testing.assert_close(got, want.to(torch.float64))
    for got in split(a, a):  # nothing left: zeros, not NaN
        assert not torch.isnan(got).any() and float(got.abs().sum()) == 0.0
