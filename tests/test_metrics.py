import numpy as np
import pytest

from skillpack.config import TrainParams
from skillpack.engine import Trainer, build_classifier, channel_stats
from skillpack.metrics import classification_metrics, overfitting_check

from conftest import small_split


def test_per_class_metrics_by_hand():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["test_accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["a"]["precision"] == pytest.approx(1 / 2) and m["per_class"]["a"]["recall"] == pytest.approx(1 / 2)
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3) and m["per_class"]["b"]["recall"] == 1.0


def test_overfitting_flag_uses_the_comparable_train_loss():
    history = [{"train_loss": 0.9, "train_eval_loss": 0.05, "val_loss": 0.8}]
    flagged = overfitting_check(history, 0.5)
    assert flagged["overfitting"] and flagged["loss_gap"] == pytest.approx(0.75)
    assert not overfitting_check(history, 0.8)["overfitting"]


def test_a_model_memorising_a_tiny_set_is_flagged(fmnist):
    x, y = small_split(fmnist, 1200, seed=3)
    cfg = TrainParams.model_validate({"model": "sp_cnn_m", "epochs": 25, "batch_size": 32, "amp": "off",
                                      "optimizer": {"lr": 0.05, "weight_decay": 0.0},
                                      "augment": {"hflip": False, "crop_padding": 0},
                                      "loss": {"label_smoothing": 0.1}, "head": {"dropout": 0.0}})
    model = build_classifier(cfg.model, 10, (28, 28, 1), cfg.head, *channel_stats(x))
    result = Trainer(model, cfg, 0, progress=False).fit(x[:200], y[:200], x[200:], y[200:])
    history = [r.as_dict() for r in result.history]
    check = overfitting_check(history, 0.5)
    assert history[-1]["train_eval_acc"] > 0.99
    assert check["overfitting"], check
