"""Compression: channel pruning through torch-pruning's dependency graph, weights-only
save/load of a pruned model, and the paired comparisons of the compress stage."""
import pytest
import torch
from conftest import small_split

from skillpack.config import HeadParams, TrainParams
from skillpack.deploy.compress import channel_counts, prune_channels
from skillpack.train.checkpoint import load_classifier, save_classifier
from skillpack.train.models import build_classifier, count_params
from skillpack.train.runs import RunData, train_model


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


def _candidate(variant, runtime, drop, ms, size):
    from skillpack.deploy.release import Candidate

    return Candidate(variant, runtime, f"{variant}.onnx", 0.9 - drop / 100, drop, ms, size)


def test_the_serve_rule_picks_within_the_budget_and_never_comes_up_empty():
    from skillpack.deploy.release import choose

    found = [_candidate("baseline", "onnx fp32", 0.0, 0.50, 900), _candidate("baseline", "onnx int8", 0.3, 0.30, 300),
             _candidate("pruned", "onnx int8", 1.4, 0.10, 200), _candidate("student", "onnx fp32", 0.9, 0.20, 100)]
    assert choose(found, "fastest_within_budget", 1.0).variant == "student"      # pruned int8 is faster, but too lossy
    assert choose(found, "fastest_within_budget", 2.0).variant == "pruned"
    assert choose(found, "smallest_within_budget", 0.5).runtime == "onnx int8"   # the baseline's int8: 300 bytes
    assert choose(found, "most_accurate", 0.0).runtime == "onnx fp32"
    assert choose(found, "fastest_within_budget", 0.0).as_dict() == found[0].as_dict()  # drop 0 is always within
    with pytest.raises(ValueError, match="export.serve_rule: unknown 'cheapest'"):
        choose(found, "cheapest", 1.0)


def test_compress_once_trains_each_variant_once_and_rejects_beyond_the_budget(fmnist):
    from skillpack.config import CompressParams, derive, with_overrides
    from skillpack.deploy.compress import VARIANTS, compress_once

    x, y = small_split(fmnist, 700)
    data, test = RunData((x[:500], y[:500]), (x[500:600], y[500:600]), 10), (x[600:], y[600:])
    base_cfg = TrainParams.model_validate({"model": "sp_cnn_s", "epochs": 2, "batch_size": 64, "threads": 1,
                                           "schedule": {"warmup_epochs": 0}})
    baseline = train_model(base_cfg, data, seed=0).model.eval()
    cfg = CompressParams(finetune={"epochs": 1}, student={"model": "sp_dwcnn_s", "epochs": 1}, max_drop_points=100.0)
    trained = []
    result = compress_once(baseline, "sp_cnn_s", data, test, derive(base_cfg, cfg.finetune),
                           derive(base_cfg, cfg.student), cfg, seed=0, on_variant=trained.append)
    assert trained == list(VARIANTS) and set(result.variants) == set(VARIANTS)   # one training each
    pruned, student = result.variants["pruned"], result.variants["student"]
    assert pruned.params < result.baseline_size["params"] and student.model_name == "sp_dwcnn_s"
    assert pruned.delta_points == pytest.approx(100 * (pruned.test_accuracy - result.baseline_accuracy))
    assert pruned.accepted and student.accepted              # a budget of 100 points accepts anything
    strict = with_overrides(cfg, {"max_drop_points": 0.0})
    again = compress_once(baseline, "sp_cnn_s", data, test, derive(base_cfg, cfg.finetune),
                          derive(base_cfg, cfg.student), strict, seed=0)
    for name, variant in again.variants.items():               # the same seed trains the same model
        assert variant.test_accuracy == result.variants[name].test_accuracy
        assert variant.accepted == (variant.delta_points >= 0.0)
