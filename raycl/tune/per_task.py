"""Per-task hyperparameter selection (``--protocol chf | current-task | seen-tasks-val | pbt``) under Tune.

A trial chooses one task at a time (:mod:`raycl.selection`) and reports after each task the chosen
candidate's validation objective and every candidate's evidence, with a checkpoint (the chosen
state, the choices so far and, for the proposal protocols, the Optuna study; for PBT its centre),
so an interrupted search resumes at its last task boundary with the same decisions. chf and the
proposal protocols are one trial; PBT is ``--samples`` trials under Ray Tune's
PopulationBasedTraining, which at every task copies a top trial's checkpoint into a bottom trial
and mutates the centre it starts from. Test accuracy is evaluated for the chosen path after the last
task and kept in the checkpoint only.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch
from ray import tune

from raycl.data import Benchmark
from raycl.methods import make_config
from raycl.selection import (PBT_STREAM, Branches, Candidate, ChfSettings, TaskChoice, choose_next_task, pbt_task,
                             per_member_space, proposal_study)
from raycl.vocabulary import CHOICES_FILE, OBJECTIVE, SELECTION_STATE_FILE, TASK


def choice_to_dict(choice: TaskChoice) -> dict:
    return {"task": choice.task, "chosen": choice.chosen, "evidence": choice.evidence,
            "candidates": [dataclasses.asdict(c) for c in choice.candidates]}


def choice_from_dict(doc: dict) -> TaskChoice:
    return TaskChoice(doc["task"], [Candidate(**c) for c in doc["candidates"]], doc["chosen"], doc["evidence"])


def selection_trainable(config: dict, *, benchmarks: list[Benchmark], method: str, base: dict, seed: int,
                        protocol: str, chf: dict, candidates: int, space, search_seed: int, threads: int,
                        optuna_storage: str | None = None, study_name: str = "per-task", gpus: float = 0.0,
                        precision: str = "fp32") -> None:
    """Choose the hyperparameters task by task by ``protocol``, on the GPU Ray assigned the trial
    (``gpus`` of one), else the CPU, at ``precision``."""
    from raycl.tune.placement import trial_device

    torch.set_num_threads(max(1, threads))
    device = trial_device(gpus, precision, benchmarks[0])
    base_config = make_config(method, base, benchmarks[0].defaults_for(method))
    branches = Branches(benchmarks, method, base_config, seed, device=device, precision=precision)
    study = define = None
    space = per_member_space(space, type(base_config))
    centre = dict(config)  # PBT: the trial's hyperparameters, the centre of its candidates
    trial_id = tune.get_context().get_trial_id() or "trial"
    if protocol in ("current-task", "seen-tasks-val"):
        from raycl.tune.optuna_storage import open_storage

        storage = open_storage(optuna_storage) if optuna_storage else None
        study, define = proposal_study(space, search_seed, storage, study_name)
    choices: list[TaskChoice] = []
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            # Onto this trial's device, whichever the checkpoint was saved from (GPU or CPU node).
            state = torch.load(Path(folder) / SELECTION_STATE_FILE, map_location=device, weights_only=False)
        branches.chosen.load_state_dict(state["run"])
        branches.trainings, branches.train_s = state["trainings"], state["train_s"]
        choices = [choice_from_dict(c) for c in state["choices"]]
        if state.get("study") is not None:
            study = pickle.loads(state["study"])
        # PBT hands a bottom trial a top trial's checkpoint with a mutated config: that config is the
        # new centre; a plain resume goes on from the centre the trial had chosen.
        if state.get("config") == config:
            centre = state["centre"]
    settings = ChfSettings(**chf)
    while not branches.finished:
        if protocol == "pbt":
            rng = np.random.default_rng([search_seed, PBT_STREAM, zlib.crc32(trial_id.encode()), branches.next_task])
            choice = pbt_task(branches, centre, space, candidates, rng)
            centre = dict(choice.values)
        else:
            choice = choose_next_task(branches, protocol, settings, study, define, candidates)
        choices.append(choice)
        chosen = choice.winner
        metrics = {TASK: choice.task + 1, OBJECTIVE: chosen.seen, "current_task_val": chosen.current,
                   "chosen": chosen.values, "candidates": len(choice.candidates), "trainings": branches.trainings}
        with tempfile.TemporaryDirectory() as folder:
            state = {"run": branches.chosen.state_dict(), "choices": [choice_to_dict(c) for c in choices],
                     "trainings": branches.trainings, "train_s": branches.train_s, "centre": centre,
                     "config": dict(config),
                     "study": pickle.dumps(study) if study is not None and optuna_storage is None else None}
            torch.save(state, Path(folder) / SELECTION_STATE_FILE)
            summary = {"choices": state["choices"], "trainings": branches.trainings, "train_s": branches.train_s,
                       "trial_id": trial_id}
            if branches.finished:  # the chosen path's test accuracy, for the record
                record = branches.chosen.record
                summary["test"] = {s: record.row(0, -1, s, "test").tolist() for s in record.settings}
                summary["val"] = {s: m.tolist() for s, m in record.matrices(0, "val").items()}
            (Path(folder) / CHOICES_FILE).write_text(json.dumps(summary))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


class SelectionProgress(tune.Callback):
    """One line per task: the chosen candidate and its evidence."""

    def __init__(self, n_tasks: int):
        self.n_tasks = n_tasks

    def on_trial_result(self, iteration, trials, trial, result, **info):
        chosen = result.get("chosen") or {}
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(chosen.items()))
        print(f"[task {result.get('task')}/{self.n_tasks}] chose {values}: val {result.get('current_task_val', 0):.2f} "
              f"on the task, {result.get('objective', 0):.2f} over the tasks seen; {result.get('candidates')} "
              f"candidates, {result.get('trainings')} trainings so far", flush=True)


def read_selections(results) -> list[dict]:
    """Every trial's record from its last checkpoint: choices, trainings, the chosen path's accuracies."""
    out = []
    for result in results:
        if result.checkpoint is None:
            continue
        with result.checkpoint.as_directory() as folder:
            path = Path(folder) / CHOICES_FILE
            if path.is_file():
                doc = json.loads(path.read_text())
                doc["choices"] = [choice_from_dict(c) for c in doc["choices"]]
                # The Tune trial this is the end of, by its folder: a trial PBT exploits after its last task
                # ends with its donor's checkpoint and last result, lineage and all.
                doc["trial_id"] = Path(result.path).name
                out.append(doc)
    return out


def read_selection(results) -> dict | None:
    """The record of the trial whose chosen path ends best over the tasks seen (the only one but for PBT)."""
    records = read_selections(results)
    if not records:
        return None
    best = max(records, key=lambda r: (len(r["choices"]), r["choices"][-1].winner.seen))
    best["trials"] = records
    return best
