"""The engine's resident path (runtime.resident), tested on a CPU.

On a GPU the resident path uploads the training set once and draws the permutation and every
augmentation from a CUDA generator; on a CPU it runs the same code with a CPU generator, whose
stream is the host path's: so here the two paths must give bit-identical weights and figures
(the strongest check there is that the resident loop - device batches, device augmentation,
figures summed on the device and read once per epoch, the large-batch evaluation - computes
what the host loop computes). What only a GPU can show (CUDA's stream gives the same accuracy
in distribution; no host synchronisation inside an epoch; the speed) is measured by
benchmarks/gpu.py. The "meta" device stands in for a GPU below: an op that built a tensor on
the CPU instead of the batch's device would fail there.
"""
import pytest
import torch
from conftest import StopTraining, small_split, stop_after_first_epoch

from skillpack.config import AugmentParams, TrainParams
from skillpack.train.runs import RunData, train_model

MIXED = {"augment": {"mixup_alpha": 0.4, "cutmix_alpha": 1.0, "random_erasing": 0.5, "rotation": 15,
                     "color_jitter": {"brightness": 0.2}},
         "ema": {"enabled": True, "decay": 0.9}, "loss": {"name": "focal"}}


def _fit(fmnist, epochs=2, n=1000, checkpoint=None, on_epoch=None, **overrides):
    x, y = small_split(fmnist, n)
    cfg = TrainParams.model_validate({"model": "sp_cnn_s", "epochs": epochs, "batch_size": 64, "threads": 1,
                                      "optimizer": {"lr": 0.05}, "schedule": {"warmup_epochs": 0}, **overrides})
    cut = int(0.8 * n)
    return train_model(cfg, RunData((x[:cut], y[:cut]), (x[cut:], y[cut:]), 10), 0, checkpoint=checkpoint,
                       on_epoch=on_epoch)


def _same_run(a, b):
    assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    drop = {"seconds"}
    assert [{k: v for k, v in h.as_dict().items() if k not in drop} for h in a.history] == \
           [{k: v for k, v in h.as_dict().items() if k not in drop} for h in b.history]


@pytest.mark.parametrize("overrides", [{}, MIXED], ids=["flip_crop", "mix_erase_rotate_ema_focal"])
def test_resident_path_on_a_cpu_is_bit_identical_to_the_host_path(fmnist, overrides):
    host = _fit(fmnist, resident=False, **overrides)
    resident = _fit(fmnist, resident=True, **overrides)
    auto = TrainParams().resident
    assert (host.resident, resident.resident, auto) == (False, True, "auto")
    assert resident.history[-1].train_loss < resident.history[0].train_loss  # it trained
    _same_run(host, resident)


def test_a_host_checkpoint_resumes_on_the_resident_path_to_the_same_weights(fmnist, tmp_path):
    """resident / compile are not part of a run's identity: a run stopped on one path resumes
    on the other (and on a CPU ends exactly where an uninterrupted run ends)."""
    straight = _fit(fmnist, **MIXED)

    checkpoint = tmp_path / "last.pt"
    with pytest.raises(StopTraining):
        _fit(fmnist, checkpoint=checkpoint, on_epoch=stop_after_first_epoch, resident=False, **MIXED)
    resumed = _fit(fmnist, checkpoint=checkpoint, resident=True, **MIXED)
    assert resumed.resumed_from_epoch == 1 and resumed.resident
    _same_run(straight, resumed)


def test_execution_only_params_leave_the_run_identity_and_parse_from_yaml():
    from skillpack.config import load_params
    from skillpack.evidence import ablation as ab

    plain = load_params("params.yaml")
    other = load_params("params.yaml", ["runtime.resident=true", "runtime.compile=max-autotune"])
    assert other.runtime.resident is True and other.runtime.compile == "max-autotune"
    assert plain.train.result_dump() == other.train.result_dump()
    assert ab.run_key(0, plain, "d", {}) == ab.run_key(0, other, "d", {})
    assert "resident" not in plain.train.result_dump() and "resident" in plain.train.model_dump()
    assert load_params("params.yaml", ["runtime.compile=off"]).runtime.compile == "off"  # YAML 1.1 reads off as false
    assert ab.run_key(0, plain, "d", {}) != ab.run_key(0, load_params("params.yaml", ["train.epochs=3"]), "d", {})


def test_compile_runs_before_the_first_epoch_timed_apart_and_changes_nothing(fmnist, monkeypatch):
    """runtime.compile's warm-up (one forward + backward on a real batch, weights and BatchNorm
    statistics restored after it) through dynamo with its eager backend: inductor's own
    compile takes minutes on a CPU, benchmarks/gpu.py measures it on a GPU."""
    real = torch.compile
    compiled = []

    def eager_compile(module, mode=None, dynamic=None, **_):
        compiled.append(mode)
        return real(module, backend="eager", dynamic=dynamic)

    monkeypatch.setattr(torch, "compile", eager_compile)
    plain = _fit(fmnist, epochs=1, resident=True)
    with_compile = _fit(fmnist, epochs=1, resident=True, compile="max-autotune")
    assert compiled == ["max-autotune"]
    assert with_compile.compile_seconds > 0 and plain.compile_seconds == 0
    _same_run(plain, with_compile)


def evaluate_loss_acc(model, images, labels, batch_size, device) -> tuple[float, float]:
    """The host evaluation: mean cross-entropy and accuracy of predict()'s logits."""
    from skillpack.metrics import accuracy
    from skillpack.train.engine import predict

    logits = predict(model, images, batch_size, device)
    return torch.nn.functional.cross_entropy(logits, labels).item(), accuracy(logits, labels)


def test_evaluation_on_the_device_equals_the_host_evaluation(fmnist):
    from skillpack.data.loader import to_tensor_nchw
    from skillpack.train.engine import evaluate_on_device
    from skillpack.train.models import build_classifier

    x, y = small_split(fmnist, 700)
    torch.manual_seed(0)
    model = build_classifier("sp_cnn_s", 10, (28, 28, 1), TrainParams().head).eval()
    images, labels = to_tensor_nchw(x), torch.as_tensor(y)
    cpu = torch.device("cpu")
    assert evaluate_on_device(model, images, labels, 256, cpu).tolist() == \
        list(evaluate_loss_acc(model, images, labels, 256, cpu))
    assert torch.isnan(evaluate_on_device(model, images[:0], labels[:0], 256, cpu)).all()


def test_every_batch_augmentation_stays_on_the_batch_s_device():
    """The meta device stands in for a GPU: with a CPU generator (the draws are made on the
    generator's device, then moved), every step must produce the batch's device."""
    from skillpack.data.augment import BatchAugment
    from skillpack.data.loader import TensorBatches

    cfg = AugmentParams.model_validate({"hflip": True, "crop_padding": 2, "rotation": 15,
                                        "resized_crop_scale": [0.8, 1.0],
                                        "color_jitter": {"brightness": 0.2, "contrast": 0.2},
                                        "random_erasing": 0.5, "mixup_alpha": 0.4, "cutmix_alpha": 1.0})
    images = torch.zeros(16, 1, 28, 28, dtype=torch.uint8, device="meta")
    labels = torch.zeros(16, dtype=torch.long, device="meta")
    generator = torch.Generator().manual_seed(0)
    for index, batch, batch_labels in TensorBatches(images, labels, 8, shuffle=True).epoch(generator):
        out, targets = BatchAugment(cfg, 10, 1)(batch, batch_labels, generator)
        assert (index.device.type, out.device.type, targets.device.type) == ("meta",) * 3
        assert out.shape == batch.shape and targets.shape == (8, 10)


def test_vectorised_random_erasing_matches_torchvision_in_distribution():
    """One implementation for every device, drawn from the epoch generator, instead of
    torchvision's per-sample loop: the same law (probability, area, aspect, placement)."""
    from torchvision.transforms import v2

    from skillpack.data.augment import per_sample, random_erasing

    n, size = 3000, 28
    images = torch.full((n, 1, size, size), 200, dtype=torch.uint8)
    ours = random_erasing(images, 0.5, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    theirs = per_sample(v2.RandomErasing(p=0.5, value=0))(images)

    def stats(out):
        erased = out[:, 0] == 0
        hit = erased.flatten(1).any(1)
        rows, cols = erased.any(2)[hit].sum(1).float(), erased.any(1)[hit].sum(1).float()
        area = erased.flatten(1).sum(1)[hit].float()
        assert torch.equal(area, rows * cols)  # one filled rectangle per erased sample
        return hit.float().mean().item(), area.mean().item() / size ** 2, (rows / cols).log().mean().item()

    (p_ours, a_ours, r_ours), (p_tv, a_tv, r_tv) = stats(ours), stats(theirs)
    assert abs(p_ours - p_tv) < 0.05 and abs(p_ours - 0.5) < 0.05    # 0.5 +- 5.5 standard errors
    assert abs(a_ours - a_tv) < 0.02 and 0.13 < a_ours < 0.2         # mean area ~0.175 of the image
    assert abs(r_ours - r_tv) < 0.12 and abs(r_ours) < 0.1           # log aspect centred on 0 (ratio 0.3-3.3)
    assert not torch.equal(ours[0], ours[1]) or not torch.equal(ours[2], ours[3])  # per sample
