import numpy as np
import pytest

from raycl.data import load_benchmark, stratified_split
from raycl.errors import RayclError


def test_stratified_split_holds_out_the_fraction_of_every_class():
    labels = np.repeat(np.arange(4), [100, 200, 50, 10])
    kept, held = stratified_split(labels, 0.1, seed=1)
    assert len(np.intersect1d(kept, held)) == 0
    assert len(kept) + len(held) == len(labels)
    for cls, n in zip(range(4), [100, 200, 50, 10]):
        assert (labels[held] == cls).sum() == round(0.1 * n)
    again_kept, again_held = stratified_split(labels, 0.1, seed=1)
    assert np.array_equal(held, again_held)
    assert not np.array_equal(held, stratified_split(labels, 0.1, seed=2)[1])


def _rows(x):
    return {row.tobytes() for row in x}


def test_seq_digits_tasks(digits):
    assert digits.n_tasks == 5 and digits.settings == ("class_il", "masked_class_il", "task_il")
    for t, task in enumerate(digits.tasks):
        assert task.classes == (2 * t, 2 * t + 1)
        for split in ("train", "val", "test"):
            assert set(np.unique(getattr(task, f"{split}_y"))) == {2 * t, 2 * t + 1}
            assert getattr(task, f"{split}_x").dtype == np.uint8
        # Validation is carved from training data and shares no image with test.
        assert not _rows(task.val_x) & _rows(task.test_x) - _rows(task.train_x)
        share = len(task.val_y) / (len(task.val_y) + len(task.train_y))
        assert 0.08 < share < 0.12


def test_unknown_dataset_names_the_allowed_ones():
    with pytest.raises(RayclError, match="unknown dataset 'seq-mnits'.*seq-mnist"):
        load_benchmark("seq-mnits")


def test_missing_mnist_says_where_it_looked(tmp_path, monkeypatch):
    import raycl.data.mnist as mnist

    def no_network(root):
        raise OSError("network unreachable")

    monkeypatch.setattr(mnist, "_download", no_network)
    with pytest.raises(RayclError, match=f"looked in {tmp_path}/MNIST/raw.*--data-root"):
        load_benchmark("seq-mnist", tmp_path)


def test_seq_cifar10_reads_torchvision_layout(tmp_path):
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = list(np.tile(np.arange(10), 4))
        data = rng.integers(0, 256, size=(40, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    bench = load_benchmark("seq-cifar10", tmp_path)
    assert bench.n_tasks == 5 and bench.input_shape == (3, 32, 32) and bench.augment
    assert bench.tasks[0].train_x.shape[1:] == (3, 32, 32)
    assert len(bench.tasks[0].train_y) + len(bench.tasks[0].val_y) == 5 * 8
    raw = bench.tasks[0].train_x[:4]
    x = bench.to_tensor(raw)
    assert x.shape == (4, 3, 32, 32)
    # Normalised per channel with the benchmark's mean and std: (pixel / 255 - mean) / std.
    from raycl.data.cifar import MEAN, STD

    expected = (raw.astype(np.float64) / 255.0 - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]
    assert np.allclose(x.numpy(), expected, atol=1e-5)
    assert not np.allclose(x.numpy(), raw / 255.0, atol=1e-2)


@pytest.mark.mnist
def test_mnist_streams(mnist_data_root):
    seq = load_benchmark("seq-mnist", mnist_data_root)
    assert [t.classes for t in seq.tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert sum(len(t.test_y) for t in seq.tasks) == 10000
    assert sum(len(t.train_y) + len(t.val_y) for t in seq.tasks) == 60000
    perm = load_benchmark("perm-mnist", mnist_data_root)
    assert perm.n_tasks == 20 and perm.settings == ("domain_il",)
    a, b = perm.tasks[0].inputs("test"), perm.tasks[1].inputs("test")
    # Same images, different pixel order: equal pixel sums, different pixels.
    assert np.array_equal(a.sum(1), b.sum(1)) and not np.array_equal(a, b)
    # Every task is a view of one stored copy of the images through its own pixel map.
    assert perm.tasks[0].test_x is perm.tasks[1].test_x and perm.tasks[0].train_x is perm.tasks[19].train_x
    assert abs(len(perm.tasks[0].val_y) - 6000) <= 5  # 10% of each class, rounded


def test_seq_cifar10_trains_resnet_with_augmentation(tiny_cifar):
    from raycl.methods import make_config
    from raycl.train import run

    config = make_config("derpp", {"n_epochs": 1, "batch_size": 8, "minibatch_size": 8, "buffer_size": 16},
                         tiny_cifar.defaults)
    result = run(tiny_cifar, "derpp", config, seed=0)
    assert np.isfinite(result.test["class_il"][-1]).all()


def test_random_crop_flip_moves_pixels_but_keeps_shape():
    import torch

    from raycl.augment import random_crop_flip

    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    outs = [random_crop_flip(x, padding=2, generator=g) for _ in range(10)]
    assert all(o.shape == x.shape for o in outs)
    assert any(not torch.equal(o, x) for o in outs)
    # Every output image is an 8x8 window of the zero-padded input, mirrored or not, and over the draws
    # both mirrored and plain windows at several offsets occur.
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    seen = set()
    for o in outs:
        for n in range(2):
            matches = [(dy, dx, flip) for dy in range(5) for dx in range(5) for flip in (False, True)
                       if torch.equal(o[n], (lambda w: w.flip(2) if flip else w)(padded[n, :, dy:dy + 8, dx:dx + 8]))]
            assert matches, (n, o[n])
            seen.update(matches)
    assert {flip for _, _, flip in seen} == {False, True} and len({(dy, dx) for dy, dx, _ in seen}) > 3


def test_image_backbones_have_the_published_sizes_and_a_benchmark_can_swap_its_backbone(tiny_cifar, tmp_path):
    from raycl.data import load_benchmark
    from raycl.data.synthetic import write_cifar10
    from raycl.errors import RayclError
    from raycl.models import build_model

    root = write_cifar10(tmp_path, images_per_batch=10)
    full = load_benchmark("seq-cifar10", root)
    assert full.model == "resnet18"  # the 64-filter network the DER, mammoth, CLS-ER and SYNERgy code use
    count = lambda b: sum(p.numel() for p in build_model(b).parameters())
    assert round(count(full) / 1e6, 1) == 11.2
    assert round(count(tiny_cifar) / 1e6, 1) == 1.1  # reduced-resnet18, GEM's 20 filters
    with pytest.raises(RayclError, match="unknown backbone 'resnet50'.*allowed: mlp, reduced-resnet18, resnet18"):
        load_benchmark("seq-cifar10", root, backbone="resnet50")


def test_a_backbone_that_does_not_take_the_benchmark_s_inputs_is_one_clear_error(tiny_cifar):
    from raycl.data import load_benchmark
    from raycl.errors import RayclError

    with pytest.raises(RayclError, match=r"backbone 'resnet18' takes images .*seq-digits's inputs are shaped "
                                         r"\(64,\): allowed for seq-digits: mlp"):
        load_benchmark("seq-digits", backbone="resnet18")
    assert load_benchmark("seq-digits", backbone="mlp").model == "mlp"
