"""CheckpointStore: atomic files, newest-readable wins, all-unreadable refused, offsets never regress."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stream.core.errors import ConfigError, OffsetRegressionError, UnreadableCheckpointError
from stream.core.records import TopicPartition
from stream.engine.checkpoint import Checkpoint, CheckpointStore

TP0, TP1 = TopicPartition("t", 0), TopicPartition("t", 1)


def ckpt(seq: int, positions: dict, **kw) -> Checkpoint:
    return Checkpoint(
        seq=seq,
        positions=positions,
        learner=kw.get("learner"),
        window={"kind": "count"},
        schema={"n_features": 2},
        counters={"events_learned": seq * 10},
    )


def test_round_trip_keeps_positions_state_and_counters(tmp_path):
    store = CheckpointStore(tmp_path)
    learner = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "n_learned": 5, "buf": np.ones(3, np.int64)}
    store.save(ckpt(1, {TP0: 10, TP1: 3}, learner=learner))
    got = CheckpointStore(tmp_path).latest()
    assert got.seq == 1 and got.positions == {TP0: 10, TP1: 3}
    assert torch.equal(got.learner["model"]["w"], learner["model"]["w"])
    assert got.learner["n_learned"] == 5 and got.learner["buf"].tolist() == [1, 1, 1]
    assert got.counters == {"events_learned": 10}


def test_newest_wins_and_only_keep_files_remain(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for seq in range(1, 5):
        store.save(ckpt(seq, {TP0: seq * 100}))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-000000000003.safetensors",
        "ckpt-000000000004.safetensors",
    ]
    assert CheckpointStore(tmp_path).latest().positions[TP0] == 400


def test_a_damaged_newest_file_falls_back_to_the_previous_consistent_one(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(ckpt(1, {TP0: 100}))
    path = store.save(ckpt(2, {TP0: 200}))
    path.write_bytes(path.read_bytes()[:50])  # simulate disk damage
    assert CheckpointStore(tmp_path).latest().seq == 1


def test_offsets_moving_backwards_raise_a_named_error(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(ckpt(1, {TP0: 100}))
    with pytest.raises(OffsetRegressionError, match=r"t\[0\] back from 100 to 99"):
        store.save(ckpt(2, {TP0: 99}))
    # A restored store knows the last positions too.
    restored = CheckpointStore(tmp_path)
    restored.latest()
    with pytest.raises(OffsetRegressionError):
        restored.save(ckpt(2, {TP0: 50}))


def test_no_temp_files_are_left_behind(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(ckpt(1, {TP0: 1}))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-000000000001.safetensors"]


def test_empty_directory_means_fresh_start(tmp_path):
    assert CheckpointStore(tmp_path / "missing").latest() is None


def _damage(path):
    path.write_bytes(path.read_bytes()[:50])


def test_a_directory_of_only_unreadable_checkpoints_refuses_a_silent_fresh_start(tmp_path):
    store = CheckpointStore(tmp_path)
    for seq in (1, 2):
        _damage(store.save(ckpt(seq, {TP0: seq * 100})))
    with pytest.raises(
        UnreadableCheckpointError,
        match=rf"none of the 2 checkpoint file\(s\) in {tmp_path} can be "
        r"read \(the newest: .*ckpt-000000000002.safetensors.*"
        r"--on-unreadable-checkpoint fresh",
    ):
        CheckpointStore(tmp_path).latest()
    assert len(list(tmp_path.glob("ckpt-*.safetensors"))) == 2  # refusing changes nothing


def test_a_fresh_start_on_request_sets_the_unreadable_files_aside_and_keeps_its_own(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for seq in (5, 6):
        _damage(store.save(ckpt(seq, {TP0: seq * 100})))
    fresh = CheckpointStore(tmp_path, keep=2, on_unreadable="fresh")
    assert fresh.latest() is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-000000000005.safetensors.unreadable",
        "ckpt-000000000006.safetensors.unreadable",
    ]
    fresh.save(ckpt(1, {TP0: 10}))  # out of the rotation: the damaged seq 5 and 6 cannot prune it
    assert CheckpointStore(tmp_path).latest().seq == 1


def test_a_damaged_newest_file_with_an_older_readable_one_is_no_error_under_either_policy(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(ckpt(1, {TP0: 100}))
    _damage(store.save(ckpt(2, {TP0: 200})))
    assert CheckpointStore(tmp_path, on_unreadable="refuse").latest().seq == 1
    assert CheckpointStore(tmp_path, on_unreadable="fresh").latest().seq == 1
    assert (tmp_path / "ckpt-000000000002.safetensors").exists()  # the next save replaces it


def test_an_unknown_unreadable_policy_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="'refuse' or 'fresh'"):
        CheckpointStore(tmp_path, on_unreadable="ignore")
