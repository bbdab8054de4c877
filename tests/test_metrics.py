import numpy as np
import pytest

from skillpack.config import TrainParams
from skillpack.runs import RunData, train_model
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
    result = train_model(cfg, RunData((x[:200], y[:200]), (x[200:], y[200:]), 10), seed=0)
    history = [r.as_dict() for r in result.history]
    check = overfitting_check(history, 0.5)
    assert history[-1]["train_eval_acc"] > 0.99
    assert check["overfitting"], check


def test_the_one_accuracy_function_takes_scores_or_labels_numpy_or_torch():
    import torch

    from skillpack.metrics import accuracy, balanced_accuracy, correct

    labels = np.array([0, 1, 2, 2])
    scores = np.array([[0.9, 0.1, 0], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0, 0, 1]])
    assert accuracy(scores, labels) == accuracy(scores.argmax(1), labels) == 0.75
    assert accuracy(torch.as_tensor(scores), torch.as_tensor(labels)) == 0.75
    assert int(correct(torch.as_tensor(scores), torch.as_tensor(labels))) == 3
    assert balanced_accuracy(scores, labels) == pytest.approx((1 + 1 + 0.5) / 3)
    assert np.isnan(accuracy(np.zeros((0, 3)), np.zeros(0)))
