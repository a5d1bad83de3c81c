"""The command-line entry points: clear one-line errors, JSON output, best-args round trip."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from raycl.cli import add_hyperparameter_flags
from raycl.device import cuda_problem, resolve_device

REPO = Path(__file__).resolve().parents[1]


def run_cli(script, *args, cwd=None):
    return subprocess.run([sys.executable, str(REPO / "launch" / script), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--method", "dper"], "unknown method 'dper'; allowed: agem, clser, der, derpp"),
    (["--method", "er", "--dataset", "seq-mnits"], "unknown dataset 'seq-mnits'; allowed:"),
    (["--method", "er", "--alpha", "0.5"], "--alpha does not apply to method 'er'; its hyperparameters:"),
    (["--method", "er", "--lr", "fast"], "hyperparameter 'lr' (--lr) must be a float in [0.0, inf], got 'fast'"),
    (["--method", "er", "--batch-size", "0"], "hyperparameter 'batch_size' (--batch-size) must be an int in [1, inf]"),
    (["--method", "er", "--optimizer", "rmsprop"], "must be one of sgd, adam"),
    (["--method", "er", "--load-best-args", "/nonexistent/best.yaml"], "file not found: /nonexistent/best.yaml"),
    (["--method", "er", "--device", "gpu0"], "unknown device 'gpu0'; allowed: auto, cpu, cuda, cuda:N"),
])
def test_bad_input_is_one_clear_line(args, message):
    proc = run_cli("train.py", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_flags_arrive_as_their_declared_types():
    # A search that fixes --lr 0.2 must export the number 0.2, not the string '0.2'.
    import argparse

    from raycl.cli import given_hyperparameters

    parser = argparse.ArgumentParser()
    add_hyperparameter_flags(parser)
    given = given_hyperparameters(parser.parse_args(["--lr", "0.2", "--buffer-size", "500"]), "derpp")
    assert given == {"lr": 0.2, "buffer_size": 500}
    assert type(given["lr"]) is float and type(given["buffer_size"]) is int
    given = given_hyperparameters(parser.parse_args(["--soft-targets", "true", "--gen-epochs", "5"]), "gen_replay")
    assert given == {"soft_targets": True, "gen_epochs": 5}


def test_missing_data_is_one_clear_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch" / "train.py"), "--method", "er", "--dataset", "seq-mnist",
         "--data-root", str(tmp_path)], capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "http_proxy": "http://127.0.0.1:9",
             "https_proxy": "http://127.0.0.1:9"},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"MNIST not found: looked in {tmp_path}/MNIST/raw" in proc.stderr


def test_train_writes_json_with_seeds_and_settings(tmp_path):
    out = tmp_path / "run.json"
    proc = run_cli("train.py", "--method", "derpp", "--dataset", "seq-digits", "--lr", "0.1", "--buffer-size", "100",
                   "--seeds", "2", "--json", str(out), "--threads", "1")
    named = os.environ["RAYCL_DEVICE"]
    if named.startswith("cuda") and cuda_problem() is not None:  # the suite run with RAYCL_DEVICE=cuda on a CPU
        assert proc.returncode == 2 and proc.stderr.splitlines() == [
            f"error: device {named!r} asked for, but {cuda_problem()}; or use cpu"]
        return
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["method"] == "derpp" and doc["dataset"] == "seq-digits" and doc["seeds"] == [0, 1]
    assert doc["config"]["lr"] == 0.1 and doc["config"]["buffer_size"] == 100
    # The suite's $RAYCL_DEVICE (conftest: cpu unless the environment names another); fp32 unless told.
    assert doc["device"] == str(resolve_device(os.environ["RAYCL_DEVICE"])) and doc["precision"] == "fp32"
    for split in ("test", "val"):
        # Masked Class-IL (the DER repository's "CIL") beside Class-IL and Task-IL, never in place of them.
        assert doc[split]["class_il"]["mean"] <= doc[split]["masked_class_il"]["mean"] <= doc[split]["task_il"]["mean"]
        for setting in ("class_il", "masked_class_il", "task_il"):
            entry = doc[split][setting]
            assert len(entry["per_seed"]) == 2
            assert entry["mean"] == pytest.approx(sum(entry["per_seed"]) / 2)
            assert 0 <= entry["mean"] <= 100
    assert doc["wall_s"] > 0
    # One population: a line per task (with the spread over the seeds), one per seed at the end.
    assert proc.stderr.count("task  5/5") == 1 and "over 2 seeds" in proc.stderr
    assert proc.stderr.count(" done: test class_il") == 2
    assert "test ACC" in proc.stdout and "±" in proc.stdout


def test_train_precision_is_one_of_the_known_ones_and_reaches_the_run(tmp_path):
    proc = run_cli("train.py", "--method", "er", "--precision", "fp16")
    assert proc.returncode == 2 and "argument --precision: invalid choice: 'fp16'" in proc.stderr
    assert "Traceback" not in proc.stderr
    out = tmp_path / "run.json"
    proc = run_cli("train.py", "--method", "sgd", "--n-epochs", "1", "--device", "cpu", "--precision", "bf16",
                   "--json", str(out), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["device"] == "cpu" and doc["precision"] == "bf16"


def test_load_best_args_and_flags_override(tmp_path):
    from raycl.files import save_best_args

    best = tmp_path / "best.yaml"
    save_best_args(best, "seq-digits", "derpp", {"lr": 0.05, "alpha": 0.3, "beta": 0.2, "buffer_size": 100},
                   {"objective": 90.0})
    out = tmp_path / "run.json"
    proc = run_cli("train.py", "--method", "derpp", "--load-best-args", str(best), "--beta", "0.7",
                   "--json", str(out), "--threads", "1", "--device", "auto")
    assert proc.returncode == 0, proc.stderr
    # --device auto says in one line what it chose and why (CUDA, or what stops it).
    doc = json.loads(out.read_text())
    chosen = [line for line in proc.stderr.splitlines() if line.startswith("device auto: ")]
    assert len(chosen) == 1 and chosen[0].startswith(f"device auto: {doc['device']} (")
    if doc["device"] == "cpu":
        assert "CUDA unusable: " in chosen[0] and str(torch.version.cuda) in chosen[0] and "fix: " in chosen[0]
    config = doc["config"]
    assert config["lr"] == 0.05 and config["alpha"] == 0.3 and config["beta"] == 0.7
    assert config["buffer_size"] == 100


def test_help_of_a_method_lists_exactly_its_hyperparameters():
    import argparse

    from raycl.hparams import param_specs
    from raycl.methods import get_method, method_names

    for method in method_names():
        parser = argparse.ArgumentParser()
        add_hyperparameter_flags(parser, method)
        shown = set(re.findall(r"^ +(--[a-z0-9-]+)", parser.format_help(), re.M)) - {"--help"}
        assert shown == {"--" + n.replace("_", "-") for n in param_specs(get_method(method).Config)}, method


def test_help_without_a_method_lists_the_methods_and_with_one_only_its_flags():
    from raycl.methods import METHODS

    def flags(text, after="options:"):  # the flags the help lists after the heading ``after``
        return set(re.findall(r"^ +(--[a-z0-9-]+)", text.split(after, 1)[1], re.M))

    general = run_cli("tune.py", "--help")
    assert general.returncode == 0
    assert all(name in general.stdout for name in METHODS)
    assert "--method M --help" in general.stdout
    assert "--samples" in flags(general.stdout) and not flags(general.stdout, "method hyperparameters:")
    derpp = run_cli("tune.py", "--method", "derpp", "--help")
    assert derpp.returncode == 0
    assert flags(derpp.stdout, "hyperparameters of method derpp:") == {
        "--alpha", "--beta", "--batch-size", "--buffer-size", "--lr", "--minibatch-size", "--n-epochs", "--optimizer"}
    assert "fixes it for the whole search" in derpp.stdout
    assert re.findall(r"^  (\S+) +per configuration: (.*)$", derpp.stdout, re.M) == [
        ("derpp", "lr, buffer_size, alpha, beta")]
    train = run_cli("train.py", "--method", "gen_replay", "--help")
    assert train.returncode == 0
    assert {"--load-best-args", "--seeds", "--json"} <= flags(train.stdout)
    listed = flags(train.stdout, "hyperparameters of method gen_replay:")
    assert {"--gen-epochs", "--soft-targets", "--lr"} <= listed and "--alpha" not in listed


def _launcher(script):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"launch_{script[:-3]}", REPO / "launch" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_method_s_help_is_short_and_help_all_lists_every_flag(monkeypatch):
    from raycl.methods import METHODS

    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps at the terminal's width, COLUMNS where piped
    hidden = {"tune.py": ("--grace-period", "--chf-drop", "--gpus-per-trial", "--optuna-storage", "--val-fraction"),
              "train.py": ("--val-fraction", "--precision", "--threads", "--one-at-a-time", "--backbone")}
    for script, flags in hidden.items():
        launcher = _launcher(script)
        for method in METHODS:
            short = launcher.build_parser(method, full=False)
            text = short.format_help()
            lines = text.splitlines()
            assert len(lines) <= 120 and max(map(len, lines)) <= 80, (script, method, len(lines))
            assert lines[-1] == f"every flag: python launch/{script} --method {method} --help-all"
            assert not [f for f in flags if f in text]
            assert ("--samples" if script == "tune.py" else "--load-best-args") in text
            full = launcher.build_parser(method).format_help()
            assert all(f in full for f in flags) and len(full.splitlines()) > len(lines)
        # A flag left out of the short help is still accepted.
        args = launcher.build_parser("er", full=False).parse_args(["--method", "er", flags[0], "0.2"
                                                                    if script == "train.py" else "2"])
        assert getattr(args, flags[0][2:].replace("-", "_")) in (0.2, 2)
    # As printed to a pipe.
    proc = subprocess.run([sys.executable, str(REPO / "launch" / "tune.py"), "--method", "vib", "--help"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "80"})
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) <= 120 and "--replay-weight" in proc.stdout
    proc = subprocess.run([sys.executable, str(REPO / "launch" / "tune.py"), "--method", "vib", "--help-all"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "80"})
    assert proc.returncode == 0 and "--grace-period" in proc.stdout and "--replay-weight" in proc.stdout


def _save_entry(args):
    from raycl.files import save_best_args

    path, method = args
    for round_ in range(5):
        save_best_args(path, "seq-mnist", method, {"lr": 0.01 * round_, "buffer_size": 500}, {"round": round_})


def test_best_args_writers_at_once_lose_no_entry(tmp_path):
    import multiprocessing

    path = tmp_path / "best.yaml"
    methods = ["er", "der", "derpp", "mer", "gem", "agem", "clser", "synergy"]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_save_entry, [(str(path), m) for m in methods])
    data = yaml.safe_load(path.read_text())
    assert set(data["seq-mnist"]) == set(methods)
    assert all(data["seq-mnist"][m][500]["provenance"]["round"] == 4 for m in methods)


def test_a_failed_best_args_write_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    from raycl.files import save_best_args

    path = tmp_path / "best.yaml"
    save_best_args(path, "seq-mnist", "er", {"lr": 0.1, "buffer_size": 500}, {"objective": 1})
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # the new content is written, then cannot be made durable
    with pytest.raises(OSError, match="No space left"):
        save_best_args(path, "seq-mnist", "derpp", {"lr": 0.2, "buffer_size": 500}, {"objective": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == ["best.yaml"]


def test_best_args_file_keeps_other_entries(tmp_path):
    from raycl.files import load_best_args, save_best_args

    path = tmp_path / "best.yaml"
    save_best_args(path, "seq-mnist", "derpp", {"lr": 0.03, "buffer_size": 500}, {"objective": 1})
    save_best_args(path, "seq-mnist", "derpp", {"lr": 0.1, "buffer_size": 200}, {"objective": 2})
    save_best_args(path, "seq-mnist", "er", {"lr": 0.1, "buffer_size": 500}, {"objective": 3})
    data = yaml.safe_load(path.read_text())
    assert set(data["seq-mnist"]) == {"derpp", "er"} and set(data["seq-mnist"]["derpp"]) == {200, 500}
    assert load_best_args(path, "seq-mnist", "derpp", 500)["lr"] == 0.03
    assert not list(tmp_path.glob(".best.yaml.*.tmp"))
    # Shared like any file written with open(): others may read it (mkstemp alone would give 0600).
    umask = os.umask(0o022)
    try:
        save_best_args(path, "seq-mnist", "er", {"lr": 0.2, "buffer_size": 500}, {"objective": 4})
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
    from raycl.errors import RayclError

    with pytest.raises(RayclError, match="choose one with --buffer-size"):
        load_best_args(path, "seq-mnist", "derpp", None)
    with pytest.raises(RayclError, match="unknown buffer size.*allowed: 200, 500"):
        load_best_args(path, "seq-mnist", "derpp", 100)


@pytest.mark.mnist
def test_real_mnist_end_to_end(mnist_data_root, tmp_path):
    """DER++ with the paper's arguments on seq-mnist: replay keeps Class-IL far above fine-tuning."""
    out = tmp_path / "derpp.json"
    proc = run_cli("train.py", "--method", "derpp", "--dataset", "seq-mnist", "--data-root", str(mnist_data_root),
                   "--buffer-size", "500", "--lr", "0.03", "--alpha", "1", "--beta", "0.5", "--threads", "1",
                   "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["test"]["class_il"]["mean"] > 85  # paper 91.0; fine-tuning lands near 19.6
    assert doc["test"]["task_il"]["mean"] > 97


def test_a_plugin_hyperparameter_named_like_a_launcher_flag_is_one_clear_error(tmp_path, monkeypatch):
    import argparse

    from raycl.cli import add_hyperparameter_flags
    from raycl.errors import RayclError

    (tmp_path / "clashing_plugin.py").write_text(
        "import dataclasses\n"
        "from raycl.hparams import hp\n"
        "from raycl.methods.base import PopulationMethod, TrainConfig\n"
        "@dataclasses.dataclass\n"
        "class ClashConfig(TrainConfig):\n"
        "    seed: int = hp(0, 'a seed of its own')\n"
        "class Clash(PopulationMethod):\n"
        "    name = 'clash'\n"
        "    Config = ClashConfig\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    with pytest.raises(RayclError, match="hyperparameter 'seed' of method 'clashing_plugin:Clash' has the name of "
                                         "the launcher's own flag --seed"):
        add_hyperparameter_flags(parser, "clashing_plugin:Clash")
    add_hyperparameter_flags(argparse.ArgumentParser(), "derpp")  # built-in names clash with nothing
