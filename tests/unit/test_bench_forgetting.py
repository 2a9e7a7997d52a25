"""bench/forgetting.py's scenarios and metrics (the numbers in its table come from these)."""

from __future__ import annotations

import numpy as np

from bench.forgetting import Settings, build_tasks, run_sequence, summarise


def test_metrics_follow_the_textbook_definitions():
    nan = np.nan
    R = np.array([[0.9, nan, nan], [0.5, 0.8, nan], [0.3, 0.6, 1.0]])
    avg, forgetting = summarise(R)
    assert np.isclose(avg, (0.3 + 0.6 + 1.0) / 3)
    assert np.isclose(forgetting, ((0.9 - 0.3) + (0.8 - 0.6)) / 2)


def test_split_tasks_hold_two_new_classes_each_and_permuted_tasks_all_ten():
    split = build_tasks("split", seed=1, validation=False)
    assert [sorted(set(t.y_train)) for t in split] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    permuted = build_tasks("permuted", seed=1, validation=False)
    assert all(sorted(set(t.y_train)) == list(range(10)) for t in permuted)
    # same rows, different pixel order; task 0 is the identity
    assert sorted(permuted[1].X_train[0]) == sorted(permuted[0].X_train[0])
    val = build_tasks("split", seed=1, validation=True)
    assert sum(len(t.y_eval) for t in val) < sum(len(t.y_eval) for t in split)  # a carve of the training rows


def test_rehearsal_forgets_less_than_naive_in_class_incremental_digits():
    tasks = build_tasks("split", seed=1, validation=False)
    s = Settings(batch=32, epochs=2, lr=0.005, memory=200, ewc_every=10)
    naive, _ = run_sequence("ours-naive", tasks, 1, s, 0.0)
    replay, _ = run_sequence("ours-replay", tasks, 1, s, 0.0)
    assert summarise(naive)[1] > 0.35  # class-incremental naive learning forgets much of the earlier tasks
    assert summarise(replay)[1] < 0.75 * summarise(naive)[1]
    assert summarise(replay)[0] > summarise(naive)[0]
