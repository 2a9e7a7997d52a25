"""state_io: pickle-free state round trips, atomic files, corrupt input -> CheckpointError."""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from learners.state_io import (
    dumps_state,
    load_state_file,
    loads_state,
    read_metadata,
    save_state_file,
)
from stream.core.errors import CheckpointError


def assert_same(a, b, path="<root>"):
    """Structural equality that also checks container, key and leaf *types* and dtypes."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a.cpu(), b.cpu()) or (
            a.is_floating_point() and torch.allclose(a.cpu(), b.cpu(), equal_nan=True, rtol=0, atol=0)
        ), path
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and np.shape(a) == np.shape(b), path
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert type(k) is type(list(b)[list(a).index(k)]), f"{path}: key {k!r} changed type"
            assert_same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}/{i}")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, path


def roundtrip(state, **kw):
    return loads_state(dumps_state(state), **kw)


# ------------------------------------------------------------- round trips
def test_nested_plain_data_and_containers_round_trip():
    state = {
        "a": 1,
        "b": 2.5,
        "c": True,
        "d": None,
        "e": "text",
        "big": 2**70,
        "nested": {"list": [1, [2, [3, {"x": (4, 5)}]]], "tuple": ("s", None, False)},
        "empty": {"d": {}, "l": [], "t": ()},
        "nonfinite": [float("nan"), float("inf"), -float("inf")],
        7: "int key",
        -1: {0: "zero"},
    }
    assert_same(state, roundtrip(state))


@pytest.mark.parametrize(
    "tensor",
    [
        torch.zeros(0),
        torch.zeros(0, 5),
        torch.tensor(3.5),
        torch.tensor(7, dtype=torch.int64),
        torch.tensor([True, False, True]),
        torch.arange(6, dtype=torch.int64).reshape(2, 3),
        torch.tensor([1.5, -2.0, 65504.0], dtype=torch.float16),
        torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
        torch.randn(3, 4, dtype=torch.float64),
        torch.tensor([0, 255], dtype=torch.uint8),
    ],
    ids=lambda t: f"{t.dtype}-{tuple(t.shape)}",
)
def test_tensor_dtypes_and_shapes_round_trip(tensor):
    assert_same({"t": tensor, "l": [tensor]}, roundtrip({"t": tensor, "l": [tensor]}))


def test_non_contiguous_views_and_shared_storage_are_saved():
    base = torch.arange(12.0).reshape(3, 4)
    state = {
        "base": base,
        "t": base.t(),
        "row": base[1],
        "again": base,
        "param": torch.nn.Parameter(base.clone()),
    }
    back = roundtrip(state)
    assert torch.equal(back["t"], base.t()) and torch.equal(back["row"], base[1])
    assert torch.equal(back["again"], base) and type(back["param"]) is torch.Tensor
    assert not back["param"].requires_grad
    back["base"][0, 0] = 99.0  # loaded tensors do not alias each other
    assert back["again"][0, 0] == 0.0


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(5, dtype=np.int64),
        np.array([True, False]),
        np.zeros((0, 3), np.float32),
        np.array(4.25),
        np.arange(6, dtype=">i4").reshape(2, 3),
        np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
        np.arange(10, dtype=np.uint16)[::3],
        np.array([np.nan, 1.0], np.float16),
        np.array([1 + 2j], np.complex64),
    ],
    ids=lambda a: f"{a.dtype.str}-{a.shape}",
)
def test_numpy_leaves_come_back_as_numpy(arr):
    back = roundtrip({"a": arr})["a"]
    assert isinstance(back, np.ndarray)
    assert_same(arr, back)


def test_numpy_scalars_come_back_as_numpy_scalars():
    state = {"f": np.float32(1.5), "i": np.int64(-3), "b": np.bool_(True), "u": np.uint64(2**64 - 1)}
    assert_same(state, roundtrip(state))


def test_adam_optimizer_state_dict_round_trips_and_resumes_identically():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    X, y = torch.randn(32, 4), torch.randint(0, 2, (32,))

    def step(m, o):
        o.zero_grad()
        torch.nn.functional.cross_entropy(m(X), y).backward()
        o.step()

    for _ in range(3):
        step(model, opt)
    sd = opt.state_dict()
    assert all(isinstance(k, int) for k in sd["state"])  # the int keys we must preserve
    back = roundtrip({"model": model.state_dict(), "optimizer": sd})
    assert_same(sd, back["optimizer"])

    model2 = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    model2.load_state_dict(back["model"])
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-2)
    opt2.load_state_dict(back["optimizer"])
    step(model, opt)
    step(model2, opt2)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_device_argument_places_tensors_but_not_numpy():
    back = loads_state(dumps_state({"t": torch.ones(2), "n": np.ones(2)}), device="cpu")
    assert back["t"].device.type == "cpu" and isinstance(back["n"], np.ndarray)


def test_tensors_are_named_by_path_and_readable_by_safetensors(tmp_path):
    path = tmp_path / "s.safetensors"
    save_state_file(
        path,
        {"model": {"fc.weight": torch.ones(2, 2)}, "opt": {"state": {0: {"m": torch.zeros(1)}}}},
        metadata={"version": "7"},
    )
    with safe_open(str(path), "pt") as f:
        assert sorted(f.keys()) == ["model/fc.weight", "opt/state/0/m"]
    assert read_metadata(path.read_bytes()) == {"version": "7"}


def test_colliding_paths_get_distinct_tensor_names():
    state = {"a/b": torch.ones(1), "a": {"b": torch.zeros(1)}}
    assert_same(state, roundtrip(state))


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize(
    "leaf",
    [
        np.array(["a", "b"]),
        np.array([{"x": 1}], dtype=object),
        np.array(["2024-01-01"], dtype="datetime64[D]"),
    ],
)
def test_non_numeric_numpy_arrays_are_rejected_with_advice(leaf):
    with pytest.raises(TypeError, match="plain list"):
        dumps_state({"ids": leaf})


@pytest.mark.parametrize("leaf", [object(), {1, 2}, b"bytes", torch.zeros(2, dtype=torch.complex128)])
def test_unsupported_leaves_are_rejected(leaf):
    with pytest.raises(TypeError):
        dumps_state({"x": leaf})


def test_unsupported_keys_and_reserved_metadata_are_rejected():
    with pytest.raises(TypeError, match="key"):
        dumps_state({(1, 2): 3})
    with pytest.raises(TypeError, match="key"):
        dumps_state({True: 3})
    with pytest.raises(ValueError, match="reserved"):
        dumps_state({}, metadata={"streamlearn.skeleton": "x"})
    with pytest.raises(TypeError, match="mapping"):
        dumps_state([1, 2])  # type: ignore[arg-type]


# --------------------------------------------------------------- corruption
def _blob():
    return dumps_state({"w": torch.arange(16.0), "n": 3})


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"\xff" * 64,
        pickle.dumps({"w": 1}),
        _blob()[:-5],  # truncated tensor bytes
        _blob()[:20],  # truncated header
    ],
    ids=["empty", "garbage", "ff", "pickle", "truncated-data", "truncated-header"],
)
def test_corrupt_bytes_raise_checkpoint_error(data):
    with pytest.raises(CheckpointError):
        loads_state(data)


def test_foreign_safetensors_file_is_refused():
    from safetensors.torch import save

    with pytest.raises(CheckpointError, match="skeleton"):
        loads_state(save({"w": torch.ones(1)}))


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_unpickle_or_crash_differently(data):
    try:
        loads_state(data)
    except CheckpointError:
        pass


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=255))
def test_single_byte_corruption_is_detected_or_harmless(pos, value):
    blob = bytearray(_blob())
    pos %= len(blob)
    blob[pos] = value
    try:
        back = loads_state(bytes(blob))
    except CheckpointError:
        return
    # Undetected only when harmless (e.g. header padding): the checksum covers
    # key names, structure and tensor bytes, so the state must be the original.
    assert back.keys() == {"w", "n"} and back["n"] == 3
    assert torch.equal(back["w"], torch.arange(16.0))


# ---------------------------------------------------------------- files
def test_save_and_load_file_atomically_replaces(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_state_file(path, {"v": 1})
    save_state_file(path, {"v": 2, "t": torch.ones(3)})
    back = load_state_file(path)
    assert back["v"] == 2 and torch.equal(back["t"], torch.ones(3))
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]  # no temp file left behind


def test_failed_serialisation_leaves_existing_file_untouched(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_state_file(path, {"v": 1})
    with pytest.raises(TypeError):
        save_state_file(path, {"v": object()})
    assert load_state_file(path) == {"v": 1}
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]


def test_unwritable_directory_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        save_state_file(tmp_path / "missing" / "x.safetensors", {"v": 1})


def test_missing_or_corrupt_file_error_names_the_file(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError, match="nope.safetensors"):
        load_state_file(missing)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 3)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_state_file(bad)
