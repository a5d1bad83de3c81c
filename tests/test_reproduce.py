"""launch/reproduce.py: the paper file, row selection, and a tiny reproduction on seq-digits."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from raycl.errors import RayclError
from raycl.tune.reproduce import ReproduceOptions, load_paper_table, reproduce

REPO = Path(__file__).resolve().parents[1]


def test_shipped_paper_file_has_the_default_rows_with_their_arguments():
    table = load_paper_table()
    assert "arXiv:2004.07211" in table.source
    rows = table.select(None)
    assert len(rows) == 18
    assert {(r.dataset, r.method, r.buffer_size) for r in rows} == {
        (d, m, b) for d in ("seq-mnist", "perm-mnist", "rot-mnist") for m in ("er", "der", "derpp") for b in (200, 500)}
    by_key = {r.key: r for r in table.rows}
    assert by_key["seq-mnist/derpp/500"].accuracy == 91.00
    assert by_key["seq-mnist/derpp/500"].args == {"lr": 0.03, "minibatch_size": 10, "alpha": 1.0, "beta": 0.5}
    assert by_key["seq-mnist/derpp/500"].batch_size == 10 and by_key["seq-mnist/derpp/500"].setting == "class_il"
    assert by_key["rot-mnist/er/500"].batch_size == 128 and by_key["rot-mnist/er/500"].setting == "domain_il"
    assert all(r.args for r in rows)


def test_shipped_notebook_rows_are_chf_on_masked_class_il_at_batch_64():
    from raycl.tune.reproduce import fixed_args

    table = load_paper_table("der-notebook")
    by_key = {r.key: r for r in table.select(None)}
    assert sorted(by_key) == ["seq-mnist/der/500", "seq-mnist/derpp/500"]
    der, derpp = by_key["seq-mnist/der/500"], by_key["seq-mnist/derpp/500"]
    assert (der.accuracy, der.task_il, der.chf_drop, derpp.accuracy, derpp.chf_drop) == (94.51, 98.71, 0.03, 94.02, 0.01)
    assert all(r.setting == "masked_class_il" and r.protocol == "chf" and r.per_task for r in (der, derpp))
    # chf chooses lr and the stability weights itself: the row's replay minibatch is fixed, not a start point.
    assert fixed_args(der) == {"minibatch_size": 32, "batch_size": 64, "n_epochs": 1, "buffer_size": 500}


def test_rows_are_chosen_by_pattern_and_unknown_ones_name_the_allowed():
    table = load_paper_table()
    assert [r.key for r in table.select(["rot-mnist/*/500"])] == ["rot-mnist/er/500", "rot-mnist/der/500",
                                                                  "rot-mnist/derpp/500"]
    assert len(table.select(["*/derpp/*", "seq-mnist/derpp/500"])) == 6
    with pytest.raises(RayclError, match=r"unknown row 'rot-mnist/ewc/\*'; allowed: .*rot-mnist/derpp/500"):
        table.select(["rot-mnist/ewc/*"])


def write_paper(tmp_path, rows, **extra) -> str:
    doc = {"source": "a test table", "datasets": {"seq-digits": {"setting": "class_il", "batch_size": 10}},
           "rows": rows, **extra}
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.mark.parametrize("row, message", [
    ({"dataset": "seq-digits", "method": "er", "buffer_size": 50, "accuracy": 80, "args": {"lrr": 0.1}},
     "unknown hyperparameter .*'lrr'"),
    ({"dataset": "seq-mnsit", "method": "er", "accuracy": 80}, "unknown dataset 'seq-mnsit'.*allowed: seq-digits"),
    ({"dataset": "seq-digits", "method": "err", "accuracy": 80}, "unknown method 'err'"),
    ({"dataset": "seq-digits", "method": "er", "accuracy": 80, "buffer": 5}, "unknown key 'buffer'"),
    ({"dataset": "seq-digits", "method": "er", "buffer_size": 50, "accuracy": 80, "args": {"lr": "fast"}},
     "'lr'.*float.*'fast'"),
    ({"dataset": "seq-digits", "method": "er", "buffer_size": 50}, r"rows\[0\]: needs 'accuracy' \(a number\)"),
    ({"dataset": "seq-digits", "method": "er", "accuracy": "high"}, "rows.0.: accuracy must be a number, got 'high'"),
    ({"dataset": "seq-digits", "method": "er", "accuracy": 80, "args": [0.1]}, "args must map hyperparameters"),
    ({"dataset": "seq-digits", "method": "er", "accuracy": 80, "protocol": "chf", "setting": "cil"},
     "unknown setting 'cil'"),
    ({"dataset": "seq-digits", "method": "er", "accuracy": 80, "chf_drop": 0.1}, "chf_drop applies to protocol chf"),
    ("seq-digits/er", r"rows\[0\]: a row is a mapping"),
])
def test_bad_paper_files_give_one_clear_error(tmp_path, row, message):
    with pytest.raises(RayclError, match=message):
        load_paper_table(write_paper(tmp_path, [row]))


def test_tiny_reproduction_tries_the_paper_first_saves_each_row_and_resumes(tmp_path, ray_cluster):
    paper_args = {"lr": 0.05, "minibatch_size": 10}
    rows = [{"dataset": "seq-digits", "method": "er", "buffer_size": 50, "accuracy": 60.0, "args": paper_args},
            {"dataset": "seq-digits", "method": "sgd", "accuracy": 20.0, "args": {"lr": 0.05}}]
    paper = write_paper(tmp_path, rows)
    out = tmp_path / "out"
    lines = []
    options = ReproduceOptions(out=str(out), paper=paper, rows=["seq-digits/er/*"], samples=3, seeds=2)
    results, markdown = reproduce(options, progress=lines.append)

    entry = results["seq-digits/er/50"]
    assert len(entry["per_seed"]) == 2 and entry["seeds"] == [0, 1] and entry["samples"] == 3
    assert entry["difference"] == pytest.approx(entry["mean"] - 60.0)
    assert 20 < entry["mean"] <= 100 and entry["paper_start"]
    # The paper's arguments were the first configuration tried, at the paper's batch size and one epoch.
    trials = pq.read_table(out / "experiments" / "seq-digits-er-b50" / "trials.parquet").to_pylist()
    assert len(trials) == 3
    assert any(t["config.lr"] == 0.05 and t["config.minibatch_size"] == 10 for t in trials)
    assert all(t["config.batch_size"] == 10 and t["config.n_epochs"] == 1 for t in trials)
    assert json.loads((out / "results.json").read_text()) == results
    assert "| seq-digits | er | 50 | Class-IL | 60.00 |" in markdown
    assert (out / "reproduction.md").read_text() == markdown
    assert yaml.safe_load((out / "best_args" / "seq-digits.yaml").read_text())["seq-digits"]["er"]

    with pytest.raises(RayclError, match="already has rows seq-digits/er/50: pass --resume"):
        reproduce(options, progress=lines.append)

    lines.clear()
    options.rows, options.resume = None, True
    results, markdown = reproduce(options, progress=lines.append)
    assert results["seq-digits/er/50"] == entry  # kept, not re-run
    assert any("seq-digits/er/50: done already" in line for line in lines)
    assert "seq-digits/sgd/-" in results and "| seq-digits | sgd | - |" in markdown


def test_reproduce_cli_lists_rows_and_rejects_bad_ones():
    def run(*args):
        return subprocess.run([sys.executable, str(REPO / "launch" / "reproduce.py"), *args], capture_output=True,
                              text=True, timeout=120)

    listed = run("--list")
    assert listed.returncode == 0 and "rot-mnist/derpp/500" in listed.stdout and "92.77" in listed.stdout
    bad = run("--rows", "rot-mnist/foo/1")
    assert bad.returncode == 2 and "unknown row 'rot-mnist/foo/1'" in bad.stderr
    assert "Traceback" not in bad.stderr
    help_text = run("--help").stdout
    for flag in ("--rows", "--samples", "--seeds", "--resume", "--no-paper-start", "--out", "--gpus-per-trial",
                 "--wait-for-resources", "--precision"):
        assert flag in help_text


def test_rows_that_differ_in_buffer_size_are_one_table_search_each_size_trying_its_own_paper_args(
        tmp_path, ray_cluster):
    rows = [{"dataset": "seq-digits", "method": "er", "buffer_size": size, "accuracy": 60.0,
             "args": {"lr": lr, "minibatch_size": 10}} for size, lr in ((50, 0.05), (100, 0.07))]
    out = tmp_path / "out"
    lines = []
    results, markdown = reproduce(ReproduceOptions(out=str(out), paper=write_paper(tmp_path, rows), samples=3, seeds=1),
                                  progress=lines.append)
    assert sorted(results) == ["seq-digits/er/100", "seq-digits/er/50"]
    assert [p.name for p in (out / "experiments").iterdir()] == ["seq-digits-er-b50,100"]  # one search
    trials = pq.read_table(out / "experiments" / "seq-digits-er-b50,100" / "trials.parquet").to_pylist()
    assert sorted(t["buffer_size"] for t in trials) == [50, 50, 50, 100, 100, 100]
    for size, lr in ((50, 0.05), (100, 0.07)):  # each size tried its own row's arguments first
        assert any(t["config.lr"] == lr for t in trials if t["buffer_size"] == size)
        assert not any(t["config.lr"] == lr for t in trials if t["buffer_size"] != size)
        entry = results[f"seq-digits/er/{size}"]
        assert entry["buffer_size"] == size and entry["samples"] == 3 and entry["paper_start"]
        assert entry["table"] == ["seq-digits/er/50", "seq-digits/er/100"]
    entries = yaml.safe_load((out / "best_args" / "seq-digits.yaml").read_text())["seq-digits"]["er"]
    assert {50, 100} <= set(entries)
    assert "| seq-digits | er | 50 |" in markdown and "| seq-digits | er | 100 |" in markdown
    assert any("a table of buffer sizes 50, 100" in line for line in lines)
