"""The one way a model is trained and scored.

`train_model` builds a seeded model from train params and fits it with the engine;
`evaluate_model` scores any classifier on labelled images. The train and evaluate stages,
the out-of-fold models of the clean stage, the ablation's arms and teachers, and every
benchmark call these two: a caller that wants to watch training passes `on_epoch`
(called after every epoch with the epoch's record, the history so far and the weights being
evaluated, the EMA weights when EMA is on) instead of copying the loop.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from skillpack.config import TrainParams
from skillpack.metrics import accuracy, balanced_accuracy, intra_class_distance, loss_oscillation, recall_at_1, tar_at_far
from skillpack.train.engine import EpochResult, Trainer, predict, seed_everything
from skillpack.train.models import ImageClassifier, build_classifier, channel_stats, count_macs, count_params

OnEpoch = Callable[[EpochResult, list[EpochResult], nn.Module], None]

# train_and_evaluate's figures: tar_at_far at this false-accept rate (the result key names no
# rate); loss_oscillation over the step losses of the first OSCILLATION_EPOCHS epochs (all when
# fewer), where optimisers and schedules differ most.
TAR_FAR = 1e-3
OSCILLATION_EPOCHS = 5


@dataclass
class RunData:
    """What a training reads: (images N x H x W x C uint8, labels) for train and val."""
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        h, w, c = self.train[0].shape[1:]
        return int(h), int(w), int(c)


@dataclass
class TrainedModel:
    model: ImageClassifier                 # the final weights (the EMA weights when EMA is on)
    history: list[EpochResult] = field(default_factory=list)
    resumed_from_epoch: int = 0            # epochs restored from a checkpoint, not trained now
    train_seconds: float = 0.0             # wall time of the epochs trained now
    device: torch.device = torch.device("cpu")
    compile_seconds: float = 0.0           # runtime.compile's warm-up before the first epoch (not in train_seconds)
    resident: bool = False                 # the training set lived on the training device (runtime.resident)
    precision: str = "fp32"                # what train.amp resolved to on this device: fp32 | bf16 | fp16

    @property
    def epochs_trained(self) -> int:
        return len(self.history) - self.resumed_from_epoch

    def images_per_second(self, n_train: int) -> float:
        return n_train * self.epochs_trained / self.train_seconds if self.train_seconds > 0 else 0.0


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}   # TrainedModel.precision -> autocast dtype


def train_model(cfg: TrainParams, data: RunData, seed: int, *, on_epoch: OnEpoch | None = None,
                checkpoint: str | Path | None = None, fingerprint: str = "", teacher: nn.Module | None = None,
                progress: bool = False, init: ImageClassifier | None = None) -> TrainedModel:
    """A fresh model of `cfg`, seeded by `seed`, fitted on `data`; or, with `init`, a copy of
    that model trained further (fine-tuning, e.g. after pruning). With `checkpoint`, every
    epoch is saved atomically and a later call with the same cfg, seed and `fingerprint` (name
    the data with it) resumes where the last one stopped. Under torchrun every rank makes this
    call with the same arguments and gets the same model back; only rank 0 writes the
    checkpoint and calls `on_epoch` (skillpack.train.distributed)."""
    import copy

    x_train, y_train = data.train
    seed_everything(seed)
    model = copy.deepcopy(init) if init is not None else \
        build_classifier(cfg.model, data.num_classes, data.image_shape, cfg.head, *channel_stats(x_train),
                         pretrained=cfg.pretrained, input_size=cfg.input_size)
    if cfg.freeze_backbone:
        model.freeze_backbone()
    trainer = Trainer(model, cfg, seed, checkpoint=checkpoint, data_hash=fingerprint, on_epoch_end=on_epoch,
                      progress=progress, teacher=teacher)
    fit = trainer.fit(x_train, y_train, *data.val)
    precision = next((name for name, dtype in AMP_DTYPES.items() if dtype == trainer.amp_dtype), "fp32")
    return TrainedModel(trainer.model, fit.history, fit.resumed_from_epoch, fit.train_seconds, trainer.device,
                        fit.compile_seconds, fit.resident, precision)


@dataclass
class Evaluation:
    logits: torch.Tensor      # N x C, on the CPU
    labels: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(1).numpy()

    @property
    def accuracy(self) -> float:
        return accuracy(self.predictions, self.labels)

    @property
    def balanced_accuracy(self) -> float:
        return balanced_accuracy(self.predictions, self.labels)

    @property
    def loss(self) -> float:
        from skillpack.data.loader import to_label_tensor

        return float(nn.functional.cross_entropy(self.logits, to_label_tensor(self.labels)))


def evaluate_model(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 1024) -> Evaluation:
    """Logits of `model` on uint8 N x H x W x C images, with the labels they are scored against."""
    from skillpack.data.loader import to_tensor_nchw

    return Evaluation(predict(model, to_tensor_nchw(images), batch_size), np.asarray(labels))


def embeddings_and_logits(model: ImageClassifier, images: np.ndarray, precision: str = "fp32",
                          batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass through the backbone: the penultimate embeddings of uint8 N x H x W x C images
    and the logits the head gives them, in `precision` (a TrainedModel's), on the CPU."""
    from skillpack.data.loader import to_tensor_nchw

    embeddings = predict(model, to_tensor_nchw(images), batch_size, embeddings=True,
                         amp_dtype=AMP_DTYPES.get(precision))
    device, was_training = next(model.parameters()).device, model.training
    model.eval()   # the head's dropout off, as in predict
    with torch.inference_mode():
        logits = torch.cat([model.classify(embeddings[start:start + batch_size].to(device)).float().cpu()
                            for start in range(0, len(embeddings), batch_size)]) if len(embeddings) else torch.zeros(0)
    model.train(was_training)
    return embeddings, logits


def embeddings_of(model: ImageClassifier, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    from skillpack.data.loader import to_tensor_nchw

    return predict(model, to_tensor_nchw(images), batch_size, embeddings=True).numpy()


def train_and_evaluate(cfg: TrainParams, seed: int, data: RunData, test: tuple[np.ndarray, np.ndarray],
                       teacher: nn.Module | None = None, embedding_samples: int = 2000,
                       init: ImageClassifier | None = None) -> dict:
    """One experiment run (ablation arms, benchmarks): train (from `init` when given, as
    train_model does), then score on the test set (on the training device). Returns JSON-ready
    figures: test accuracies; the embedding space of the first `embedding_samples` test images
    (intra_class_distance, recall_at_1, tar_at_far at TAR_FAR); the curves (val_acc_by_epoch,
    train_loss_by_epoch, loss_oscillation over the first OSCILLATION_EPOCHS epochs); the model's
    size (params, macs for one image)."""
    t0 = time.perf_counter()
    trained = train_model(cfg, data, seed, teacher=teacher, init=init)
    seconds = time.perf_counter() - t0
    model = trained.model
    x_test, y_test = test
    scored = evaluate_model(model, x_test, y_test)
    last = trained.history[-1]
    embeddings, embedding_labels = embeddings_of(model, x_test[:embedding_samples]), y_test[:embedding_samples]
    c, (h, w) = data.image_shape[2], data.image_shape[:2]
    return {
        "test_accuracy": scored.accuracy,
        "balanced_accuracy": scored.balanced_accuracy,
        "train_seconds": seconds,
        "final_val_acc": last.val_acc,
        "train_loss": last.train_loss,
        "val_loss": last.val_loss,
        "overfit_gap": last.val_loss - last.train_eval_loss,  # what evaluate.overfit_gap is compared with
        "intra_class_distance": intra_class_distance(embeddings, embedding_labels),
        "n_train": int(len(data.train[1])),
        "recall_at_1": recall_at_1(embeddings, embedding_labels),
        "tar_at_far": tar_at_far(embeddings, embedding_labels, TAR_FAR),
        "loss_oscillation": loss_oscillation([r.step_losses for r in trained.history], OSCILLATION_EPOCHS),
        "val_acc_by_epoch": [float(r.val_acc) for r in trained.history],
        "train_loss_by_epoch": [float(r.train_loss) for r in trained.history],
        "params": count_params(model),
        "macs": count_macs(model, (c, h, w)),
    }
