"""`skillpack tune`: the search-space file, the study (pruner, the current recipe first, MLflow),
the recipe it writes, and workers sharing one journal storage (one of them killed mid-trial)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from skillpack.config import ParamsError, load_params
from skillpack.train.recipes import dvc_command, load_recipe, write_recipe
from skillpack.train.search_space import as_overrides, default_point, load_space, trial_params
from tests.conftest import ROOT, set_params

# lr drawn from [1e-6, 0.2] (log): after trial 0 (params' 0.2), TPE's seeded start-up draws are far
# below it, so their first epoch trails and the median pruner (1 start-up trial, no warm-up) stops them.
TINY_SPACE = {"train.optimizer.lr": {"float": [1.0e-6, 0.2], "log": True}, "train.head.dropout": {"float": [0.0, 0.3]}}
TINY_PARAMS = {"train.model": "sp_cnn_s", "train.epochs": 2, "train.batch_size": 64, "train.threads": 1,
               "train.amp": "off", "train.schedule.warmup_epochs": 0, "train.augment.crop_padding": 0,
               "runtime.device": "cpu", "tune.space": "search/tiny.yaml", "tune.n_trials": 3,
               "tune.startup_trials": 1, "tune.warmup_epochs": 0}


def write_space(folder: Path, space: dict, name: str = "tiny.yaml") -> Path:
    path = folder / "search" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tune_project(tmp_path_factory, fmnist) -> Path:
    """params.yaml, recipes.yaml, a search space and a prepared store of 300 train / 100 val images."""
    from skillpack.data.store import carve_splits, write_store

    folder = tmp_path_factory.mktemp("tune")
    for name in ("params.yaml", "recipes.yaml"):
        (folder / name).write_text((ROOT / name).read_text())
    set_params(folder, TINY_PARAMS)
    write_space(folder, TINY_SPACE)
    write_store(folder / "data" / "prepared", fmnist, carve_splits(fmnist, 0.25, 0, max_train=400, max_test=50))
    return folder


# ------------------------------------------------------------------ the search-space file

@pytest.mark.parametrize("body, says", [
    ({"train.optimizer.learning_rate": {"float": [0.1, 0.2]}}, "train.optimizer.learning_rate: not a params key"),
    ({"train.optimizer.lr": {"float": [0.3, 0.1]}}, "train.optimizer.lr: low 0.3 is not below high 0.1"),
    ({"train.optimizer.lr": {"float": [0.0, 0.1], "log": True}}, "train.optimizer.lr: log: true needs low > 0"),
    ({"train.batch_size": {"choice": [128]}}, "train.batch_size: choice takes a list of at least two values"),
    ({"train.batch_size": {"int": [64.5, 512]}}, "train.batch_size: int takes [low, high], two integers"),
    ({"train.batch_size": {"uniform": [64, 512]}}, "train.batch_size: expected one of"),
    ({"train.batch_size": {"choice": [64, 128], "log": True}}, "train.batch_size: unexpected ['log']"),
])
def test_a_bad_search_space_is_one_line_naming_the_file_and_key(tmp_path, body, says):
    path = write_space(tmp_path, body)
    with pytest.raises(ParamsError) as err:
        load_space(path, load_params(ROOT / "params.yaml"))
    assert str(err.value).startswith(f"{path}: ") and says in str(err.value) and "\n" not in str(err.value)


def test_the_first_point_is_params_own_values_and_must_lie_in_the_space(tmp_path):
    params = load_params(ROOT / "params.yaml")
    space = load_space(ROOT / "search" / "default.yaml", params)
    first = default_point(space, params, "search/default.yaml")
    assert first == {key: params.flat()[key] for key in space}
    narrow = write_space(tmp_path, {"train.optimizer.lr": {"float": [0.3, 0.5]}})
    with pytest.raises(ParamsError, match=r"train.optimizer.lr: the params value 0.2 is outside \[0.3, 0.5\]"):
        default_point(load_space(narrow, params), params, narrow)


def test_a_trial_params_go_through_the_params_loader():
    params = trial_params(ROOT / "params.yaml", ["train.epochs=3"], {"train.optimizer.lr": 0.05, "train.batch_size": 64})
    assert (params.train.optimizer.lr, params.train.batch_size, params.train.epochs) == (0.05, 64, 3)
    with pytest.raises(ParamsError, match="batch_size"):
        trial_params(ROOT / "params.yaml", [], {"train.batch_size": "many"})


# ------------------------------------------------------------------ the recipe it writes

@pytest.mark.parametrize("warmup", [0, 2])
def test_the_median_pruner_first_prunes_at_the_warm_up_epoch(warmup):
    from skillpack.train.tune import sampler_and_pruner

    params = load_params(ROOT / "params.yaml", ["tune.pruner=median", "tune.startup_trials=1",
                                                f"tune.warmup_epochs={warmup}"])
    study = optuna.create_study(direction="maximize", pruner=sampler_and_pruner(params, 0)[1])
    leader = study.ask()
    for epoch in (1, 2, 3):   # epochs count from 1, as the engine reports them
        leader.report(0.9, epoch)
    study.tell(leader, 0.9)
    trailing = study.ask()
    pruned_at = next(epoch for epoch in (1, 2, 3) if (trailing.report(0.1, epoch), trailing.should_prune())[1])
    assert pruned_at == max(warmup, 1), "tune.warmup_epochs: no pruning before this epoch"


def test_the_recipe_is_added_then_replaced_keeping_every_other_line(tmp_path):
    path = tmp_path / "recipes.yaml"
    original = (ROOT / "recipes.yaml").read_text()
    path.write_text(original)
    write_recipe("tuned", {"train.optimizer.lr": 0.05, "train.batch_size": 128}, ["best of 3"], path, "# tune:")
    first = path.read_text()
    assert first.startswith(original.rstrip("\n") + "\n") and first.endswith(
        "# tune: best of 3\ntuned:\n  train.optimizer.lr: 0.05\n  train.batch_size: 128\n")
    write_recipe("tuned", {"train.optimizer.lr": 0.1}, ["best of 5"], path, "# tune:")
    assert path.read_text() == original.rstrip("\n") + "\n# tune: best of 5\ntuned:\n  train.optimizer.lr: 0.1\n"
    assert load_recipe("tuned", params_path=ROOT / "params.yaml", recipes_path=path).train.optimizer.lr == 0.1
    write_recipe("long", {"train.epochs": 31}, ["x"], path, "# tune:")   # a recipe in the middle of the file
    assert yaml.safe_load(path.read_text())["bf16"] == yaml.safe_load(original)["bf16"]
    assert "# 10 epochs at batch 128" in path.read_text()


def test_the_dvc_command_quotes_what_the_shell_would_split():
    overrides = as_overrides({"train.optimizer.lr": 0.05, "train.augment.resized_crop_scale": [0.8, 1.0]})
    assert dvc_command(overrides) == "dvc exp run -S train.optimizer.lr=0.05 -S 'train.augment.resized_crop_scale=[0.8, 1.0]'"


# ------------------------------------------------------------------ one study, in this process

@pytest.mark.integration
def test_a_three_trial_study_prunes_starts_from_the_current_recipe_and_writes_the_best(tune_project, monkeypatch,
                                                                                       mlflow_uri):
    from mlflow import MlflowClient

    from skillpack.data import PreparedStore
    from skillpack.train.runs import RunData
    from skillpack.train.tune import TuneRun, tune

    monkeypatch.chdir(tune_project)
    store = PreparedStore("data/prepared")
    data = RunData(store.arrays("train"), store.arrays("val"), len(store.classes))
    run = TuneRun(Path("params.yaml"), ("tune.study=inproc",), folder=tune_project / "tune",
                  recipes_path=tune_project / "recipes.yaml")
    summary = tune(run, data, say=lambda line: None)
    study = optuna.load_study(study_name="inproc", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tune_project / "tune" / "inproc.journal"))))
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    assert trials[0].params == {"train.optimizer.lr": 0.2, "train.head.dropout": 0.1}
    assert trials[0].state == optuna.trial.TrialState.COMPLETE and sorted(trials[0].intermediate_values) == [1, 2]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and all(sorted(t.intermediate_values) == [1] for t in pruned), [(t.state, t.params) for t in trials]
    assert summary.finished and summary.best_number == study.best_trial.number
    assert yaml.safe_load((tune_project / "recipes.yaml").read_text())["tuned"] == study.best_trial.params
    assert summary.dvc_command == dvc_command(as_overrides(study.best_trial.params))
    assert {p.name for p in summary.plots} >= {"history.png"}
    client = MlflowClient(tracking_uri=mlflow_uri)
    (parent,) = client.search_runs([client.get_experiment_by_name("skillpack").experiment_id],
                                   "tags.stage = 'tune' and tags.study = 'inproc'")
    assert parent.info.status == "FINISHED" and float(parent.data.metrics["best_val_acc"]) == study.best_value
    assert "history.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    curves = {int(c.data.tags["trial"]): [m.value for m in client.get_metric_history(c.info.run_id, "val_acc_by_epoch")]
              for c in children}
    assert curves == {t.number: [t.intermediate_values[s] for s in sorted(t.intermediate_values)] for t in trials}


# ------------------------------------------------------------------ workers in processes

def _trials(journal: Path) -> list:
    if not journal.is_file():
        return []
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    try:
        return optuna.load_study(study_name="shared", storage=storage).get_trials()
    except KeyError:   # not created yet
        return []


@pytest.mark.integration
def test_two_workers_share_the_journal_and_a_killed_workers_trial_ends_fail(tune_project):
    """Two workers on one journal file; one is killed (SIGKILL) in the middle of a trial: that
    trial ends FAIL, the other worker carries the study to n_trials, none lost or run twice."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tune_project / 'shared.db'}",
           "SKILLPACK_ROOT": str(tune_project)}
    n = 4
    cmd = [sys.executable, "-m", "skillpack.cli", "tune", "--n-trials", str(n), "tune.study=shared"]
    workers = [subprocess.Popen([*cmd, "--worker", str(k)], cwd=tune_project, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for k in (0, 1)]
    journal, victim = tune_project / "tune" / "shared.journal", workers[0]
    deadline = time.monotonic() + 120
    while not any(t.state.name == "RUNNING" and t.user_attrs.get("worker", {}).get("pid") == victim.pid
                  for t in _trials(journal)):
        assert time.monotonic() < deadline and victim.poll() is None, victim.communicate()
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    out, err = workers[1].communicate(timeout=180)
    assert workers[1].returncode == 0, err[-3000:]
    trials = _trials(journal)
    states = [t.state.name for t in trials]
    ended = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED", "FAIL")]
    assert len(ended) == n and "RUNNING" not in states, states
    assert len({t.number for t in trials}) == len(trials)
    (failed,) = [t for t in trials if t.state.name == "FAIL"]
    assert failed.user_attrs["worker"]["pid"] == victim.pid
    assert "Traceback" not in err and "locked" not in err, err[-3000:]
    assert "dvc exp run -S" in out and "tuned" in yaml.safe_load((tune_project / "recipes.yaml").read_text())
