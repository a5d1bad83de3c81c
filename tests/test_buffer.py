import numpy as np
import pytest
import torch

from raycl.buffer import BufferSample, PopulationReservoir
from raycl.population.random import MemberRandom, Stream


class ReservoirBuffer:
    """One reservoir with unbatched shapes: a population reservoir of one, seen as one buffer."""

    def __init__(self, capacity: int, x_shape: tuple[int, ...], n_logits: int, device: torch.device | str,
                 seed: int, store_logits: bool = True):
        self.random = MemberRandom([seed], Stream.BUFFER, device)
        self.reservoir = PopulationReservoir(capacity, x_shape, n_logits, self.random, device,
                                             store_logits=store_logits)
        self.capacity = capacity

    def __len__(self) -> int:
        return len(self.reservoir)

    def is_empty(self) -> bool:
        return self.reservoir.is_empty()

    @property
    def seen(self) -> int:
        return self.reservoir.seen

    @property
    def examples(self) -> torch.Tensor:
        return self.reservoir.examples[0, :self.capacity]

    @property
    def labels(self) -> torch.Tensor:
        return self.reservoir.labels[0, :self.capacity]

    @property
    def logits(self) -> torch.Tensor | None:
        return None if self.reservoir.logits is None else self.reservoir.logits[0, :self.capacity]

    @property
    def tasks(self) -> torch.Tensor:
        return self.reservoir.tasks[0, :self.capacity]

    def add(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None = None,
            task: int | torch.Tensor = 0) -> None:
        self.reservoir.add(x[None], y[None], None if logits is None else logits[None],
                           task[None] if isinstance(task, torch.Tensor) else task)

    def sample(self, size: int) -> BufferSample:
        return _first(self.reservoir.sample(size))

    def all(self) -> BufferSample:
        return _first(self.reservoir.all())

    def state_dict(self) -> dict:
        return self.reservoir.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.reservoir.load_state_dict(state)


def _first(sample: BufferSample) -> BufferSample:
    return BufferSample(x=sample.x[0], y=sample.y[0], logits=None if sample.logits is None else sample.logits[0],
                        task=sample.task[0])


def make(capacity=10, seed=0):
    return ReservoirBuffer(capacity, (1,), 2, "cpu", seed=seed)


def feed(buffer, n_items, batch):
    for start in range(0, n_items, batch):
        ids = torch.arange(start, min(start + batch, n_items))
        buffer.add(ids.float()[:, None], ids, logits=ids.float()[:, None].repeat(1, 2), task=start // 20)


def test_fills_slots_in_order_then_holds_capacity():
    buffer = make(capacity=10)
    feed(buffer, 7, batch=3)
    assert len(buffer) == 7 and buffer.seen == 7
    assert buffer.labels[:7].tolist() == list(range(7))
    feed_more = torch.arange(7, 30)
    buffer.add(feed_more.float()[:, None], feed_more)
    assert len(buffer) == 10 and buffer.seen == 30
    assert buffer.labels[:7].tolist() != [] and len(set(buffer.labels.tolist())) == 10


def test_reservoir_is_uniform_over_the_stream():
    # Every item of a 100-item stream must be held with probability capacity / 100.
    n_items, capacity, runs = 100, 10, 3000
    counts = np.zeros(n_items)
    for seed in range(runs):
        buffer = make(capacity, seed)
        feed(buffer, n_items, batch=7)
        counts[buffer.labels.numpy()] += 1
    expected = runs * capacity / n_items
    chi2 = ((counts - expected) ** 2 / expected).sum()
    # 99 degrees of freedom: the 99.9% quantile is about 148.
    assert chi2 < 148, chi2
    # Early and late items are equally likely (a biased reservoir favours one end).
    assert abs(counts[:50].mean() - counts[50:].mean()) < 0.05 * expected


def test_within_batch_collisions_keep_the_later_row():
    buffer = make(capacity=2)
    buffer.add(torch.zeros(2, 1), torch.tensor([100, 101]))
    # Positions 2, 3, 4 draw r = floor(u * (pos + 1)): slots 1, 0, 1 (and a 4th row drawing 4: dropped).
    draws = torch.tensor([0.4, 0.1, 0.3, 0.9], dtype=torch.float64)
    buffer.random.uniform = lambda *shape, dtype: draws.expand(1, *shape).to(dtype)
    buffer.add(torch.zeros(4, 1), torch.tensor([0, 1, 2, 3]))
    assert buffer.labels.tolist() == [1, 2]  # row 2 overwrote row 0's slot, as sequential insertion would
    assert buffer.seen == 6


def test_sample_is_without_replacement_and_within_filled_part():
    buffer = make(capacity=50)
    feed(buffer, 20, batch=5)
    for _ in range(20):
        s = buffer.sample(15)
        assert len(set(s.y.tolist())) == 15
        assert all(v < 20 for v in s.y.tolist())
    assert len(buffer.sample(100).y) == 20  # capped at what is stored
    s = buffer.sample(5)
    assert torch.equal(s.logits[:, 0], s.y.float())  # fields stay aligned


def test_state_round_trip_continues_identically():
    a = make(capacity=10, seed=3)
    feed(a, 40, batch=4)
    b = make(capacity=10, seed=99)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.sample(5).y, b.sample(5).y)
    more = torch.arange(40, 60)
    a.add(more.float()[:, None], more)
    b.add(more.float()[:, None], more)
    assert torch.equal(a.labels, b.labels)


@pytest.mark.parametrize("batch", [1, 10, 20])
def test_tasks_and_counts_recorded(batch):
    buffer = make(capacity=30)
    feed(buffer, 60, batch=batch)  # items 0-19 come in task 0, 20-39 in task 1, 40-59 in task 2
    assert buffer.seen == 60 and len(buffer) == 30
    # Every stored example carries the task it came in: its id says which.
    assert torch.equal(buffer.tasks[:len(buffer)], buffer.labels[:len(buffer)] // 20)
    assert set(buffer.tasks[:len(buffer)].tolist()) == {0, 1, 2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_images_are_stored_as_bytes_and_come_back_as_the_floats_added(tiny_cifar, dtype):
    """A normalised benchmark's images (mean/std, the hardest round trip) are kept as uint8 and
    scaled again on the way out, bit for bit what was added; a checkpoint holds the bytes."""
    raw = torch.from_numpy(tiny_cifar.tasks[0].train_x[:6]).view(2, 3, *tiny_cifar.input_shape)
    images = tiny_cifar.scale(raw, dtype)
    buffer = PopulationReservoir(8, tiny_cifar.input_shape, tiny_cifar.n_classes,
                                 MemberRandom([0, 1], Stream.BUFFER), "cpu", dtype, images=tiny_cifar)
    buffer.add(images, torch.zeros(2, 3, dtype=torch.long))
    assert buffer.examples.dtype == torch.uint8
    assert torch.equal(buffer.examples[:, :3], raw)
    stored = buffer.all()
    assert stored.x.dtype == dtype and torch.equal(stored.x, images)
    picked = buffer.gather(torch.tensor([[2, 0], [1, 1]])).x
    assert torch.equal(picked, torch.stack([images[0, [2, 0]], images[1, [1, 1]]]))
    assert buffer.state_dict()["examples"].dtype == torch.uint8
