"""Plugins: a third party's method or benchmark, by entry point or as package.module:Class, gets what
a built-in gets; a broken one is one line naming it."""

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from raycl.errors import RayclError
from raycl.plugins import installed

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "raycl-erace"


@pytest.fixture(scope="module")
def erace_site(tmp_path_factory) -> Path:
    """examples/raycl-erace installed by pip into a temporary folder: offline (no index, no build
    isolation, no dependencies) and from a copy, so the build leaves nothing in the repository and
    nothing in this environment."""
    work = tmp_path_factory.mktemp("erace")
    source, site = work / "source", work / "site"
    shutil.copytree(EXAMPLE, source)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(source)], check=True, capture_output=True, timeout=300)
    return site


THIRD_PARTY = {
    "third_party/__init__.py": "",
    "third_party/missing_dependency.py": """
        import a_library_nobody_installed  # noqa: F401
        """,
    "third_party/methods.py": """
        import dataclasses

        from raycl.methods.base import ReplayConfig, ReplayPopulationMethod


        class NoConfig:
            name = "no-config"

            def observe(self, x, y, task):
                return 0.0


        @dataclasses.dataclass(kw_only=True)
        class NoDefaultConfig(ReplayConfig):
            temperature: float = dataclasses.field(metadata={"help": "softmax temperature"})


        class NoDefault(ReplayPopulationMethod):
            name = "no-default"
            Config = NoDefaultConfig


        def not_a_method():
            return None
        """,
    "third_party/benchmarks.py": """
        import dataclasses

        from raycl.data.digits import seq_digits


        def two_digit_tasks(data_root, val_fraction, seed):
            benchmark = seq_digits(val_fraction, seed)
            return dataclasses.replace(benchmark, name="two-digit-tasks", tasks=benchmark.tasks[:2])


        def nothing(data_root, val_fraction, seed):
            return None
        """,
    # What pip writes for a distribution declaring these entry points.
    "third_party-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: third-party\nVersion: 0.1\n",
    "third_party-0.1.dist-info/entry_points.txt": """
        [raycl.methods]
        broken-import = third_party.missing_dependency:Method
        no-config = third_party.methods:NoConfig
        no-default = third_party.methods:NoDefault
        not-a-method = third_party.methods:not_a_method

        [raycl.benchmarks]
        two-digit-tasks = third_party.benchmarks:two_digit_tasks
        no-benchmark = third_party.benchmarks:nothing
        """,
}


@pytest.fixture(scope="module")
def third_party_site(tmp_path_factory) -> Path:
    """A folder holding an installed distribution of broken method plugins and a working benchmark."""
    site = tmp_path_factory.mktemp("third_party")
    for name, text in THIRD_PARTY.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(textwrap.dedent(text).lstrip())
    return site


@pytest.fixture
def on_path(monkeypatch):
    """``on_path(folder, ...)`` puts the folders on this process's import path, as an installation
    would; the entry points are read again then and after the test."""
    def add(*folders):
        for folder in folders:
            monkeypatch.syspath_prepend(str(folder))
        installed.cache_clear()

    yield add
    installed.cache_clear()


def env_with(*folders) -> dict:
    """The environment of a command that sees ``folders`` as installed (so do its Ray workers)."""
    path = [str(REPO), *map(str, folders), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}


def run_cli(script, *args, env=None, timeout=300):
    return subprocess.run([sys.executable, str(REPO / "launch" / script), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


# ----- the example: ER-ACE by its entry point ------------------------------------------------------
def test_an_installed_method_is_known_by_its_entry_point_name_everywhere(erace_site, on_path):
    from raycl.cli import add_hyperparameter_flags, given_hyperparameters, hyperparameter_index
    from raycl.methods import get_method, get_population_method, method_names
    from raycl.data import benchmark_names
    from raycl.tune.options import SearchOptions
    from raycl.tune.space import load_space

    assert "erace" not in method_names()
    on_path(erace_site)
    assert "erace" in method_names()
    cls = get_method("erace")
    assert cls.__module__ == "raycl_erace.method" and get_method("raycl_erace.method:ErAce") is cls
    assert get_population_method("erace") is cls  # vectorised: no adapter
    assert hyperparameter_index()["replay_weight"] == ["vib", "erace"]  # built-ins first
    # Its own search space, valid on every benchmark, by either name.
    for dataset in benchmark_names():
        space = load_space("erace", dataset)
        assert space.source.endswith("raycl_erace/erace.yaml") and "replay_weight" in space.searched
    assert load_space("raycl_erace.method:ErAce", "perm-mnist").to_dict()["minibatch_size"] == 128
    parser = argparse.ArgumentParser()
    add_hyperparameter_flags(parser, "erace")
    assert "--replay-weight" in parser.format_help() and "--alpha" not in parser.format_help()
    assert given_hyperparameters(parser.parse_args(["--replay-weight", "0.5"]), "erace") == {"replay_weight": 0.5}
    with pytest.raises(RayclError, match="--replay-weight does not apply to method 'er'"):
        given_hyperparameters(parser.parse_args(["--replay-weight", "0.5"]), "er")
    options = SearchOptions(method="raycl_erace.method:ErAce")
    options.validate()
    assert options.experiment_name == "raycl_erace.method.ErAce-seq-digits-b500"


def test_an_erace_member_alone_equals_that_member_in_a_population(erace_site, on_path, digits):
    from raycl.methods import make_config
    from raycl.train import run_population

    on_path(erace_site)
    tasks = [dataclasses.replace(t, train_x=t.train_x[:100], train_y=t.train_y[:100]) for t in digits.tasks[:3]]
    bench = dataclasses.replace(digits, tasks=tasks)
    rows = [make_config("erace", {"n_epochs": 1, "buffer_size": 30, **row}, bench.defaults)
            for row in ({"lr": 0.05, "replay_weight": 1.0}, {"lr": 0.1, "replay_weight": 0.3})]
    together = run_population(bench, "erace", rows, [3, 4], dtype=torch.float64)
    alone = run_population(bench, "erace", [rows[1]], [4], dtype=torch.float64)
    assert np.array_equal(together.val_loss[1], alone.val_loss[0], equal_nan=True)
    assert not np.array_equal(together.val_loss[0], together.val_loss[1], equal_nan=True)


def test_erace_s_stability_hyperparameter_drives_the_continual_hyperparameter_framework(erace_site, on_path,
                                                                                        digits):
    from raycl.methods import make_config
    from raycl.selection import Branches, ChfSettings, decisions, select_per_task

    on_path(erace_site)
    tasks = [dataclasses.replace(t, train_x=t.train_x[:60], train_y=t.train_y[:60]) for t in digits.tasks[:3]]
    bench = dataclasses.replace(digits, tasks=tasks)
    base = make_config("erace", {"n_epochs": 1, "buffer_size": 30}, bench.defaults)
    settings = ChfSettings(grid=(0.1, 0.02), drop=0.01, decay=0.5, decay_limit=2)
    result = select_per_task(Branches(bench, "erace", base, seed=0), "chf", settings)
    chosen = decisions(result)
    assert [task for task, _ in chosen] == [0, 1, 2]
    # The schedule sets ER-ACE's declared stability hyperparameter, on the ladder down from its most stable value.
    weights = [values["replay_weight"] for _, values in chosen]
    assert all(w in (1.0, 0.5, 0.25) for w in weights), chosen
    assert all(values["lr"] in (0.1, 0.02) for _, values in chosen)


def test_erace_is_tuned_end_to_end_and_its_best_args_replay(erace_site, tmp_path):
    best = tmp_path / "best.yaml"
    env = env_with(erace_site)
    # In cohorts of two: members of one population differ in ER-ACE's per-member hyperparameters.
    proc = run_cli("tune.py", "--method", "erace", "--samples", "4", "--population", "2", "--n-epochs", "1",
                   "--buffer-size", "100",
                   "--storage-path", str(tmp_path / "exp"), "--best-args", str(best), "--verbose", "0",
                   env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entry = yaml.safe_load(best.read_text())["seq-digits"]["erace"][100]
    config = entry["config"]
    assert config["buffer_size"] == 100 and config["n_epochs"] == 1 and 0.25 <= config["replay_weight"] <= 2.0
    rows = pq.read_table(tmp_path / "exp" / "erace-seq-digits-b100" / "trials.parquet").to_pylist()
    assert len(rows) == 4
    cohorts = {}
    for row in rows:
        cohorts.setdefault(row["cohort"], []).append(row)
    assert sorted(map(len, cohorts.values())) == [2, 2]
    for members in cohorts.values():  # shared by a cohort, drawn once; the per-member weight differs
        assert len({r["config.minibatch_size"] for r in members}) == 1
        assert len({r["config.replay_weight"] for r in members}) == 2
    out = tmp_path / "run.json"
    proc = run_cli("train.py", "--method", "erace", "--load-best-args", str(best), "--buffer-size", "100",
                   "--json", str(out), "--threads", "1", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    replayed = json.loads(out.read_text())
    assert replayed["method"] == "erace"
    assert {k: replayed["config"][k] for k in config} == config


# ----- package.module:Class, a solo learner ---------------------------------------------------------
SOLO = """
    import dataclasses

    import torch.nn.functional as F

    from raycl.hparams import hp
    from raycl.methods.base import ContinualMethod, TrainConfig


    @dataclasses.dataclass
    class DecayConfig(TrainConfig):
        weight_decay: float = hp(0.0, "L2 penalty on the weights", low=0.0)


    class Decay(ContinualMethod):
        \"\"\"Fine-tuning with an L2 penalty, one network per member.\"\"\"

        name = "decay"
        Config = DecayConfig
        search_space = "decay.yaml"
        stability_task = 1

        def observe(self, x, y, task):
            penalty = sum(p.pow(2).sum() for p in self.net.parameters())
            loss = F.cross_entropy(self.net(self.augment(x)), y) + self.config.weight_decay * penalty
            self.step(loss)
            return loss.detach()
    """


def test_a_solo_method_named_by_module_and_class_trains_member_by_member(tmp_path, on_path):
    from raycl.methods import get_population_method
    from raycl.methods.base import MemberwiseMethod
    from raycl.tune.space import load_space

    (tmp_path / "my_decay.py").write_text(textwrap.dedent(SOLO))
    (tmp_path / "decay.yaml").write_text("method: decay\nparams:\n  lr: {loguniform: [0.01, 0.1]}\n"
                                         "  weight_decay: {loguniform: [1.0e-5, 1.0e-2]}\n")
    on_path(tmp_path)
    assert issubclass(get_population_method("my_decay:Decay"), MemberwiseMethod)
    assert load_space("my_decay:Decay", "seq-digits").searched == ["lr", "weight_decay"]
    out = tmp_path / "run.json"
    proc = run_cli("train.py", "--method", "my_decay:Decay", "--weight-decay", "0.001", "--n-epochs", "1",
                   "--seeds", "2", "--json", str(out), "--threads", "1", env=env_with(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["method"] == "my_decay:Decay" and doc["config"]["weight_decay"] == 0.001 and doc["seeds"] == [0, 1]
    assert doc["population"] == 2


# ----- broken plugins, and a benchmark plugin -------------------------------------------------------
BROKEN = {
    "broken-import": "method plugin 'broken-import' (third_party.missing_dependency:Method): cannot import "
                     "third_party.missing_dependency: ModuleNotFoundError: No module named 'a_library_nobody_installed'",
    "no-config": "method plugin 'no-config' (third_party.methods:NoConfig): NoConfig has no Config, the dataclass "
                 "of hp() fields that declares its hyperparameters",
    "no-default": "method plugin 'no-default' (third_party.methods:NoDefault): hyperparameter 'temperature' of "
                  "NoDefaultConfig has no default; declare it with hp(default, help)",
    "not-a-method": "method plugin 'not-a-method' (third_party.methods:not_a_method): not_a_method is not a method "
                    "class (subclass raycl.methods.base.PopulationMethod, or ContinualMethod for a solo learner)",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_method_plugin_is_one_line_naming_it(name, third_party_site):
    proc = run_cli("train.py", "--method", name, env=env_with(third_party_site))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: " + BROKEN[name]), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_broken_plugins_do_not_break_the_others_and_a_benchmark_plugin_loads(third_party_site, on_path):
    from raycl.data import load_benchmark
    from raycl.methods import get_method
    from raycl.data import benchmark_names
    from raycl.tune.options import SearchOptions
    from raycl.tune.space import parse_space

    proc = run_cli("tune.py", "--method", "er", "--help", env=env_with(third_party_site))
    assert proc.returncode == 0, proc.stderr
    assert "broken-import" in proc.stdout and "two-digit-tasks" in proc.stdout
    on_path(third_party_site)
    with pytest.raises(RayclError, match="not a method class"):
        get_method("third_party.methods:not_a_method")
    assert "two-digit-tasks" in benchmark_names()
    assert load_benchmark("two-digit-tasks").n_tasks == 2
    SearchOptions(method="er", dataset="two-digit-tasks").validate()
    space = parse_space({"params": {"lr": {"loguniform": [0.01, 0.1]}}, "datasets": {"two-digit-tasks": {"lr": 0.05}}},
                        "er", "two-digit-tasks", "s.yaml")
    assert space.to_dict() == {"lr": 0.05}
    with pytest.raises(RayclError, match="benchmark plugin 'no-benchmark' .*returned NoneType, not a raycl.data.Benchmark"):
        load_benchmark("no-benchmark")
    with pytest.raises(RayclError, match="unknown dataset 'two-digit-task'; allowed: .*two-digit-tasks"):
        load_benchmark("two-digit-task")


# ----- a subclass of a built-in, without a space of its own ------------------------------------------
SUBCLASS = {
    "heldout/__init__.py": """
        from raycl.methods.er import Er


        class HeldoutEr(Er):
            \"\"\"ER under its own name, nothing else of its own: not even a search space.\"\"\"

            name = "heldout_er"


        class WithItsOwn(HeldoutEr):
            name = "with_its_own"
            search_space = "own.yaml"
        """,
    "heldout/own.yaml": """
        method: with_its_own
        params:
          lr: {loguniform: [0.01, 0.02]}
        """,
    "heldout-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: heldout\nVersion: 0.1\n",
    "heldout-0.1.dist-info/entry_points.txt": """
        [raycl.methods]
        heldout_er = heldout:HeldoutEr
        with_its_own = heldout:WithItsOwn
        """,
}


@pytest.fixture(scope="module")
def subclass_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("subclass")
    for name, text in SUBCLASS.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(textwrap.dedent(text).lstrip())
    return site


def test_a_subclass_of_a_built_in_searches_its_ancestor_s_space_unless_it_has_its_own(subclass_site, on_path,
                                                                                       tmp_path, caplog):
    import logging

    from raycl.tune.space import SPACE_DIR, load_space

    on_path(subclass_site)
    with caplog.at_level(logging.INFO, logger="raycl.tune.space"):
        space = load_space("heldout_er", "seq-digits")
    assert space.method == "heldout_er" and space.source == str(SPACE_DIR / "er.yaml")
    assert space.to_dict() == load_space("er", "seq-digits").to_dict()
    said = [r.getMessage() for r in caplog.records if r.name == "raycl.tune.space"]
    assert len(said) == 1 and "heldout_er has no search space of its own" in said[0] and "er.yaml" in said[0]
    # Its own (search_space, next to its module) and --space win over the ancestor's.
    assert load_space("with_its_own", "seq-digits").to_dict() == {"lr": {"loguniform": [0.01, 0.02]}}
    given = tmp_path / "space.yaml"
    given.write_text(yaml.safe_dump({"method": "heldout_er", "params": {"lr": 0.05}}))
    assert load_space("heldout_er", "seq-digits", given).to_dict() == {"lr": 0.05}


def test_a_subclass_of_a_built_in_tunes_without_space(subclass_site, tmp_path):
    best = tmp_path / "best.yaml"
    proc = run_cli("tune.py", "--method", "heldout_er", "--samples", "2", "--population", "2", "--n-epochs", "1",
                   "--buffer-size", "50", "--storage-path", str(tmp_path / "exp"), "--best-args", str(best),
                   "--verbose", "0", env=env_with(subclass_site), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("has no search space of its own") == 1, proc.stderr[-3000:]
    config = yaml.safe_load(best.read_text())["seq-digits"]["heldout_er"][50]["config"]
    assert 0.005 <= config["lr"] <= 0.3 and config["minibatch_size"] in (10, 32, 64, 128)  # er.yaml's ranges
