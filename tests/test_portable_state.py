"""The cross-device checks of tests/test_cuda.py and benchmark.py --gpu, run CPU against CPU here:
a checkpoint written as a trial writes it, loaded with map_location into a new run, continues with
the same numbers."""

import pytest
import torch

from raycl.device_checks import largest_gap, moved, population, resumed_gap, train_tasks


@pytest.mark.parametrize("method", ["derpp", "vib"])
def test_a_run_moved_through_its_checkpoint_continues_with_the_same_numbers(digits, method):
    gap, devices = resumed_gap(digits, method, "cpu", "cpu", tasks=2, dtype=torch.float64)
    assert devices == {"cpu"}
    assert gap == 0.0


def test_the_gap_sees_a_different_run(digits):
    one = train_tasks(population(digits, "derpp", "cpu", seeds=(0,)), 1)
    other = train_tasks(population(digits, "derpp", "cpu", seeds=(1,)), 1)
    assert largest_gap(one, other) > 0
    twin, _ = moved(one, "cpu")
    assert largest_gap(one, twin) == 0.0
