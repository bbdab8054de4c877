"""The evaluate stage's work on the trained model: test metrics, per-class report, confusion
matrix, training curves, predictions, and the visual analysis (Grad-CAM, t-SNE, calibration,
errors), each written where skillpack.paths says; with evaluate.tta also the test accuracy under
test-time augmentation (skillpack.data.tta)."""
from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from skillpack import paths
from skillpack.config import EvaluateParams
from skillpack.data import PreparedStore
from skillpack.data.loader import to_tensor_nchw
from skillpack.data.tta import tta_probabilities
from skillpack.io import atomic_path, write_json
from skillpack.metrics import accuracy, classification_metrics, confusion, overfitting_check
from skillpack.plots import plot_confusion, plot_curves
from skillpack.train.checkpoint import load_classifier
from skillpack.train.engine import predict
from skillpack.train.explain import explain_model
from skillpack.train.runs import evaluate_model

EXPLAINED = ("tsne_silhouette", "embedding_silhouette", "ece")   # the visual analysis's figures among the test metrics


@dataclass
class Evaluation:
    model_name: str
    data_hash: str
    figures: dict                  # flat: test metrics, overfitting check, f1.<class>, seconds
    explained: dict = field(default_factory=dict)   # the visual analysis's summary ({} when evaluate.explain is off)


def read_history(path) -> list[dict]:
    with open(path) as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def write_predictions(path, y_true, y_pred, classes) -> None:
    import pandas as pd

    frame = pd.DataFrame({"actual": [classes[i] for i in y_true], "predicted": [classes[i] for i in y_pred]})
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def probabilities_of(model: torch.nn.Module, batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 N x H x W x C -> the model's class probabilities (what TTA averages)."""
    def probabilities(pixels: np.ndarray) -> np.ndarray:
        return torch.softmax(predict(model, to_tensor_nchw(pixels), batch_size), dim=1).numpy()
    return probabilities


def evaluate_production(cfg: EvaluateParams, threads: int, seed: int) -> Evaluation:
    """Score models/model.pt on the test split (on `threads` CPU threads) and write every evaluate
    output but the metrics report (the stage publishes that from the returned figures)."""
    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    store = PreparedStore(paths.PREPARED)
    test_x, test_y = store.arrays("test")
    model, meta = load_classifier(paths.MODEL_FILE)
    scored = evaluate_model(model, test_x, test_y, cfg.batch_size)
    metrics = classification_metrics(test_y, scored.predictions, store.classes)
    history = read_history(paths.TRAIN_LOG)
    overfit = overfitting_check(history, cfg.overfit_gap)
    metrics.update({"test_loss": scored.loss, **overfit, "n_test": int(len(test_y))})
    if cfg.tta:
        metrics["test_accuracy_tta"] = accuracy(tta_probabilities(probabilities_of(model, cfg.batch_size), test_x,
                                                                  cfg.tta_crop_padding, cfg.batch_size), test_y)
    per_class = metrics.pop("per_class")
    write_json(paths.PER_CLASS, per_class)
    plot_confusion(confusion(test_y, scored.predictions, len(store.classes)), store.classes, paths.CONFUSION_PNG,
                   title=f"{meta['model_name']}: test accuracy {metrics['test_accuracy']:.4f}")
    plot_curves(history, paths.CURVES_PNG, overfit)
    write_predictions(paths.PREDICTIONS, test_y, scored.predictions, store.classes)
    explained = {}
    if cfg.explain.enabled:
        t_explain = time.perf_counter()
        explained = explain_model(model, to_tensor_nchw(test_x), test_y, store.classes, cfg.explain,
                                  paths.EXPLAIN, seed=seed, logits=scored.logits)
        explained["explain_seconds"] = round(time.perf_counter() - t_explain, 2)
        write_json(paths.EXPLAIN / "explain.json", explained)
        metrics.update({key: explained[key] for key in (*EXPLAINED, "explain_seconds")})
    metrics.update({f"f1.{name}": m["f1"] for name, m in per_class.items()})
    metrics["evaluate_seconds"] = round(time.perf_counter() - t0, 2)
    return Evaluation(meta["model_name"], store.data_hash(), metrics, explained)
