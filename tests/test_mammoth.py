"""mammoth's best-arguments files in and out: utils/best_args.py and models/config/<model>.yaml read
with names mapped to raycl's, checked against a search, and the winner written back for mammoth.
The searches that start from such a file are in test_tune.py (they share its Ray cluster)."""

import pytest
import yaml

from raycl.errors import RayclError
from raycl.files import save_best_args
from raycl.tune import mammoth
from raycl.tune.start_from import (MAMMOTH_BEST_ARGS, MAMMOTH_MODEL_CONFIG, RAYCL_BEST_ARGS, StartFile,
                                   read_start_file, start_point)

# An excerpt of mammoth's utils/best_args.py (seq-mnist and seq-cifar10 rows as mammoth ships them),
# with CLS-ER's and SYNERgy's rot-mnist rows from their repositories' copies of the file.
BEST_ARGS_PY = """\
# Copyright 2022-present, Lorenzo Bonicelli, Pietro Buzzega, Matteo Boschini, Angelo Porrello, Simone Calderara.
# All rights reserved.

best_args = {
    'seq-mnist': {
        'sgd': {-1: {'lr': 0.03, 'batch_size': 10, 'n_epochs': 1}},
        'ewc_on': {-1: {'lr': 0.03,
                        'e_lambda': 90,
                        'gamma': 1.0,
                        'batch_size': 10,
                        'n_epochs': 1}},
        'derpp': {200: {'lr': 0.03,
                        'minibatch_size': 128,
                        'alpha': 0.2,
                        'beta': 1.0,
                        'batch_size': 10,
                        'n_epochs': 1},
                  500: {'lr': 0.03,
                        'minibatch_size': 10,
                        'alpha': 1.0,
                        'beta': 0.5,
                        'batch_size': 10,
                        'n_epochs': 1}}},
    'rot-mnist': {
        'clser': {
                500: {
                    'reg_weight': 0.75,
                    'stable_model_update_freq': 1,
                    'stable_model_alpha': 0.999,
                    'plastic_model_update_freq': 1,
                    'plastic_model_alpha': 0.99,
                    'lr': 0.2,
                    'minibatch_size': 128,
                    'batch_size': 128,
                    'n_epochs': 1,
                }},
        'synergy': {
            500: {
                'reg_weight': 1,
                'ema_update_freq': 1,
                'ema_alpha': 0.99,
                'penalty_weight': 1,
                'fisher_alpha': 0.99,
                'fisher_update_freq': 0.8,
                'lr': 0.2,
                'minibatch_size': 128,
                'batch_size': 128,
                'n_epochs': 1,
            },
        },
    },
    'seq-cifar10': {'derpp': {500: {'lr': 0.03,
                                    'minibatch_size': 32,
                                    'alpha': 0.2,
                                    'beta': 0.5,
                                    'batch_size': 32,
                                    'n_epochs': 50}}},
}
"""

# mammoth's models/config/derpp.yaml (its seq-cifar100 section as shipped) with a default section and
# a seq-mnist section written the way mammoth's --model_config best reads them.
DERPP_YAML = """\
default:
  optim_wd: 0.0
  optim_mom: 0.0
seq-cifar100:
  dataset_config: xder
  500:
    alpha: 0.3
    beta: 0.5
    lr: 0.03
    model: derpp
seq-mnist:
  batch_size: 10
  n_epochs: 1
  lr: 0.1
  200:
    alpha: 0.2
    beta: 1.0
    lr: 0.03
    minibatch_size: 128
    model: derpp
"""

# mammoth's models/config/ewc_on.yaml as shipped: a model without a buffer has no buffer sections.
EWC_ON_YAML = """\
seq-cifar10:
  e_lambda: 10
  gamma: 1
  lr: 0.1
  model: ewc_on
  n_epochs: 50
"""


@pytest.fixture
def best_args_py(tmp_path):
    path = tmp_path / "utils" / "best_args.py"
    path.parent.mkdir()
    path.write_text(BEST_ARGS_PY)
    return str(path)


@pytest.fixture
def derpp_yaml(tmp_path):
    path = tmp_path / "models" / "config" / "derpp.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(DERPP_YAML)
    return str(path)


def test_best_args_py_is_parsed_without_running_it_and_mapped_to_raycl_names(best_args_py, tmp_path):
    start = read_start_file(best_args_py, "seq-mnist", "derpp", 500)
    assert start.format == MAMMOTH_BEST_ARGS and start.unmapped == {}
    assert start.values == {"lr": 0.03, "minibatch_size": 10, "alpha": 1.0, "beta": 0.5, "batch_size": 10,
                            "n_epochs": 1}
    assert read_start_file(best_args_py, "seq-mnist", "ewc", None).values == {
        "lr": 0.03, "ewc_lambda": 90, "gamma": 1.0, "batch_size": 10, "n_epochs": 1}  # ewc_on, key -1
    assert read_start_file(best_args_py, "rot-mnist", "clser", 500).values == {
        "reg_weight": 0.75, "stable_update_freq": 1, "stable_alpha": 0.999, "plastic_update_freq": 1,
        "plastic_alpha": 0.99, "lr": 0.2, "minibatch_size": 128, "batch_size": 128, "n_epochs": 1}
    synergy = read_start_file(best_args_py, "rot-mnist", "synergy", 500)
    assert synergy.values["fisher_update_freq"] == 0.8 and synergy.values["penalty_weight"] == 1
    assert synergy.unmapped == {}
    # Parsed, never run: a statement after the dict would raise if it were executed.
    ran = tmp_path / "ran.py"
    ran.write_text(BEST_ARGS_PY + "raise SystemExit('executed')\n")
    assert read_start_file(str(ran), "seq-mnist", "derpp", 200).values["alpha"] == 0.2


@pytest.mark.parametrize("dataset, method, buffer_size, message", [
    ("seq-mnist", "derpp", 5120, r"no buffer size for seq-mnist/derpp 5120 \(pass --buffer-size\); it has: 200, 500"),
    ("perm-mnist", "derpp", 500, "no dataset 'perm-mnist'; it has: rot-mnist, seq-cifar10, seq-mnist"),
    ("seq-mnist", "er", 500, "no model for dataset 'seq-mnist' 'er'; it has: derpp, ewc_on, sgd"),
])
def test_a_missing_entry_is_one_error_naming_what_the_file_has(best_args_py, dataset, method, buffer_size, message):
    with pytest.raises(RayclError, match=message):
        read_start_file(best_args_py, dataset, method, buffer_size)


def test_a_model_config_merges_default_dataset_and_buffer_sections_as_mammoth_does(derpp_yaml, tmp_path):
    start = read_start_file(derpp_yaml, "seq-mnist", "derpp", 200)
    assert start.format == MAMMOTH_MODEL_CONFIG
    # The buffer section's lr wins over the dataset's; zero weight decay and momentum are raycl's own.
    assert start.values == {"batch_size": 10, "n_epochs": 1, "lr": 0.03, "alpha": 0.2, "beta": 1.0,
                            "minibatch_size": 128}
    assert start.unmapped == {}
    cifar = read_start_file(derpp_yaml, "seq-cifar100", "derpp", 500)  # a dataset raycl lacks is still read
    assert cifar.unmapped == {"dataset_config": "xder"}
    with pytest.raises(RayclError, match="no buffer size for seq-mnist/derpp 500.*it has: 200"):
        read_start_file(derpp_yaml, "seq-mnist", "derpp", None)  # DER++'s default buffer, 500
    with pytest.raises(RayclError, match="configuration of model derpp, not of 'er'"):
        read_start_file(derpp_yaml, "seq-mnist", "er", 200)
    ewc = tmp_path / "ewc_on.yaml"
    ewc.write_text(EWC_ON_YAML)
    assert read_start_file(str(ewc), "seq-cifar10", "ewc", None).values == {
        "ewc_lambda": 10, "gamma": 1, "lr": 0.1, "n_epochs": 50}


def test_a_raycl_best_args_file_is_told_apart_and_read(tmp_path):
    path = tmp_path / "best.yaml"
    save_best_args(path, "seq-digits", "derpp", {"lr": 0.05, "alpha": 0.4, "buffer_size": 200}, {"objective": 1})
    start = read_start_file(str(path), "seq-digits", "derpp", 200)
    assert start.format == RAYCL_BEST_ARGS and start.values["lr"] == 0.05 and start.values["alpha"] == 0.4


def test_the_start_point_keeps_what_the_search_can_take_and_one_warning_names_the_rest():
    from raycl.tune.space import load_space

    space = load_space("derpp", "seq-mnist").fix({"n_epochs": 2})  # as --n-epochs 2 fixes it
    start = StartFile("best_args.py", MAMMOTH_BEST_ARGS,
                      values={"lr": 0.5, "alpha": 1.0, "beta": 0.5, "minibatch_size": 10, "batch_size": 32,
                              "n_epochs": 1, "optimizer": "adamw"},
                      unmapped={"optim_wd": 0.0005, "hal_lambda": 0.1})
    found = start_point(start, space, flags={"n_epochs": 2}, trained={"batch_size": 10, "optimizer": "sgd"})
    assert found.point == {"alpha": 1.0, "beta": 0.5, "minibatch_size": 10}
    assert set(found.ignored) == {"lr", "n_epochs", "batch_size", "optimizer", "optim_wd", "hal_lambda"}
    warning = found.warning()
    assert warning.count("\n") == 0 and warning.startswith("--start-from best_args.py: not used: ")
    assert "lr (0.5 is outside the search space's [0.005, 0.3])" in warning
    assert "n_epochs (1: the flag --n-epochs gives 2)" in warning
    assert "batch_size (32: not searched, the search trains with 10)" in warning
    assert "optimizer ('adamw' is not one of sgd, adam)" in warning
    assert "optim_wd (0.0005: no raycl hyperparameter of derpp)" in warning and "hal_lambda" in warning
    # Values the search would train with anyway are no news.
    quiet = StartFile("f", MAMMOTH_BEST_ARGS, values={"lr": 0.03, "batch_size": 10, "n_epochs": 2})
    found = start_point(quiet, space, flags={"n_epochs": 2}, trained={"batch_size": 10})
    assert found.point == {"lr": 0.03} and found.warning() is None


def test_the_winner_written_for_mammoth_reads_back_and_keeps_the_other_entries(derpp_yaml):
    winner = {"lr": 0.0421, "alpha": 0.37, "beta": 0.81, "minibatch_size": 32, "batch_size": 10, "n_epochs": 1,
              "optimizer": "sgd", "buffer_size": 500}
    mammoth.save_model_config(derpp_yaml, "seq-mnist", "derpp", winner)
    data = yaml.safe_load(open(derpp_yaml).read())
    assert data["seq-mnist"][500] == {"model": "derpp", "lr": 0.0421, "batch_size": 10, "n_epochs": 1,
                                      "optimizer": "sgd", "minibatch_size": 32, "alpha": 0.37, "beta": 0.81}
    assert data["seq-mnist"][200]["alpha"] == 0.2 and data["seq-cifar100"][500]["lr"] == 0.03  # kept
    assert mammoth.read_model_config(derpp_yaml, "seq-mnist", "derpp", 500) == winner
    # CLS-ER's names go back to CLS-ER's; a method without a buffer writes the dataset's section.
    clser = {"lr": 0.2, "reg_weight": 0.75, "stable_alpha": 0.999, "stable_update_freq": 0.8, "buffer_size": 200}
    assert mammoth.to_mammoth("clser", clser) == {"lr": 0.2, "reg_weight": 0.75, "stable_model_alpha": 0.999,
                                                  "stable_model_update_freq": 0.8}
    path = derpp_yaml.replace("derpp.yaml", "ewc_on.yaml")
    mammoth.save_model_config(path, "seq-mnist", "ewc", {"lr": 0.03, "ewc_lambda": 90.0, "gamma": 1.0})
    assert yaml.safe_load(open(path).read()) == {"seq-mnist": {"model": "ewc_on", "lr": 0.03, "e_lambda": 90.0,
                                                               "gamma": 1.0}}


def test_start_from_and_mammoth_export_are_for_stream_protocols_only():
    from raycl.tune.options import SearchOptions

    for extra in ({"start_from": "best_args.py"}, {"export_format": "mammoth"}):
        with pytest.raises(RayclError, match="applies to the stream protocols.*not to --protocol chf"):
            SearchOptions(method="derpp", protocol="chf", **extra).validate()
    with pytest.raises(RayclError, match="unknown export format 'avalanche'; allowed: mammoth, raycl"):
        SearchOptions(method="derpp", export_format="avalanche").validate()


def test_the_flags_reach_the_search_and_a_file_without_the_entry_stops_it_before_ray_starts(
        derpp_yaml, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("launch_tune", Path(__file__).parents[1] / "launch" / "tune.py")
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    status = tune.main(["--method", "derpp", "--buffer-size", "200", "--start-from", derpp_yaml,
                        "--export-format", "mammoth", "--storage-path", str(tmp_path / "exp")])
    assert status == 2
    error = capsys.readouterr().err
    assert f"error: {derpp_yaml} has no dataset 'seq-digits'; it has: seq-cifar100, seq-mnist" in error
    assert not (tmp_path / "exp").exists()


def test_a_method_mammoth_lacks_is_written_under_raycl_s_names():
    assert mammoth.to_mammoth("vib", {"lr": 0.001, "beta_2": 0.01, "n_replay": 500}) == {
        "lr": 0.001, "beta_2": 0.01, "n_replay": 500}


def test_a_method_named_module_colon_class_exports_under_its_class_s_name():
    assert mammoth.mammoth_model("raycl.methods.derpp:Derpp") == "derpp"
    assert mammoth.mammoth_model("ewc") == "ewc_on"
