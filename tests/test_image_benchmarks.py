"""The image streams seq-cifar100, seq-tinyimg and gcil-cifar100 on generated files in their exact
on-disk formats: shapes, labels, class splits, both Tiny ImageNet layouts, the GCIL sampler,
unreadable files, benchmark options, and a DER++ search end to end on each."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from raycl.data import load_benchmark
from raycl.data.synthetic import (write_cifar100, write_tiny_imagenet_jpegs, write_tinyimg_processed)
from raycl.errors import RayclError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cifar100_root(tmp_path_factory):
    # 10 training images a class: the 10% validation split holds one of each.
    return write_cifar100(tmp_path_factory.mktemp("cifar100"), train_per_class=10, test_per_class=2)


@pytest.fixture(scope="module")
def tinyimg_roots(tmp_path_factory):
    """A JPEG tree, and mammoth's processed arrays holding the same pixels (as PIL decodes the
    JPEGs, labelled by the line of wnids.txt): (jpeg root, processed root, wnids)."""
    from PIL import Image

    jpeg_root = write_tiny_imagenet_jpegs(tmp_path_factory.mktemp("tiny-jpeg"), train_per_class=3, val_per_class=1)
    tree = jpeg_root / "tiny-imagenet-200"
    wnids = (tree / "wnids.txt").read_text().split()
    decode = lambda path: np.asarray(Image.open(path).convert("RGB"))
    train = [(decode(p), c) for c, w in enumerate(wnids) for p in sorted((tree / "train" / w / "images").glob("*.JPEG"))]
    val = [(decode(tree / "val" / "images" / line.split("\t")[0]), wnids.index(line.split("\t")[1]))
           for line in (tree / "val" / "val_annotations.txt").read_text().splitlines()]
    arrays = {"train_x": np.stack([x for x, _ in train]), "train_y": np.array([y for _, y in train]),
              "val_x": np.stack([x for x, _ in val]), "val_y": np.array([y for _, y in val])}
    processed_root = write_tinyimg_processed(tmp_path_factory.mktemp("tiny-npy"), arrays=arrays)
    return jpeg_root, processed_root, wnids


def _check_class_split(bench, n_tasks: int, per_task: int, image_shape):
    assert bench.n_tasks == n_tasks and bench.n_classes == n_tasks * per_task
    assert bench.input_shape == image_shape and bench.augment and bench.model == "resnet18"
    assert bench.settings == ("class_il", "masked_class_il", "task_il")
    for t, task in enumerate(bench.tasks):
        classes = set(range(t * per_task, (t + 1) * per_task))
        assert set(task.classes) == classes
        for split in ("train", "val", "test"):
            x, y = getattr(task, f"{split}_x"), getattr(task, f"{split}_y")
            assert x.dtype == np.uint8 and x.shape[1:] == image_shape and y.dtype == np.int64
            assert set(np.unique(y)) == classes, (t, split)


def test_seq_cifar100_splits_the_fine_labels_into_tasks(cifar100_root):
    bench = load_benchmark("seq-cifar100", cifar100_root)
    _check_class_split(bench, 10, 10, (3, 32, 32))
    assert bench.defaults == {"batch_size": 32, "minibatch_size": 32, "n_epochs": 50}
    assert bench.options == {"n_tasks": 10}
    # Every image once: 9 train + 1 val of each class's 10, and the 2 test images of each class.
    assert sum(len(t.train_y) for t in bench.tasks) == 900 and sum(len(t.val_y) for t in bench.tasks) == 100
    assert sum(len(t.test_y) for t in bench.tasks) == 200
    # The pixels are the pickle's rows, channel-first.
    import pickle

    with open(cifar100_root / "cifar-100-python" / "test", "rb") as f:
        raw = pickle.load(f)
    first = np.flatnonzero(np.array(raw["fine_labels"]) == 0)
    assert np.array_equal(bench.tasks[0].test_x[bench.tasks[0].test_y == 0],
                          raw["data"][first].reshape(-1, 3, 32, 32))

    five = load_benchmark("seq-cifar100", cifar100_root, options={"n_tasks": "5"})
    _check_class_split(five, 5, 20, (3, 32, 32))
    assert five.options == {"n_tasks": 5}


def test_seq_tinyimg_reads_both_layouts_into_the_same_tasks(tinyimg_roots):
    jpeg_root, processed_root, _ = tinyimg_roots
    # A third of each class's 3 training images held out: one validation image a class.
    from_jpegs = load_benchmark("seq-tinyimg", jpeg_root, val_fraction=0.34, seed=3)
    from_arrays = load_benchmark("seq-tinyimg", processed_root, val_fraction=0.34, seed=3)
    for bench in (from_jpegs, from_arrays):
        _check_class_split(bench, 10, 20, (3, 64, 64))
    for a, b in zip(from_jpegs.tasks, from_arrays.tasks):
        for field in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), field


def test_tinyimg_classes_follow_wnids_txt_and_the_arrays_are_mammoths_floats(tinyimg_roots):
    from PIL import Image

    jpeg_root, processed_root, wnids = tinyimg_roots
    bench = load_benchmark("seq-tinyimg", jpeg_root, val_fraction=0.0)
    # Class 25 is the 26th line of wnids.txt (not the 26th wnid in sorted order).
    assert sorted(wnids) != wnids
    tree = jpeg_root / "tiny-imagenet-200"
    first = np.asarray(Image.open(tree / "train" / wnids[25] / "images" / f"{wnids[25]}_0.JPEG").convert("RGB"))
    task = bench.tasks[1]
    assert np.array_equal(task.train_x[task.train_y == 25][0], first.transpose(2, 0, 1))
    # The processed files the equality test reads are mammoth's format: floats in [0, 1], NHWC.
    x = np.load(processed_root / "TINYIMG" / "processed" / "x_train_01.npy")
    assert x.dtype == np.float32 and x.shape[1:] == (64, 64, 3) and 0 <= x.min() and x.max() <= 1


def test_gcil_phases_follow_the_sampler_and_hold_out_validation_before_sampling(cifar100_root):
    options = {"weight_dist": "longtail", "epoch_size": 30, "phase_class_upper": 8, "n_phases": 6}
    bench = load_benchmark("gcil-cifar100", cifar100_root, options=options)
    again = load_benchmark("gcil-cifar100", cifar100_root, options=options)
    assert bench.settings == ("class_il",) and bench.n_tasks == 6 and bench.n_classes == 100
    assert bench.options == {**options, "sampler_seed": 1993}
    seen: set[int] = set()
    trained = []
    for task, same in zip(bench.tasks, again.tasks):
        assert np.array_equal(task.train_x, same.train_x) and np.array_equal(task.train_y, same.train_y)
        assert 1 <= len(task.classes) <= 8 and set(np.unique(task.train_y)) == set(task.classes)
        assert len(task.train_y) <= 30
        seen.update(task.classes)
        # Test (CLS-ER's cumulative loader) and validation cover every class seen so far.
        assert set(np.unique(task.test_y)) == seen and set(np.unique(task.val_y)) == seen
        assert len(task.test_y) == 2 * len(seen) and len(task.val_y) == len(seen)
        trained += [row.tobytes() for row in task.train_x]
    # No image trains twice, and no validation image ever trains.
    assert len(trained) == len(set(trained))
    val_images = {row.tobytes() for row in bench.tasks[-1].val_x}
    assert not val_images & set(trained)


def _phase_class_counts(weight_dist: str, seed: int = 1993) -> np.ndarray:
    """Images per (phase, class) of the GCIL plan at CLS-ER's defaults over CIFAR-100's 500 a class."""
    from raycl.data.gcil import GcilOptions, plan_phases

    plan = plan_phases(np.full(100, 500), GcilOptions(weight_dist=weight_dist, sampler_seed=seed))
    counts = np.zeros((len(plan), 100), dtype=np.int64)
    for p, sizes in enumerate(plan):
        for c, n in sizes.items():
            counts[p, c] = n
    return counts


def test_gcil_longtail_frequencies_fall_with_the_class_index_and_unif_ones_do_not():
    unif, longtail = _phase_class_counts("unif"), _phase_class_counts("longtail")
    assert np.array_equal(longtail, _phase_class_counts("longtail"))  # deterministic given the seed
    assert not np.array_equal(longtail, _phase_class_counts("longtail", seed=7))
    for counts in (unif, longtail):
        assert counts.shape == (20, 100) and (counts.sum(1) <= 1000).all() and (counts.sum(1) > 0).all()
        assert ((counts > 0).sum(1) <= 50).all()
    # Within a phase, the share of a chosen class is its weight over the chosen classes' weights:
    # per image drawn, the mean class index is lower under longtail; overall the early classes get
    # several times as many images as the late ones, while unif keeps them level.
    def slope(counts):
        per_class = counts.sum(0)
        return np.polyfit(np.arange(100), per_class / per_class.mean(), 1)[0]

    def per_phase_ratio(counts):  # images per chosen class, classes 0-49 over 50-99, pooled over phases
        chosen = counts > 0
        low = counts[:, :50].sum() / chosen[:, :50].sum()
        high = counts[:, 50:].sum() / chosen[:, 50:].sum()
        return low / high

    assert slope(longtail) < -0.005 and abs(slope(unif)) < 0.003
    assert per_phase_ratio(longtail) > 1.5 and 0.8 < per_phase_ratio(unif) < 1.25


@pytest.mark.parametrize("name, options, message", [
    ("seq-cifar100", {"n_task": 5}, r"unknown benchmark option of seq-cifar100 'n_task'; allowed: n_tasks=10"),
    ("seq-cifar100", {"n_tasks": 7}, r"n_tasks of seq-cifar100 must divide the 100 classes, got 7; allowed: 1, 2, 4, 5"),
    ("seq-cifar100", {"n_tasks": "five"}, r"n_tasks of seq-cifar100 must be a whole number, got 'five'"),
    ("seq-cifar100", {"n_tasks": 0}, r"n_tasks of seq-cifar100 must be at least 1, got 0"),
    ("gcil-cifar100", {"weight_dist": "zipf"}, r"unknown value of benchmark option weight_dist of gcil-cifar100 "
                                               r"'zipf'; allowed: longtail, unif"),
    ("gcil-cifar100", {"epoch_size": 10}, r"epoch_size of gcil-cifar100 \(10\) must be at least phase_class_upper \(50\)"),
    ("gcil-cifar100", {"phase_class_upper": 101}, r"phase_class_upper of gcil-cifar100 must be at most 100"),
    ("seq-tinyimg", {"n_tasks": 5}, r"seq-tinyimg takes no benchmark options, got n_tasks"),
])
def test_bad_benchmark_options_give_one_clear_error(tmp_path, name, options, message):
    # Checked before any file is looked for: tmp_path is empty.
    with pytest.raises(RayclError, match=message):
        load_benchmark(name, tmp_path, options=options)


def test_missing_cifar100_names_the_files_and_layout(tmp_path, monkeypatch):
    import raycl.data.cifar100 as cifar100

    def no_network(root):
        raise OSError("network unreachable")

    monkeypatch.setattr(cifar100, "_download", no_network)
    write_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    (tmp_path / "cifar-100-python" / "test").unlink()
    with pytest.raises(RayclError, match=rf"CIFAR-100 not found: looked in {tmp_path}/cifar-100-python for train, "
                                         r"test \(missing: test\).*network unreachable.*cifar-100-python folder"):
        load_benchmark("gcil-cifar100", tmp_path)


def test_missing_tinyimg_names_both_layouts(tmp_path):
    write_tinyimg_processed(tmp_path, train_per_class=1, val_per_class=1)
    (tmp_path / "TINYIMG" / "processed" / "y_val_07.npy").unlink()
    with pytest.raises(RayclError, match=r"Tiny ImageNet not found under .*missing: TINYIMG/processed/y_val_07.npy\)"
                                         r".*tiny-imagenet-200/ folder \(wnids.txt"):
        load_benchmark("seq-tinyimg", tmp_path)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("layout", ["cifar100", "npy", "jpeg"])
def test_a_truncated_file_is_one_error_naming_it(tmp_path, layout):
    if layout == "cifar100":
        write_cifar100(tmp_path, train_per_class=1, test_per_class=1)
        name, broken = "seq-cifar100", tmp_path / "cifar-100-python" / "train"
    elif layout == "npy":
        write_tinyimg_processed(tmp_path, train_per_class=1, val_per_class=1)
        name, broken = "seq-tinyimg", tmp_path / "TINYIMG" / "processed" / "x_train_03.npy"
    else:
        write_tiny_imagenet_jpegs(tmp_path, train_per_class=1, val_per_class=1)
        name, broken = "seq-tinyimg", next((tmp_path / "tiny-imagenet-200" / "val" / "images").glob("*.JPEG"))
    _truncate(broken)
    with pytest.raises(RayclError, match=f"{broken}.*truncated") as caught:
        load_benchmark(name, tmp_path)
    assert "Traceback" not in str(caught.value)


def test_published_method_defaults_reach_the_config(cifar100_root):
    from raycl.methods import make_config

    toy = {"epoch_size": 20, "phase_class_upper": 5, "n_phases": 2}
    longtail = load_benchmark("gcil-cifar100", cifar100_root, options=toy)
    unif = load_benchmark("gcil-cifar100", cifar100_root, options={**toy, "weight_dist": "unif"})
    clser = make_config("clser", {}, longtail.defaults_for("clser"))
    assert (clser.lr, clser.n_epochs, clser.batch_size, clser.minibatch_size) == (0.1, 100, 32, 32)
    assert clser.reg_weight == 0.1 and make_config("clser", {}, unif.defaults_for("clser")).reg_weight == 0.15
    synergy = make_config("synergy", {}, longtail.defaults_for("synergy"))
    assert (synergy.lr, synergy.n_epochs) == (0.05, 50)
    # A method without published arguments here gets the protocol's defaults only.
    derpp = make_config("derpp", {}, longtail.defaults_for("derpp"))
    assert (derpp.batch_size, derpp.minibatch_size, derpp.n_epochs) == (32, 32, 50)


def _launch(script: str):
    spec = importlib.util.spec_from_file_location(f"launch_{script}", REPO / "launch" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def image_roots(tmp_path_factory):
    """Toy copies of the three datasets' files: 2 training images a class (one trains, one
    validates) and 1 test image."""
    root = tmp_path_factory.mktemp("image-streams")
    write_cifar100(root, train_per_class=2, test_per_class=1)
    write_tinyimg_processed(root, train_per_class=2, val_per_class=1)
    return root


@pytest.mark.ray
@pytest.mark.parametrize("dataset, options, protocol, replay", [
    ("seq-cifar100", ["n_tasks=5"], [], False),
    # 64x64 images cost four times as much a forward pass: the search's rungs see its first 2 tasks.
    ("seq-tinyimg", [], ["--protocol", "first-task", "--protocol-tasks", "2"], False),
    ("gcil-cifar100", ["n_phases=3", "epoch_size=12", "phase_class_upper=4", "weight_dist=unif"], [], True),
])
def test_derpp_search_runs_end_to_end(dataset, options, protocol, replay, image_roots, tmp_path, ray_cluster):
    flags = ["--method", "derpp", "--dataset", dataset, "--data-root", str(image_roots), "--backbone",
             "reduced-resnet18", "--samples", "2", "--population", "2", "--n-epochs", "1", "--batch-size", "8",
             "--minibatch-size", "4", "--buffer-size", "20", "--val-fraction", "0.5",
             "--storage-path", str(tmp_path / "exp"), "--best-args", str(tmp_path / "best.yaml"), "--verbose", "0",
             *protocol]
    for option in options:
        flags += ["--benchmark-option", option]
    assert _launch("tune").main(flags) == 0
    entry = yaml.safe_load((tmp_path / "best.yaml").read_text())[dataset]["derpp"][20]
    expected = load_benchmark(dataset, image_roots, options=dict(o.split("=") for o in options)).options
    assert entry["provenance"]["benchmark_options"] == expected
    assert entry["provenance"]["backbone"] == "reduced-resnet18"
    assert entry["config"]["minibatch_size"] == 4 and entry["config"]["n_epochs"] == 1
    if not replay:
        return

    # launch/train.py replays the winner on the benchmark and network the search used.
    out = tmp_path / "replay.json"
    assert _launch("train").main(["--method", "derpp", "--load-best-args", str(tmp_path / "best.yaml"),
                                  "--data-root", str(image_roots), "--val-fraction", "0.5",
                                  "--json", str(out), "--device", "cpu"]) == 0
    replay = json.loads(out.read_text())
    assert replay["dataset"] == dataset and replay["backbone"] == "reduced-resnet18"
    assert replay["benchmark_options"] == expected
    assert replay["config"]["lr"] == pytest.approx(entry["config"]["lr"])
    assert np.array(replay["test"]["class_il"]["matrix_mean"]).shape == (3, 3)  # the 3 phases asked for
