"""Classification metrics (scikit-learn) and the overfitting check."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    return {
        "test_accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        "macro_f1": float(f1.mean()),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
    }


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    return confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))


def overfitting_check(history: list[dict], threshold: float) -> dict:
    """Flag overfitting when the final val-minus-train loss gap exceeds `threshold`. Both
    losses are plain cross-entropy in eval mode (train_eval_loss), so augmentation and label
    smoothing do not hide the gap."""
    last = history[-1]
    gap = float(last["val_loss"]) - float(last.get("train_eval_loss", last["train_loss"]))
    return {"loss_gap": gap, "overfitting": bool(gap > threshold), "overfit_threshold": threshold}
