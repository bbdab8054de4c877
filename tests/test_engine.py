"""The engine: learns, is deterministic on CPU, schedules as configured, resumes exactly."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from skillpack.config import TrainParams
from skillpack.engine import ImageClassifier, Trainer, build_optimizer, build_scheduler, channel_stats, seed_everything
from skillpack.models import build_model

from conftest import make_project_repo, project_env, run, small_split


def _train(fmnist, seed=0, epochs=2, n=1500, **overrides):
    x, y = small_split(fmnist, n)
    cfg = TrainParams(model="sp_cnn_s", epochs=epochs, batch_size=64, lr=0.05, **overrides)
    seed_everything(seed)
    model = ImageClassifier(build_model(cfg.model, 10, 1), *channel_stats(x))
    trainer = Trainer(model, cfg, seed, progress=False)
    result = trainer.fit(x[:1200], y[:1200], x[1200:], y[1200:])
    return trainer.model, result


def test_training_learns_and_is_deterministic(fmnist):
    model_a, result_a = _train(fmnist)
    model_b, result_b = _train(fmnist)
    assert result_a.history[-1].val_acc > 0.5  # chance is 0.1
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name
    assert result_a.history[-1].val_loss == result_b.history[-1].val_loss


def test_another_seed_gives_other_weights(fmnist):
    model_a, _ = _train(fmnist, seed=0, epochs=1)
    model_b, _ = _train(fmnist, seed=1, epochs=1)
    assert not torch.equal(model_a.backbone.fc.weight, model_b.backbone.fc.weight)


def test_cosine_schedule_with_linear_warmup():
    model = torch.nn.Linear(2, 2)
    cfg = TrainParams(epochs=4, lr=0.4, warmup_epochs=1, scheduler="cosine")
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.04)                  # warm-up starts at lr / warmup_steps
    assert lrs[1] - lrs[0] == pytest.approx(lrs[5] - lrs[4])  # linear ramp
    assert lrs[10] == pytest.approx(0.4)                  # peak after warm-up
    assert lrs[25] == pytest.approx(0.4 * 0.5 * (1 + torch.cos(torch.tensor(15 / 30 * torch.pi)).item()))
    assert lrs[-1] < 0.01


def test_no_weight_decay_on_norms_and_biases():
    model = build_model("sp_cnn_s", 10, 1)
    opt = build_optimizer(model, TrainParams(weight_decay=5e-4))
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decay) == (p.ndim > 1), name


def _final_weights(repo):
    state = torch.load(repo / "models" / "model.pt", weights_only=True)
    return state["state_dict"]


def test_sigkilled_training_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    overrides = {"data.max_train": 4000, "train.epochs": 3, "train.batch_size": 64}
    train_cmd = [sys.executable, "-m", "stages.train"]
    straight = make_project_repo(tmp_path / "straight", overrides)
    killed = make_project_repo(tmp_path / "killed", overrides)
    for repo in (straight, killed):
        run([sys.executable, "-m", "stages.prepare"], repo, env=project_env(repo))
        run([sys.executable, "-m", "stages.validate"], repo, env=project_env(repo))
    run(train_cmd, straight, env=project_env(straight))

    checkpoint = killed / "models" / "checkpoints" / "last.pt"
    proc = subprocess.Popen(train_cmd, cwd=killed, env=project_env(killed),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert checkpoint.exists(), "no checkpoint was written"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "models" / "model.pt").exists(), "killed too late: training had finished"
    assert torch.load(checkpoint, weights_only=True)["epoch"] < 3

    resumed = run(train_cmd, killed, env=project_env(killed))
    assert "resuming from" in resumed.stdout + resumed.stderr
    a, b = _final_weights(straight), _final_weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log = (killed / "reports" / "train_log.csv").read_text().splitlines()
    assert len(log) == 1 + 3  # header + every epoch, the resumed ones included
