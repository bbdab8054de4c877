"""SimCLR pre-training: the NT-Xent loss by hand and by what it rewards; the encoder checkpoint
loads through train.pretrained into the classifier (its weights, a new head) and a linear probe
(train.freeze_backbone) trains only the head; the label-efficiency benchmark's subsets and its
whole path on a tiny set, resumed from its store."""
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from benchmarks import label_efficiency as le
from skillpack.config import HeadParams, PretrainParams, TrainParams
from skillpack.train.models import build_classifier
from skillpack.train.pretrained import PretrainedWeightsError, pretrained_model
from skillpack.train.runs import RunData, train_model
from skillpack.train.simclr import nt_xent_loss, pretrain_encoder, save_encoder

LITE0 = "tf_efficientnet_lite0"


def test_nt_xent_equals_its_hand_value_on_a_two_image_batch():
    # views equal, the two images orthogonal: each of the 4 views has its positive at cos 1 and
    # two negatives at cos 0, so every term is -log(e^(1/t) / (e^(1/t) + 2))
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    assert nt_xent_loss(t)(z, z.clone()).item() == pytest.approx(math.log(1 + 2 * math.exp(-1 / t)), rel=1e-5)


def test_nt_xent_of_a_perfect_encoder_is_below_that_of_random_embeddings():
    generator = torch.Generator().manual_seed(0)
    perfect = torch.eye(16)   # both views map to the same point, every image to its own direction
    first, second = torch.randn(16, 16, generator=generator), torch.randn(16, 16, generator=generator)
    loss = nt_xent_loss(0.5)
    assert loss(perfect, perfect.clone()).item() < loss(first, second).item() - 1.0


def _images(n: int, seed: int = 0, size: int = 28) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 1), dtype=np.uint8)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    cfg = PretrainParams(enabled=True, model=LITE0, input_size=32, epochs=1, batch_size=4, projection_dim=8,
                         hidden_dim=16, threads=1)
    result = pretrain_encoder(_images(8), cfg, seed=0, progress=False)
    return save_encoder(result, cfg, tmp_path_factory.mktemp("simclr") / "simclr.pt", seed=0), result


def test_a_simclr_checkpoint_loads_through_train_pretrained_with_a_new_head(encoder):
    path, result = encoder
    assert len(result.loss_by_epoch) == 1 and math.isfinite(result.loss_by_epoch[0])
    model = build_classifier(LITE0, 10, (28, 28, 1), HeadParams(), pretrained=str(path))
    saved = torch.load(path, weights_only=True)
    assert saved["architecture"] == LITE0 and saved["pretraining"]["method"] == "simclr"
    loaded = model.backbone.state_dict()
    assert loaded.keys() == saved["state_dict"].keys()
    assert all(torch.equal(loaded[k], v) for k, v in saved["state_dict"].items())
    assert model.head.weight.shape == (10, 1280)
    assert model.input_size == 32   # the encoder's own input size and normalisation
    assert model.mean.flatten().tolist() == pytest.approx([255 * m for m in saved["weights_config"]["mean"]])
    with pytest.raises(PretrainedWeightsError, match=r"simclr\.pt was trained on 1-channel images, the data has 3"):
        pretrained_model(str(path), LITE0, num_classes=0, in_chans=3)
    with pytest.raises(PretrainedWeightsError, match=r"holds tf_efficientnet_lite0 weights, but train\.model is "
                                                     r"tf_efficientnet_lite1"):
        pretrained_model(str(path), "tf_efficientnet_lite1", num_classes=0, in_chans=1)


def test_a_linear_probe_trains_the_head_alone(encoder):
    path, _ = encoder
    cfg = TrainParams(model=LITE0, pretrained=str(path), freeze_backbone=True, epochs=1, batch_size=8, threads=1,
                      device="cpu", amp="off", optimizer={"name": "adamw", "lr": 0.01})
    x, y = _images(16, seed=1), np.arange(16) % 4
    trained = train_model(cfg, RunData((x, y), (x[:4], y[:4]), 4), seed=0)
    saved = torch.load(path, weights_only=True)["state_dict"]
    after = trained.model.backbone.state_dict()
    assert all(torch.equal(after[k], v) for k, v in saved.items())   # weights and BatchNorm statistics
    fresh = build_classifier(LITE0, 4, (28, 28, 1), cfg.head, pretrained=str(path))
    assert not torch.equal(trained.model.head.weight, fresh.head.weight)   # the same seed's head, trained
    assert TrainParams().result_dump() == TrainParams(freeze_backbone=False).result_dump()
    assert "freeze_backbone" not in TrainParams().result_dump()   # old runs keep their keys


def test_a_label_fraction_keeps_every_class_and_its_size():
    labels = np.repeat(np.arange(10), [50, 30, 20, 10, 10, 5, 5, 5, 3, 2])   # 140, long-tailed
    one_percent = le.label_subset(labels, 0.01, seed=0)
    assert len(one_percent) == 10 and set(labels[one_percent]) == set(range(10))   # 1.4 rounds to 1: one per class
    tenth = le.label_subset(labels, 0.1, seed=1)
    assert len(tenth) == 14 and len(set(tenth)) == 14 and set(labels[tenth]) == set(range(10))
    assert len(le.label_subset(labels, 1.0, seed=0)) == 140
    assert not np.array_equal(le.label_subset(labels, 0.2, seed=0), le.label_subset(labels, 0.2, seed=1))


def test_the_benchmark_runs_a_tiny_grid_end_to_end_and_resumes_from_its_store(tmp_path):
    x, y = _images(24, seed=2), np.arange(24) % 3
    data = {"train": (x, y), "val": (x[:6], y[:6]), "test": (x[:9], y[:9]), "classes": ["a", "b", "c"]}
    budget = le.Budget(datasets=("fashion_mnist",), fractions=(0.1, 1.0), seeds=(0, 1), epochs=1, pretrain_epochs=1,
                       pretrain_images=8, max_val=6, input_size=32, batch_size=8, min_steps=1, threads=1,
                       extra={"augment": {"crop_padding": 0}})
    results = le.run_grid({"fashion_mnist": data}, budget, tmp_path)
    assert len(results) == 2 * 3 * 2 and len(list(tmp_path.glob("*.json"))) == 12
    assert {r["n_labelled"] for r in results} == {3, 24}   # 10% of 24 rounds to 2: one per class
    summary = le.summarise(results, budget)
    assert {(c["fraction"], c["init"]) for c in summary["cells"]} == {(f, i) for f in (0.1, 1.0) for i in le.INITS}
    assert all(c["n_seeds"] == 2 for c in summary["cells"])
    assert summary["pretrained_vs_scratch_at_1pct"] is None, "no 1% cell in this grid"
    differences = [d for d in summary["paired_differences"] if d["fraction"] == 0.1]
    row = le.at_one_percent([{**d, "fraction": 0.01} for d in differences], "lite0")
    assert row["init"] == "lite0" and row["ci_low"] <= row["delta"] <= row["ci_high"]
    le.plot(summary, budget, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0
    assert le.run_grid({"fashion_mnist": data}, budget, tmp_path) == results   # every cell from the store


def test_the_benchmark_counts_its_pretraining_once_per_dataset_from_the_stored_encoder(tmp_path):
    x, y = _images(12, seed=3), np.arange(12) % 3
    data = {"train": (x, y), "val": (x[:6], y[:6]), "test": (x[:6], y[:6]), "classes": ["a", "b", "c"]}
    budget = le.Budget(datasets=("fashion_mnist",), inits=("scratch", "simclr"), fractions=(1.0,), seeds=(0,),
                       epochs=1, pretrain_epochs=1, pretrain_images=8, max_val=6, input_size=32, batch_size=4,
                       min_steps=1, threads=1, extra={"augment": {"crop_padding": 0}})
    results = le.run_grid({"fashion_mnist": data}, budget, tmp_path)
    seconds = le.pretraining_seconds({"fashion_mnist": data}, budget, tmp_path)
    stored = json.loads(next((tmp_path / "encoders").glob("*.json")).read_text())["wall_seconds"]
    assert seconds == stored > 0
    assert le.pretraining_seconds({"fashion_mnist": data}, replace(budget, inits=("scratch",)), tmp_path) == 0.0
    assert le.summarise(results, budget)["cells"][0]["n_labelled"] == 12
