"""Compression: channel pruning through torch-pruning's dependency graph, weights-only
save/load of a pruned model, and the paired comparisons of the compress stage."""
import numpy as np
import pytest
import torch

from skillpack.checkpoint import load_classifier, save_classifier
from skillpack.compress import channel_counts, prune_channels
from skillpack.config import HeadParams, TrainParams
from skillpack.models import build_classifier, count_params
from skillpack.runs import RunData, train_model

from conftest import small_split


def _model(name="sp_cnn_s"):
    torch.manual_seed(0)
    return build_classifier(name, 10, (28, 28, 1), HeadParams(), [72.9], [90.0]).eval()


@pytest.mark.parametrize("name", ["sp_cnn_s", "sp_dwcnn_s"])
def test_pruning_keeps_the_share_of_channels_and_the_classes(name):
    model = _model(name)
    pruned = prune_channels(model, (28, 28, 1), ratio=0.2)
    before, after = channel_counts(model), channel_counts(pruned)
    assert count_params(pruned) < count_params(model)
    for layer, channels in before.items():  # every conv keeps about 80% of its outputs (rounded)
        assert after[layer] == pytest.approx(0.8 * channels, abs=1), layer
    assert pruned(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert count_params(model) == count_params(_model(name))  # the original is left alone


def test_a_pruned_model_trains_and_its_fine_tune_starts_from_the_pruned_weights(fmnist):
    x, y = small_split(fmnist, 600)
    pruned = prune_channels(_model(), (28, 28, 1), ratio=0.5)
    cfg = TrainParams.model_validate({"model": "sp_cnn_s", "epochs": 2, "batch_size": 64, "optimizer": {"lr": 0.05},
                                      "schedule": {"warmup_epochs": 0}})
    trained = train_model(cfg, RunData((x[:500], y[:500]), (x[500:], y[500:]), 10), seed=0, init=pruned)
    assert channel_counts(trained.model) == channel_counts(pruned)
    changed = [not torch.equal(a, b) for a, b in zip(trained.model.state_dict().values(), pruned.state_dict().values())]
    assert any(changed)  # it trained ...
    assert trained.history[1].train_loss < trained.history[0].train_loss  # ... and learns


def test_a_pruned_model_saves_and_loads_with_weights_only(tmp_path):
    pruned = prune_channels(_model("sp_dwcnn_s"), (28, 28, 1), ratio=0.3, importance="bn_scale")
    path = tmp_path / "pruned.pt"
    save_classifier(path, pruned, model_name="sp_dwcnn_s", classes=list("abcdefghij"), image_shape=(28, 28, 1),
                    head=HeadParams())
    loaded, _ = load_classifier(path)  # torch.load(weights_only=True) inside
    x = torch.rand(4, 1, 28, 28) * 255
    assert torch.allclose(loaded(x), pruned(x), atol=1e-6)
    assert count_params(loaded) == count_params(pruned)


def test_unknown_importance_is_named():
    with pytest.raises(ValueError, match="prune_importance: unknown 'taylor2'"):
        prune_channels(_model(), (28, 28, 1), 0.2, "taylor2")


def test_comparisons_with_controls_are_paired_by_seed_and_holm_adjusted():
    from scipy import stats

    from skillpack.compression_report import compare_to_controls

    acc = {"pruned": {"0": 0.90, "1": 0.91, "2": 0.905}, "finetuned": {"0": 0.91, "1": 0.915, "2": 0.92},
           "student_distilled": {"0": 0.88, "1": 0.87, "2": 0.89}, "student": {"0": 0.87, "1": 0.872, "2": 0.875}}
    out = compare_to_controls(acc, {"pruned": "finetuned", "student_distilled": "student"})
    d = np.array([-1.0, -0.5, -1.5])
    assert out["pruned"]["differences_points"] == pytest.approx(list(d))
    assert out["pruned"]["delta_points"] == pytest.approx(d.mean())
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert out["pruned"]["ci_low_points"] == pytest.approx(d.mean() - half)
    p = [out["pruned"]["p"], out["student_distilled"]["p"]]
    assert p[0] == pytest.approx(stats.ttest_rel([0.90, 0.91, 0.905], [0.91, 0.915, 0.92]).pvalue)
    low, high = sorted(p)
    assert sorted(c["p_adjusted"] for c in out.values()) == pytest.approx([min(1, 2 * low), max(min(1, 2 * low), high)])
