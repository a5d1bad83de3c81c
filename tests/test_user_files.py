"""Files a user writes or edits by hand (best-args, search spaces, paper values, mammoth's files,
--start-from, a reproduction's results): whatever their shape, one line naming what is wrong, never
a traceback."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from raycl.errors import RayclError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return str(path)


def run_train(*args):
    return subprocess.run([sys.executable, str(REPO / "launch" / "train.py"), *args], capture_output=True, text=True,
                          timeout=300)


def test_a_best_args_entry_without_buffer_size_trains_with_its_key_s(tmp_path):
    """A hand-written entry under 500 whose config names no buffer size, replayed without --buffer-size."""
    path = write(tmp_path, "best.yaml", """
        seq-digits:
          er:
            500:
              config: {lr: 0.1, n_epochs: 1}
        """)
    out = tmp_path / "run.json"
    proc = run_train("--method", "er", "--load-best-args", path, "--threads", "1", "--json", str(out))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    said = [line for line in proc.stderr.splitlines() if "names no buffer_size" in line]
    assert said == [f"{path}: entry seq-digits/er/500 names no buffer_size in its config: it trains with the "
                    "buffer size its key names, 500"]
    assert json.loads(out.read_text())["config"]["buffer_size"] == 500


def test_a_best_args_provenance_of_the_wrong_shape_is_one_line(tmp_path):
    path = write(tmp_path, "best.yaml", """
        seq-digits:
          er:
            500:
              config: {lr: 0.1, buffer_size: 500}
              provenance: {benchmark_options: [n_tasks, 5]}
        """)
    proc = run_train("--method", "er", "--load-best-args", path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {path}: the provenance of seq-digits/er must give "
                                                "benchmark_options as a mapping and backbone as a name"]


@pytest.mark.parametrize("text, size, message", [
    ("seq-digits: {er: {big: {config: {lr: 0.1}}}}", None,
     "seq-digits/er has the key 'big'; entries are keyed by buffer size, a whole number"),
    ("seq-digits: [er]", None, "seq-digits must map methods to their entries, not be a list"),
    ("seq-digits: {er: [1, 2]}", None, "seq-digits/er must map buffer sizes to entries, not be a list"),
    ("seq-digits: {er: {500: [1, 2]}}", None, "entry seq-digits/er/500 has no 'config' mapping"),
    ("seq-digits: {er: {500: {config: {buffer_size: 200}}}}", 500,
     "entry seq-digits/er/500 has buffer_size 200 in its config; an entry's key is the buffer size"),
    ("seq-digits: {er: {500: {config: {lr: 0.1}}, 200: {config: {lr: 0.2}}}}", None,
     r"holds seq-digits/er for buffer sizes \[200, 500\]; choose one with --buffer-size"),
    ("a: [b", None, r"is not valid YAML: expected ',' or ']', but got '<stream end>' \(line 2, column 1\)$"),
])
def test_a_best_args_file_of_the_wrong_shape_is_one_line(tmp_path, text, size, message):
    from raycl.files import load_best_args, load_best_args_provenance

    path = write(tmp_path, "best.yaml", text + "\n")
    # The provenance is read of the entry the config came from: only the config's buffer size is the config's.
    for read in (load_best_args,) if "buffer_size 200" in message else (load_best_args, load_best_args_provenance):
        with pytest.raises(RayclError, match=message) as caught:
            read(path, "seq-digits", "er", size)
        assert "\n" not in str(caught.value)


def test_saving_into_a_best_args_file_of_the_wrong_shape_is_one_line(tmp_path):
    from raycl.files import save_best_args

    path = write(tmp_path, "best.yaml", "seq-digits: {er: [1]}\n")
    with pytest.raises(RayclError, match="seq-digits/er must map buffer sizes to entries; fix the file"):
        save_best_args(path, "seq-digits", "er", {"lr": 0.1, "buffer_size": 50}, {})


@pytest.mark.parametrize("doc, message", [
    ({"method": "er", "params": {"lr": 0.1}, "datasets": {"seq-digits": ["lr"]}},
     "datasets.seq-digits must map hyperparameters to values or distributions, not be a list"),
    ({"method": "er", "params": {"lr": 0.1}, "datasets": {"seq-mnist": "lr"}},  # another dataset's block
     "datasets.seq-mnist must map hyperparameters to values or distributions, not be a str"),
    ({"method": "er", "params": {"minibatch_size": {"int": [1, 10], "log": "maybe"}}},
     "parameter 'minibatch_size': log must be true or false, got 'maybe'"),
])
def test_a_search_space_of_the_wrong_shape_is_one_line(doc, message):
    from raycl.tune.space import parse_space

    with pytest.raises(RayclError, match=message):
        parse_space(doc, "er", "seq-digits", "space.yaml")


@pytest.mark.parametrize("text, message", [
    ("best_args = {'seq-digits': ['er']}", r"best_args\['seq-digits'\] must map models, not be a list"),
    ("best_args = {'seq-digits': {'er': [500]}}", r"best_args\['seq-digits'\]\['er'\] must map buffer sizes"),
    ("best_args = {'seq-digits': {'er': {500: [1]}}}",
     r"best_args\['seq-digits'\]\['er'\]\[500\] must map arguments, not be a list"),
])
def test_a_mammoth_best_args_py_of_the_wrong_shape_is_one_line_for_start_from(tmp_path, text, message):
    from raycl.tune.start_from import read_start_file

    path = write(tmp_path, "best_args.py", text + "\n")
    with pytest.raises(RayclError, match=message):
        read_start_file(path, "seq-digits", "er", 500)


def test_a_mammoth_model_config_of_the_wrong_shape_is_one_line(tmp_path):
    from raycl.tune.mammoth import read_model_config, save_model_config
    from raycl.tune.start_from import read_start_file

    path = write(tmp_path, "er.yaml", "default: [1]\nseq-digits:\n  lr: 0.1\n  500: {minibatch_size: 10}\n")
    with pytest.raises(RayclError, match="er.yaml: default must map arguments, not be a list"):
        read_start_file(path, "seq-digits", "er", 500)
    with pytest.raises(RayclError, match="default must map arguments"):
        read_model_config(path, "seq-digits", "er", 500)
    broken = write(tmp_path, "er2.yaml", "seq-digits: [1]\n")
    with pytest.raises(RayclError, match="er2.yaml: seq-digits must map arguments and buffer sizes; fix the file"):
        save_model_config(broken, "seq-digits", "er", {"lr": 0.1, "buffer_size": 500})


@pytest.mark.parametrize("doc, message", [
    ({"source": "x", "datasets": ["seq-digits"], "rows": []},
     "datasets must map each dataset to its setting and batch size, rows be a list"),
    ({"source": "x", "datasets": {"seq-digits": ["class_il"]}, "rows": []},
     "datasets.seq-digits must give its setting and batch_size, not be a list"),
    ({"source": "x", "datasets": {"seq-digits": {"setting": "class_il", "batch_size": "ten"}}, "rows": []},
     "datasets.seq-digits: batch_size must be a number, got 'ten'"),
    ({"source": "x", "datasets": {"seq-digits": {"setting": "class_il"}}, "rows": []},
     "datasets.seq-digits: needs 'batch_size'"),
])
def test_a_paper_values_file_of_the_wrong_shape_is_one_line(tmp_path, doc, message):
    from raycl.tune.reproduce import load_paper_table

    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(RayclError, match=message):
        load_paper_table(path)


@pytest.mark.parametrize("results", [{"seq-digits/er/50": [1]}, {"seq-digits/er/50": {"mean": "high"}}, [1, 2]])
def test_a_reproduction_s_results_of_the_wrong_shape_are_one_line(tmp_path, results):
    from raycl.tune.reproduce import read_results

    (tmp_path / "results.json").write_text(json.dumps(results))
    with pytest.raises(RayclError, match="is not a reproduction's results .*; move it away to start over"):
        read_results(tmp_path)
