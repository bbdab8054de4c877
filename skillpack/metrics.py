"""Classification metrics (scikit-learn) and the overfitting check. The one place accuracy is
computed: `correct` / `accuracy` take class scores (N x C) or predicted labels (N), as numpy
arrays or torch tensors on any device."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support


def _predicted(scores_or_labels):
    return scores_or_labels.argmax(1) if scores_or_labels.ndim == 2 else scores_or_labels


def correct(scores_or_labels, labels):
    """How many predictions equal `labels` (a torch tensor stays on its device: no host sync)."""
    return (_predicted(scores_or_labels) == labels).sum()


def accuracy(scores_or_labels, labels) -> float:
    """Share of correct predictions; nan for no samples."""
    return float(correct(scores_or_labels, labels)) / len(labels) if len(labels) else float("nan")


def balanced_accuracy(scores_or_labels, labels) -> float:
    """Mean per-class recall over the classes present in `labels` (scikit-learn)."""
    pred = _predicted(scores_or_labels)
    pred, labels = (np.asarray(a.cpu() if hasattr(a, "cpu") else a) for a in (pred, labels))
    return float(balanced_accuracy_score(labels, pred)) if len(labels) else float("nan")


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    return {
        "test_accuracy": accuracy(y_pred, y_true),
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


def intra_class_distance(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Mean distance of embeddings to their class centre, relative to the mean distance
    between class centres (scale-free, so losses that shrink all norms do not win for free)."""
    classes = np.unique(labels)
    centres = np.stack([embeddings[labels == c].mean(0) for c in classes])
    index = np.searchsorted(classes, labels)
    intra = np.linalg.norm(embeddings - centres[index], axis=1).mean()
    between = np.linalg.norm(centres[:, None] - centres[None], axis=2)
    spread = between[np.triu_indices(len(classes), 1)].mean()
    return float(intra / spread)
