"""stream.core.metrics: the one copy of accuracy / log loss / MAE / RMSE and the classification rule."""

import math

import numpy as np

from stream.core import metrics


def test_classification_is_decided_by_the_label_dtype():
    assert metrics.is_classification(np.array([0, 1], dtype=np.int64))
    assert metrics.is_classification(np.array([0, 1], dtype=np.int32))
    assert not metrics.is_classification(np.array([0.0, 1.0], dtype=np.float32))
    assert metrics.task_of_labels(np.array([1.5])) == "regression"


def test_accuracy_and_counts():
    pred, y = np.array([1, 2, 3, 4]), np.array([1, 2, 0, 0])
    assert metrics.accuracy(pred, y) == 0.5
    assert metrics.count_correct(pred, y) == 2
    assert math.isnan(metrics.accuracy(np.array([]), np.array([])))


def test_log_loss_clips_probabilities_and_unknown_classes():
    proba = np.array([[1.0, 0.0], [0.5, 0.5]])
    losses = metrics.log_losses(proba, np.array([1, 5]))
    assert losses[0] == -math.log(metrics.EPS)
    assert losses[1] == -math.log(0.5)


def test_regression_metrics_agree_with_their_sums():
    pred, y = np.array([1.0, 2.0, 5.0]), np.array([1.0, 1.0, 1.0], dtype=np.float32)
    assert metrics.mae(pred, y) == 5 / 3
    assert metrics.squared_error(pred, y) == 17.0
    assert metrics.rmse(pred, y) == math.sqrt(17 / 3)
    assert metrics.rmse_from_sum(17.0, 3) == (17 / 3) ** 0.5
    assert metrics.rmse_from_sum(0.0, 0) is None
