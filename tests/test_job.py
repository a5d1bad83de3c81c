"""A job of the promotion form run again after it died mid-segment (raycl.tune.job): it continues
from its last task with the state it kept in the experiment, and ends as if never interrupted."""

import json
from types import SimpleNamespace

import pytest

from raycl.tune import job as job_module
from raycl.tune.job import job_file, job_state_file, job_trainable
from raycl.vocabulary import JOB


class Died(Exception):
    """The trial's process dying right after a report."""


class Session:
    """What Tune's session gives a trainable (its reports, the trial id), to run a job outside Tune;
    ``die_after`` reports, the job dies."""

    def __init__(self, die_after: int | None = None):
        self.reports, self.die_after = [], die_after

    def report(self, metrics, checkpoint=None):
        assert checkpoint is None  # a job keeps its state itself, never in a Tune checkpoint
        self.reports.append(metrics)
        if self.die_after is not None and len(self.reports) >= self.die_after:
            raise Died

    def get_context(self):
        return SimpleNamespace(get_trial_id=lambda: "trial0")


@pytest.fixture
def run(monkeypatch, few_digits, ray_cluster):
    def run_job(experiment, session):
        monkeypatch.setattr(job_module, "tune", session)
        config = {JOB: {"id": "job00001", "start": 0, "end": 2, "planned": 2,
                        "configs": [{"id": "c-0", "params": {"lr": 0.05, "n_epochs": 1}, "audit": False},
                                    {"id": "c-1", "params": {"lr": 0.1, "n_epochs": 1}, "audit": False}]}}
        job_trainable(config, benchmarks=[few_digits], method="sgd", seeds=[0], threads=1, experiment=str(experiment))
        return session.reports
    return run_job


def test_a_job_that_died_after_a_task_continues_from_it_and_ends_as_if_never_interrupted(run, tmp_path):
    whole = run(tmp_path / "whole", Session())
    assert [r["task"] for r in whole] == [1, 2]

    experiment = tmp_path / "interrupted"
    died = Session(die_after=1)
    with pytest.raises(Died):
        run(experiment, died)
    assert (experiment / "jobs" / "job00001.state.pt").is_file()
    again = run(experiment, Session())
    # Task 1's report again (the process may have died before Tune had it), then task 2 trained.
    assert [r["task"] for r in again] == [1, 2] and again[0] == died.reports[0]
    assert not (experiment / "jobs" / "job00001.state.pt").exists()  # gone once the job has ended
    ended, uninterrupted = (json.loads(open(job_file(str(e), "job00001")).read())
                            for e in (experiment, tmp_path / "whole"))
    assert ended["seconds"][0] == died.reports[0]["task_seconds"][0]  # task 1 was not trained again
    assert ended["records"] == uninterrupted["records"] and ended["matrices"] == uninterrupted["matrices"]
    assert job_state_file(str(experiment), "job00001").endswith("jobs/job00001.state.pt")
