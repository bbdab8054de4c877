"""Classification metrics (scikit-learn) and the overfitting check. The one place accuracy is
computed: `correct` / `accuracy` take class scores (N x C) or predicted labels (N), as numpy
arrays or torch tensors on any device. Per-run figures of the ablation: the embedding space's
recall@1 and TAR@FAR (cosine similarity, computed in blocks: 10k embeddings need no N x N
matrix) and the oscillation of the training-loss curve."""
from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support
from torch import nn


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


# -- embedding quality and training stability (the ablation's per-run figures) --------------

SIMILARITY_BLOCK = 4_000_000   # entries of one block of the similarity matrix (16 MB of float32)


def _unit_rows(embeddings) -> torch.Tensor:
    x = torch.as_tensor(embeddings).detach().cpu().float()
    return nn.functional.normalize(x.reshape(len(x), -1), dim=1)


def _as_labels(labels) -> torch.Tensor:
    return torch.as_tensor(labels).detach().cpu().long()


def _block_rows(n: int) -> int:
    return max(1, SIMILARITY_BLOCK // max(n, 1))


@torch.no_grad()
def recall_at_1(embeddings, labels) -> float:
    """Leave-one-out retrieval: share of embeddings whose nearest other one has their label.

    Nearest by cosine similarity; whether the embedding space itself clusters by class, the
    classifier head aside. nan for fewer than two embeddings."""
    x, y = _unit_rows(embeddings), _as_labels(labels)
    n = len(x)
    if n < 2:
        return float("nan")
    hits, step = 0, _block_rows(n)
    for start in range(0, n, step):
        sims = x[start:start + step] @ x.T
        rows = torch.arange(len(sims))
        sims[rows, rows + start] = -float("inf")   # not itself
        hits += int((y[sims.argmax(1)] == y[start:start + step]).sum())
    return hits / n


@torch.no_grad()
def tar_at_far(embeddings, labels, far: float = 1e-3) -> float:
    """Verification: share of same-label pairs accepted where at most `far` of the others are.

    Every pair i < j is scored by cosine similarity; a pair is accepted above the threshold
    that accepts at most a share `far` of the different-label (impostor) pairs; the result is
    the true accept rate of the same-label (genuine) pairs: open-set separability at a strict
    operating point, which accuracy and recall@1 do not see. nan without both kinds of pair."""
    x, y = _unit_rows(embeddings), _as_labels(labels)
    n = len(x)
    counts = torch.bincount(y - y.min()).double() if n else torch.zeros(0, dtype=torch.float64)
    n_genuine = int((counts * (counts - 1) / 2).sum())
    n_impostor = n * (n - 1) // 2 - n_genuine
    if n_genuine == 0 or n_impostor == 0:
        return float("nan")
    # accept a pair when its similarity is above the (k+1)-th largest impostor similarity,
    # k = floor(far * impostors): at most k impostors accepted. Two passes over upper-triangle
    # blocks (the threshold, then the genuine pairs above it), so memory stays one block.
    k = int(math.floor(far * n_impostor + 1e-9))
    step = _block_rows(n)

    def blocks():
        for start in range(0, n, step):
            sims = x[start:start + step] @ x[start:].T                         # rows i, columns j >= start
            upper = torch.ones_like(sims, dtype=torch.bool).triu_(1)           # j > i
            same = y[start:start + step, None] == y[None, start:]
            yield sims, same & upper, ~same & upper

    if k + 1 > n_impostor:
        threshold = -float("inf")
    else:
        top = torch.zeros(0)
        for sims, _, impostor in blocks():
            candidates = torch.cat([top, sims[impostor]])
            top = candidates.topk(min(k + 1, len(candidates))).values
        threshold = float(top[k])
    accepted = sum(int((sims[genuine] > threshold).sum()) for sims, genuine, _ in blocks())
    return accepted / n_genuine


def loss_oscillation(step_losses, epochs: int | None = None) -> float:
    """Step-to-step noise of a training-loss curve: how erratically the optimisation moved.

    The std of the first differences of the per-step losses / sqrt(2): white noise of std s
    on the curve gives s, while a smooth trend, however steep, adds next to nothing.
    `step_losses`: the per-step losses in order, or one list per epoch (EpochResult.step_losses
    of a history), joined in order; `epochs`: only the first `epochs` of those lists (all
    when None or fewer). nan for fewer than three steps."""
    per_epoch = len(step_losses) > 0 and np.ndim(step_losses[0]) > 0
    if epochs is not None and not per_epoch:
        raise ValueError("loss_oscillation: `epochs` needs one list of step losses per epoch")
    if per_epoch:
        chosen = step_losses[:epochs] if epochs is not None else step_losses
        values = [float(v) for epoch in chosen for v in epoch]
    else:
        values = [float(v) for v in step_losses]
    if len(values) < 3:
        return float("nan")
    return float(np.diff(np.asarray(values, dtype=np.float64)).std(ddof=1) / math.sqrt(2))
