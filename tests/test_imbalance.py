"""Class-imbalance switches: class-weighted losses, the class-balanced sampler, logit adjustment."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skillpack.config import ParamsError, TrainParams, with_overrides
from skillpack.data.loader import TensorBatches, balanced_sample_weights
from skillpack.train.losses import Objective, class_weights, logit_offsets
from skillpack.train.runs import RunData, train_model


def _loss_params(**overrides):
    return with_overrides(TrainParams(), {f"loss.{k}": v for k, v in overrides.items()}).loss


def test_inverse_weights_give_the_rarer_class_twice_the_weight_and_weighted_ce_is_torch_s():
    labels = torch.tensor([0, 0, 0, 0, 1, 1])   # 2:1
    counts = torch.bincount(labels)
    weights = class_weights(counts, "inverse")
    assert weights[1].item() == pytest.approx(2 * weights[0].item()) and weights.mean().item() == pytest.approx(1.0)
    torch.manual_seed(0)
    logits, targets = torch.randn(8, 2), torch.randint(0, 2, (8,))
    for smoothing in (0.0, 0.1):
        objective = Objective(_loss_params(class_weights="inverse", label_smoothing=smoothing), 2, 4, counts)
        expected = F.cross_entropy(logits, targets, weight=weights, label_smoothing=smoothing)
        assert torch.allclose(objective(logits, targets)["total"], expected)


def test_effective_number_weights_lie_between_none_and_inverse():
    counts = torch.tensor([1000, 100, 10])
    effective = class_weights(counts, "effective", beta=0.999)
    inverse = class_weights(counts, "inverse")
    assert effective.mean().item() == pytest.approx(1.0)
    assert bool((effective.diff() > 0).all())   # rarer classes weigh more ...
    assert effective[2] / effective[0] < inverse[2] / inverse[0]   # ... but less than 1 / n says
    raw = (1 - 0.999) / (1 - 0.999 ** counts.double())
    assert torch.allclose(effective.double(), raw / raw.mean(), atol=1e-6)


@pytest.mark.parametrize("name", ["ce", "focal"])
def test_with_equally_frequent_classes_every_switch_is_the_plain_loss(name):
    counts = torch.tensor([50, 50, 50, 50])
    for scheme in ("inverse", "effective"):
        assert torch.equal(class_weights(counts, scheme), torch.ones(4))
    assert torch.equal(logit_offsets(counts, 1.0), torch.zeros(4))
    torch.manual_seed(0)
    logits, targets = torch.randn(16, 4), torch.randint(0, 4, (16,))
    plain = Objective(_loss_params(name=name), 4, 4)(logits, targets)["total"]
    adjusted = Objective(_loss_params(name=name, logit_adjustment_tau=1.0), 4, 4, counts)(logits, targets)["total"]
    assert torch.equal(adjusted, plain)
    weighted = Objective(_loss_params(name=name, class_weights="inverse"), 4, 4, counts)(logits, targets)["total"]
    assert torch.allclose(weighted, plain)


def test_logit_adjustment_adds_tau_log_prior_in_the_loss_for_hard_and_soft_targets():
    counts = torch.tensor([90, 10])
    prior = counts / counts.sum()
    objective = Objective(_loss_params(logit_adjustment_tau=1.5, label_smoothing=0.0), 2, 4, counts)
    torch.manual_seed(0)
    logits = torch.randn(8, 2)
    for targets in (torch.randint(0, 2, (8,)), torch.softmax(torch.randn(8, 2), 1)):
        expected = F.cross_entropy(logits + 1.5 * prior.log(), targets)
        assert torch.allclose(objective(logits, targets)["total"], expected)


def test_class_weights_with_focal_alpha_is_a_one_line_error_naming_both():
    with pytest.raises(ParamsError, match="class_weights=inverse and focal_alpha") as err:
        _loss_params(class_weights="inverse", focal_alpha=[1.0, 2.0])
    assert "\n" not in str(err.value)


def test_the_new_keys_at_their_defaults_leave_result_dump_as_it_was():
    dump = TrainParams().result_dump()
    assert "sampler" not in dump
    assert not {"class_weights", "class_weights_beta", "logit_adjustment_tau"} & set(dump["loss"])
    changed = with_overrides(TrainParams(), {"sampler": "balanced", "loss.logit_adjustment_tau": 1.0}).result_dump()
    assert changed["sampler"] == "balanced" and changed["loss"]["logit_adjustment_tau"] == 1.0


def _balanced_batches(labels):
    images = torch.zeros(len(labels), 1, 1, 1, dtype=torch.uint8)
    return TensorBatches(images, labels, 1000, shuffle=True, sample_weights=balanced_sample_weights(labels))


def test_balanced_sampler_draws_the_classes_about_equally_from_a_90_10_label_set():
    labels = torch.tensor([0] * 18_000 + [1] * 2_000)
    order = _balanced_batches(labels).order(torch.Generator().manual_seed(0))
    assert len(order) == 20_000
    share = labels[order].float().mean().item()   # binomial: sd 0.0035 around 0.5
    assert abs(share - 0.5) < 0.03
    assert len(torch.unique(order[labels[order] == 1])) > 1_500   # the rare class's samples, not one repeated


def test_balanced_sampler_is_deterministic_for_a_seed():
    labels = torch.tensor([0] * 90 + [1] * 10)
    batches = _balanced_batches(labels)
    first = batches.order(torch.Generator().manual_seed(3))
    assert torch.equal(first, batches.order(torch.Generator().manual_seed(3)))
    assert not torch.equal(first, batches.order(torch.Generator().manual_seed(4)))


def _tiny_run(overrides: dict):
    rng = np.random.default_rng(0)
    labels = np.array([0] * 48 + [1] * 12 + [2] * 4)   # long-tailed
    images = rng.integers(0, 256, (64, 12, 12, 1), dtype=np.uint8)
    cfg = with_overrides(TrainParams.model_validate({"model": "sp_cnn_s", "epochs": 1, "batch_size": 16,
                                                     "device": "cpu", "amp": "off"}), overrides)
    trained = train_model(cfg, RunData((images, labels), (images[:16], labels[:16]), 3), seed=0)
    return trained.model.state_dict(), trained.history[-1]


@pytest.mark.parametrize("overrides", [
    {"loss.class_weights": "inverse"},
    {"loss.class_weights": "effective", "loss.name": "focal", "augment.mixup_alpha": 0.4},
    {"sampler": "balanced"},
    {"loss.logit_adjustment_tau": 1.0, "augment.cutmix_alpha": 1.0},
])
def test_a_training_run_takes_each_switch(overrides):
    plain, _ = _tiny_run({k: v for k, v in overrides.items() if k.startswith("augment") or k == "loss.name"})
    switched, record = _tiny_run(overrides)
    assert np.isfinite(record.train_loss)
    assert any(not torch.equal(plain[k], switched[k]) for k in plain)   # the switch changed what was trained
