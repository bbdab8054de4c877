"""Each skill group, switched on from params alone, trains one short epoch through the real
train stage on a small real subset, and its params reach the stage's MLflow run."""
import shutil
import sys

import pytest
from conftest import copy_project, project_env, run
from mlflow import MlflowClient

GROUPS = {
    "augment": ["train.augment.rotation=30", "train.augment.resized_crop_scale=[0.8,1.0]",
                "train.augment.color_jitter.brightness=0.2", "train.augment.color_jitter.contrast=0.2",
                "train.augment.policy=trivialaugment", "train.augment.random_erasing=0.25",
                "train.augment.mixup_alpha=0.4", "train.augment.cutmix_alpha=1.0"],
    "loss": ["train.loss.name=focal", "train.loss.focal_gamma=2.0", "train.loss.center_weight=0.01",
             "train.loss.triplet_weight=0.1", "train.loss.triplet_mining=hard"],
    "head": ["train.head.name=arcface", "train.head.arcface_margin=0.3"],
    "optimizer": ["train.optimizer.name=lars", "train.optimizer.lr=1.0", "train.optimizer.lookahead.enabled=true",
                  "train.batch_size=512"],
    "schedule": ["train.schedule.name=onecycle", "train.schedule.onecycle_pct_start=0.25"],
    "extras": ["train.ema.enabled=true", "train.ema.decay=0.99", "train.grad_clip=2.0", "train.channels_last=false"],
    "model": ["train.model=sp_dwcnn_s"],
}


@pytest.fixture(scope="module")
def prepared_repo(prepared_project, tmp_path_factory):
    """The shared prepared project; one epoch per run (what is checked is the wiring)."""
    return copy_project(prepared_project, tmp_path_factory.mktemp("skills") / "project", {"train.epochs": 1})


def _train_run(repo, overrides, monkeypatch):
    """The train stage as `python -m stages.train OVERRIDES` runs it in `repo`, in this process
    (the interpreter and its imports once for every group: the command itself is run by
    test_distillation_from_a_teacher_checkpoint); its MLflow run."""
    import torch

    from stages import train as train_stage

    monkeypatch.chdir(repo)
    for key in ("MLFLOW_TRACKING_URI", "SKILLPACK_ROOT"):
        monkeypatch.setenv(key, project_env(repo)[key])
    monkeypatch.setattr(sys, "argv", ["stages.train", *overrides])
    threads = torch.get_num_threads()
    try:
        assert train_stage.main() == 0
    finally:
        torch.set_num_threads(threads)
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("skillpack")
    return client.search_runs([exp.experiment_id], filter_string="tags.stage = 'train'",
                              order_by=["attributes.start_time DESC"], max_results=1)[0]


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_skill_group_trains_and_reaches_mlflow(prepared_repo, group, monkeypatch):
    mlrun = _train_run(prepared_repo, GROUPS[group], monkeypatch)
    assert mlrun.info.status == "FINISHED"
    assert 0.0 <= mlrun.data.metrics["val_acc"] <= 1.0  # it trained and validated (learning: tests/test_engine.py)
    import csv

    with open(prepared_repo / "reports" / "train_log.csv") as fh:
        last_epoch = list(csv.DictReader(fh))[-1]
    assert mlrun.data.metrics["train_loss"] == pytest.approx(float(last_epoch["train_loss"]))  # the run's own figure
    for item in GROUPS[group]:
        key, value = item.split("=", 1)
        assert same_value(mlrun.data.params[key], value), (key, mlrun.data.params[key], value)


def same_value(logged: str, given: str) -> bool:
    """MLflow stores params as strings: compare as numbers, sequences or words."""
    import yaml

    def norm(text):
        value = yaml.safe_load(text.replace("(", "[").replace(")", "]"))
        return [float(v) for v in value] if isinstance(value, list) else value
    a, b = norm(logged), norm(given)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def test_distillation_from_a_teacher_checkpoint(prepared_repo, monkeypatch):
    run([sys.executable, "-m", "stages.train", "train.model=sp_cnn_m"], prepared_repo, env=project_env(prepared_repo))
    teacher = prepared_repo / "teacher.pt"
    shutil.copy(prepared_repo / "models" / "model.pt", teacher)
    mlrun = _train_run(prepared_repo, [f"train.loss.distill.teacher={teacher}", "train.loss.distill.weight=0.5",
                                       "train.model=sp_cnn_s"], monkeypatch)
    assert mlrun.data.params["train.loss.distill.teacher"] == str(teacher)
    assert mlrun.data.metrics["val_acc"] > 0.1
