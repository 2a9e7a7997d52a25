"""A round's combine across members (threads over a real gloo process group): weighted parameters, exact moments."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
import torch.distributed as dist
from torch import nn

from learners.neural.round_average import average_round, standardizer_moments
from learners.neural.standardize import InputStandardizer, MaskedStandardizer

pytestmark = pytest.mark.unit


class Member(nn.Module):
    def __init__(self, kind) -> None:
        super().__init__()
        self.scale = kind(3)
        self.linear = nn.Linear(3, 2)


def run_round(models: list[nn.Module], events: list[int], start, tmp_path) -> list[int]:
    """``average_round`` on every member at once, each in a thread with its own gloo process group."""
    store = dist.FileStore(str(tmp_path / "store"), len(models))
    totals, errors = [None] * len(models), []

    def member(rank: int) -> None:
        try:
            group = dist.ProcessGroupGloo(dist.PrefixStore("round", store), rank, len(models))

            def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
                group.allreduce([t]).wait()
                return t

            totals[rank] = average_round(
                models[rank], events=events[rank], start=start, all_reduce_sum=all_reduce_sum
            )
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=member, args=(r,)) for r in range(len(models))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return totals


@pytest.mark.parametrize("kind", [InputStandardizer, MaskedStandardizer])
def test_members_end_the_round_with_one_model_weighted_by_their_events(kind, tmp_path):
    torch.manual_seed(0)
    shared = Member(kind)
    seen = torch.randn(20, 3) * 50 + 7
    shared.scale.update(seen)
    start = standardizer_moments(shared)
    models, own_rows, events = [], [], [30, 0, 10]
    for n in events:
        model = copy.deepcopy(shared)
        rows = torch.randn(n, 3) * 3 - 2
        if kind is MaskedStandardizer and n:
            rows[::4, 1] = float("nan")
        model.scale.update(rows)
        with torch.no_grad():
            model.linear.weight.add_(torch.randn_like(model.linear.weight))  # what its own steps did
        models.append(model)
        own_rows.append(rows)
    weights = [m.linear.weight.detach().clone() for m in models]
    totals = run_round(models, events, start, tmp_path)

    assert totals == [40, 40, 40]
    expected = (30 * weights[0] + 10 * weights[2]) / 40  # the member without events weighs nothing
    one = kind(3)
    for rows in (seen, *own_rows):
        one.update(rows)
    for model in models:
        torch.testing.assert_close(model.linear.weight, expected)
        for got, want in zip(standardizer_moments(model)["scale"], (one.count, one.mean, one.m2)):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-6)
        torch.testing.assert_close(model.scale.shift, one.shift)


def test_a_round_where_nobody_learned_changes_nothing(tmp_path):
    models = [Member(InputStandardizer) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    before = copy.deepcopy(models[0].state_dict())
    assert run_round(models, [0, 0], standardizer_moments(models[0]), tmp_path) == [0, 0]
    for name, value in models[1].state_dict().items():
        torch.testing.assert_close(value, before[name])
