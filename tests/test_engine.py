"""The engine: learns, is deterministic on CPU, schedules as configured, resumes exactly."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import StopTraining, copy_project, project_env, run, small_split, stop_after_first_epoch

from skillpack.config import TrainParams
from skillpack.train.runs import RunData, train_model


def _train(fmnist, seed=0, epochs=2, n=1500, checkpoint=None, on_epoch=None, **overrides):
    x, y = small_split(fmnist, n)
    cfg = TrainParams.model_validate({"model": "sp_cnn_s", "epochs": epochs, "batch_size": 64,
                                      "optimizer": {"lr": 0.05}, **overrides})
    cut = int(0.8 * n)
    trained = train_model(cfg, RunData((x[:cut], y[:cut]), (x[cut:], y[cut:]), 10), seed,
                          checkpoint=checkpoint, on_epoch=on_epoch)
    return trained.model, trained


def test_training_learns_and_is_deterministic(fmnist):
    model_a, result_a = _train(fmnist)
    model_b, result_b = _train(fmnist)
    assert result_a.history[-1].val_acc > 0.5  # chance is 0.1
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name
    assert result_a.history[-1].val_loss == result_b.history[-1].val_loss


def test_bf16_autocast_on_cpu_runs_where_the_cpu_has_bf16_units_and_stays_deterministic(fmnist):
    from skillpack.train.device import cpu_has_bf16_units, resolve_amp

    cpu = torch.device("cpu")
    expected = torch.bfloat16 if cpu_has_bf16_units() else torch.float32
    assert resolve_amp("fp16", cpu) is None and resolve_amp("off", cpu) is None
    assert (resolve_amp("bf16", cpu) or torch.float32) == expected
    runs = []
    for _ in range(2):
        dtypes = set()

        def head_dtype(module, inputs, output, dtypes=dtypes):  # sp_cnn_s's only Linear is the head
            if isinstance(module, torch.nn.Linear):
                dtypes.add(output.dtype)

        hook = torch.nn.modules.module.register_module_forward_hook(head_dtype)
        try:
            model, result = _train(fmnist, amp="bf16")
        finally:
            hook.remove()
        runs.append((model, result, dtypes))
    (model_a, result_a, dtypes_a), (model_b, result_b, _) = runs
    assert dtypes_a == {expected, torch.float32}  # training in `expected`, validating in fp32
    assert result_a.history[-1].val_acc > 0.5 and result_a.history[-1].val_loss == result_b.history[-1].val_loss
    assert all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()))


def test_another_seed_gives_other_weights(fmnist):
    model_a, _ = _train(fmnist, seed=0, epochs=1)
    model_b, _ = _train(fmnist, seed=1, epochs=1)
    assert not torch.equal(model_a.head.weight, model_b.head.weight)


def test_cosine_schedule_with_linear_warmup():
    from skillpack.config import OptimizerParams, ScheduleParams
    from skillpack.train.optim import build_optimizer, build_scheduler

    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, OptimizerParams(lr=0.4))
    sched = build_scheduler(opt, ScheduleParams(name="cosine", warmup_epochs=1), 0.4, epochs=4, steps_per_epoch=10)
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


@pytest.mark.parametrize("overrides", [
    {"augment": {"cutmix_alpha": 1.0, "mixup_alpha": 0.4}, "loss": {"name": "focal"}},
    {"head": {"name": "arcface"}, "loss": {"center_weight": 0.01, "triplet_weight": 0.1}},
    {"ema": {"enabled": True, "decay": 0.9}, "grad_clip": 1.0, "optimizer": {"name": "adamw", "lr": 0.003,
                                                                             "lookahead": {"enabled": True}}},
    {"sampler": "balanced", "loss": {"class_weights": "effective", "logit_adjustment_tau": 1.0}},
])
def test_skill_combinations_train_and_resume_deterministically(fmnist, overrides, tmp_path):
    """A run stopped after its first epoch and started again from its checkpoint ends with the
    weights of an uninterrupted run: optimizer, schedule, EMA, centres and Lookahead resume."""
    model_a, result_a = _train(fmnist, epochs=2, n=600, **overrides)

    checkpoint = tmp_path / "last.pt"
    with pytest.raises(StopTraining):
        _train(fmnist, epochs=2, n=600, checkpoint=checkpoint, on_epoch=stop_after_first_epoch, **overrides)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    model_b, result_b = _train(fmnist, epochs=2, n=600, checkpoint=checkpoint, **overrides)
    assert result_b.resumed_from_epoch == 1 and result_b.epochs_trained == 1
    assert result_a.history[-1].val_loss == result_b.history[-1].val_loss
    assert all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()))


def _final_weights(repo):
    state = torch.load(repo / "models" / "model.pt", weights_only=True)
    return state["state_dict"]


def test_sigkilled_training_resumes_to_the_weights_of_an_uninterrupted_run(prepared_project, tmp_path):
    overrides = {"train.epochs": 3, "train.batch_size": 64, "train.ema.enabled": True,
                 "train.loss.center_weight": 0.01}  # optimizer, scheduler, EMA and centres all resume
    train_cmd = [sys.executable, "-m", "stages.train"]
    straight = copy_project(prepared_project, tmp_path / "straight", overrides)
    killed = copy_project(prepared_project, tmp_path / "killed", overrides)
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


def test_every_step_s_loss_is_recorded_once_per_epoch_and_resumes_from_old_checkpoints(fmnist, tmp_path):
    """EpochResult.step_losses: one training loss per step, read from the device at the epoch's
    end (their size-weighted mean is the epoch's train_loss); kept in the checkpoint, left out
    of as_dict (train_log.csv, MLflow); a checkpoint written before they existed still resumes,
    its epochs with step_losses []."""
    _, straight = _train(fmnist, epochs=2, n=600, threads=1)
    steps = 480 // 64                                               # 480 training images, full batches of 64
    for record in straight.history:
        assert len(record.step_losses) == steps and all(isinstance(v, float) for v in record.step_losses)
        assert sum(record.step_losses) / steps == pytest.approx(record.train_loss, rel=1e-12)
        assert "step_losses" not in record.as_dict() and record.state()["step_losses"] == record.step_losses
    assert straight.history[1].step_losses[-1] < straight.history[0].step_losses[0]

    checkpoint = tmp_path / "last.pt"
    with pytest.raises(StopTraining):
        _train(fmnist, epochs=2, n=600, threads=1, checkpoint=checkpoint, on_epoch=stop_after_first_epoch)
    state = torch.load(checkpoint, weights_only=True)
    assert state["history"][0]["step_losses"] == straight.history[0].step_losses
    for record in state["history"]:
        del record["step_losses"]                                   # as written before step_losses existed
    torch.save(state, checkpoint)
    _, resumed = _train(fmnist, epochs=2, n=600, threads=1, checkpoint=checkpoint)
    assert resumed.resumed_from_epoch == 1
    assert resumed.history[0].step_losses == [] and resumed.history[1].step_losses == straight.history[1].step_losses


def test_step_losses_of_the_resident_path_equal_the_host_path_s(fmnist):
    """Collected on the device without a read per step: on a CPU, the same floats as the host path."""
    _, host = _train(fmnist, epochs=1, n=600, threads=1, resident=False)
    _, resident = _train(fmnist, epochs=1, n=600, threads=1, resident=True)
    assert resident.resident and not host.resident
    assert resident.history[0].step_losses == host.history[0].step_losses


@pytest.mark.fault("the store's read-only arrays: training without warnings", guards=())
def test_read_only_arrays_as_the_prepared_store_gives_them_train_without_warnings(fmnist):
    import warnings

    x, y = small_split(fmnist, 300)
    for array in (x, y):
        array.setflags(write=False)   # as np.load(mmap_mode="r") gives them
    cfg = TrainParams.model_validate({"model": "sp_cnn_s", "epochs": 1, "batch_size": 100})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train_model(cfg, RunData((x[:200], y[:200]), (x[200:], y[200:]), 10), seed=0)


def test_counts_are_printed_with_their_noun_in_the_right_number():
    from skillpack.io import counted

    assert [counted(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]


def test_probing_only_the_last_epoch_trains_the_same_weights_and_gap(fmnist):
    """train.probe: last_epoch skips the train-eval probe before the last epoch (nan there) and
    changes nothing else: the probe is eval-mode inference."""
    model_every, every = _train(fmnist, epochs=3, n=600)
    model_last, last = _train(fmnist, epochs=3, n=600, probe="last_epoch")
    assert all(torch.equal(a, b) for a, b in zip(model_every.state_dict().values(), model_last.state_dict().values()))
    assert [r.train_eval_loss != r.train_eval_loss for r in last.history] == [True, True, False]   # nan, nan, a figure
    assert last.history[-1].train_eval_loss == every.history[-1].train_eval_loss
    assert [r.val_acc for r in last.history] == [r.val_acc for r in every.history]
