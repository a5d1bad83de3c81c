"""launch/report.py on a tiny seq-digits search: valid PNGs, and a page that shows each one."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, ray_cluster):
    from raycl.tune.options import SearchOptions
    from raycl.tune.search import run_search

    root = tmp_path_factory.mktemp("report")
    run_search(SearchOptions(method="derpp", dataset="seq-digits", samples=6, storage_path=str(root / "exp"),
                             best_args=str(root / "best.yaml"), verbose=0, fixed={"n_epochs": 2}))
    return root / "exp" / "derpp-seq-digits-b500"


def test_report_writes_valid_pngs_and_a_page_showing_each(experiment, tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, str(REPO / "launch" / "report.py"), str(experiment), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = out / "index.html"
    assert f"report: {page}" in proc.stdout
    figures = sorted(out.glob("*.png"))
    names = {f.name for f in figures}
    assert {"history.png", "asha.png", "matrices.png", "stream.png"} <= names
    html = page.read_text()
    import matplotlib.image

    for figure in figures:
        data = figure.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
        image = matplotlib.image.imread(figure)
        assert image.shape[0] > 100 and image.shape[1] > 100
        assert figure.name in html
    assert "Top" in html and "<table" in html


def test_report_on_a_folder_without_a_search_is_one_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "launch" / "report.py"), str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "trials.parquet" in proc.stderr


def test_report_takes_each_parameters_scale_from_the_stored_search_space(experiment):
    from raycl.tune.report import _distributions, build_study, load_experiment
    from raycl.tune.space import load_space

    stored = yaml.safe_load((experiment / "search_space.yaml").read_text())
    shipped = load_space("derpp", "seq-digits")
    assert stored["params"] == shipped.fix({"n_epochs": 2}).to_dict()
    distributions = _distributions(load_experiment(experiment))
    # lr is searched on a log scale and minibatch_size over its declared choices, whatever was tried.
    assert distributions["lr"].log and distributions["lr"].low == stored["params"]["lr"]["loguniform"][0]
    assert distributions["minibatch_size"].choices == tuple(stored["params"]["minibatch_size"]["choice"])
    study = build_study(load_experiment(experiment))
    assert all(t.params["minibatch_size"] in (10, 32, 64, 128) for t in study.trials)
