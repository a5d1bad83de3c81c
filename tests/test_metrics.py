import math

import numpy as np
import pytest

from raycl.metrics import summarize


def test_metrics_of_a_hand_made_matrix():
    nan = np.nan
    r = np.array([
        [90.0, 10.0, nan],
        [70.0, 80.0, 20.0],
        [60.0, 75.0, 85.0],
    ])
    baseline = np.array([nan, 12.0, 15.0])
    m = summarize(r, baseline)
    assert m["acc"] == pytest.approx((60 + 75 + 85) / 3)
    assert m["bwt"] == pytest.approx(((60 - 90) + (75 - 80)) / 2)
    assert m["fwt"] == pytest.approx(((10 - 12) + (20 - 15)) / 2)
    # Forgetting: best accuracy after learning the task minus the final one.
    assert m["forgetting"] == pytest.approx(((90 - 60) + (80 - 75)) / 2)
    assert m["learning_acc"] == pytest.approx((90 + 80 + 85) / 3)
    assert m["bti"] == pytest.approx(m["retained_acc"] - m["learning_acc"])


def test_forgetting_takes_the_best_row_after_learning_and_before_the_last():
    nan = np.nan
    # Task 1 improves after task 2 (backward transfer) before it is forgotten: its best is row 2, not
    # the diagonal. Task 2 peaks in the last row, which is not "earlier": its best is row 2's 70.
    r = np.array([
        [60.0, nan, nan, nan],
        [80.0, 70.0, nan, nan],
        [75.0, 65.0, 90.0, nan],
        [50.0, 95.0, 85.0, 99.0],
    ])
    m = summarize(r)
    # task 1: max(60, 80, 75) - 50 = 30; task 2: max(70, 65) - 95 = -25; task 3: 90 - 85 = 5.
    assert m["forgetting"] == pytest.approx((30 - 25 + 5) / 3)
    assert m["bwt"] == pytest.approx(((50 - 60) + (95 - 70) + (85 - 90)) / 3)


def test_forgetting_ignores_accuracy_before_the_task_was_learnt():
    r = np.array([[50.0, 95.0], [50.0, 60.0]])  # task 1 scored 95 before training on it
    assert summarize(r)["forgetting"] == pytest.approx(0.0)
    assert math.isnan(summarize(r)["fwt"])


def test_single_task():
    m = summarize(np.array([[70.0]]))
    assert m["acc"] == 70.0 and m["bwt"] == 0.0
