"""Losses, one registry. Every classification loss accepts hard labels (N,) or soft targets
(N x C, e.g. from Mixup/CutMix); the embedding losses (center, triplet) and the ArcFace head
need hard labels and say so.

The objective a run trains with is `Objective`: the classification loss, plus weighted
center and triplet terms on the embeddings, plus knowledge distillation from a teacher.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def as_soft(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    return targets if targets.dtype.is_floating_point else F.one_hot(targets, num_classes).float()


def require_hard(targets: torch.Tensor, who: str) -> torch.Tensor:
    if targets.dtype.is_floating_point:
        raise ValueError(f"{who} needs hard integer labels, got soft targets (Mixup/CutMix); "
                         f"turn Mixup/CutMix off or drop {who}")
    return targets


def smooth(targets: torch.Tensor, num_classes: int, epsilon: float) -> torch.Tensor:
    """Label smoothing as torch defines it: (1 - eps) * target + eps / C."""
    return as_soft(targets, num_classes) * (1 - epsilon) + epsilon / num_classes


class CrossEntropy(nn.Module):
    """torch's cross-entropy, optionally class-weighted (the weights a buffer, so they follow the
    objective to its device). Hard labels: the mean is sum(w_y * loss) / sum(w_y); soft targets:
    sum over classes of w_c * t_c * -log p_c, averaged over the batch (torch's definitions)."""

    def __init__(self, label_smoothing: float = 0.0, weight: torch.Tensor | None = None):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, weight=self.weight, label_smoothing=self.label_smoothing)


def class_weights(counts: torch.Tensor, scheme: str, beta: float = 0.999) -> torch.Tensor | None:
    """Per-class loss weights from the training labels' class counts, normalised to mean 1 (None
    for `none`): inverse 1 / n_c; effective the inverse effective number of samples (Cui et al.
    2019), (1 - beta) / (1 - beta^n_c). A class with no training sample counts as one. Equal
    counts give weights of exactly 1."""
    if scheme == "none":
        return None
    n = counts.double().clamp(min=1)
    raw = {"inverse": lambda: 1 / n, "effective": lambda: (1 - beta) / (1 - beta ** n)}[scheme]()
    relative = raw / raw.max()   # exactly 1 where the counts are equal
    return (relative / relative.mean()).float()


def logit_offsets(counts: torch.Tensor, tau: float) -> torch.Tensor | None:
    """tau * log(prior_c) per class, the logit adjustment of Menon et al. 2021 (None for tau 0).
    Shifted by a constant (log of the largest count instead of the total), which no softmax
    loss sees: a uniform prior gives offsets of exactly 0. A class with no training sample counts as one."""
    if tau == 0:
        return None
    log_n = counts.double().clamp(min=1).log()
    return (tau * (log_n - log_n.max())).float()


class FocalLoss(nn.Module):
    """Multi-class softmax focal loss: -sum_c alpha_c * t_c * (1 - p_c)^gamma * log p_c.
    Written here because torchvision.ops.sigmoid_focal_loss is the binary/sigmoid form; with
    gamma=0 and no alpha it is exactly cross-entropy."""

    def __init__(self, gamma: float = 2.0, alpha: list[float] | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.gamma, self.label_smoothing = gamma, label_smoothing
        self.register_buffer("alpha", torch.tensor(alpha, dtype=torch.float32) if alpha else None)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[1]
        soft = smooth(targets, num_classes, self.label_smoothing)
        log_p = F.log_softmax(logits.float(), dim=1)
        weight = (1 - log_p.exp()).pow(self.gamma)
        if self.alpha is not None:
            weight = weight * self.alpha.view(1, -1)
        return -(soft * weight * log_p).sum(dim=1).mean()


class CenterLoss(nn.Module):
    """Center loss (Wen et al. 2016): 0.5 * ||f_i - c_{y_i}||^2, averaged over the batch.
    The centres are parameters with their own learning rate (a separate optimizer group).
    Written here: pytorch-metric-learning has no center loss."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, dim) * 0.01)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = require_hard(labels, "loss.center_weight")
        return 0.5 * (features.float() - self.centers[labels]).pow(2).sum(dim=1).mean()


def triplet_loss(mining: str, margin: float):
    """pytorch-metric-learning's TripletMarginLoss with its TripletMarginMiner
    (type_of_triplets all | hard | semihard)."""
    from pytorch_metric_learning import losses, miners

    miner = miners.TripletMarginMiner(margin=margin, type_of_triplets=mining)
    loss = losses.TripletMarginLoss(margin=margin)

    def compute(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = require_hard(labels, "loss.triplet_weight")
        embeddings = embeddings.float()
        return loss(embeddings, labels, miner(embeddings, labels))
    return compute


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.: KL(softmax(t/T) || softmax(s/T)) * T^2, averaged over the batch."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits.float() / t, dim=1), F.log_softmax(teacher_logits.float() / t, dim=1),
                    reduction="batchmean", log_target=True) * t * t


class ArcMarginHead(nn.Module):
    """ArcFace head (Deng et al. 2019): logits s*cos(theta_j), and s*cos(theta_y + m) for the
    true class while training. Written here rather than pytorch-metric-learning's ArcFaceLoss
    because the same weights must also be the classifier at prediction time."""

    def __init__(self, in_features: int, num_classes: int, scale: float = 30.0, margin: float = 0.5):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)
        self.scale, self.margin = scale, margin

    def cosine(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(features.float()), F.normalize(self.weight.float()))

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = self.cosine(features)
        if labels is None:
            return self.scale * cos
        labels = require_hard(labels, "head.name=arcface")
        theta = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
        # Past theta = pi - m, cos(theta + m) rises again; there the target logit goes on falling
        # as cos(theta) - m sin(m) instead (insightface's `th` / `mm` fallback: it steps down at pi - m)
        with_margin = torch.where(theta < math.pi - self.margin, torch.cos(theta + self.margin),
                                  cos - self.margin * math.sin(self.margin))
        target = F.one_hot(labels, cos.shape[1]).bool()
        return self.scale * torch.where(target, with_margin, cos)


# name -> (loss params, per-class weights or None) -> classification loss
LOSSES = {
    "ce": lambda cfg, weight: CrossEntropy(cfg.label_smoothing, weight),
    "focal": lambda cfg, weight: FocalLoss(cfg.focal_gamma, weight.tolist() if weight is not None else cfg.focal_alpha,
                                           cfg.label_smoothing),
}


class Objective(nn.Module):
    """The weighted sum a run minimises:
    (1 - w_kd) * classification + w_kd * KD + w_center * center + w_triplet * triplet.
    `class_counts` (the training labels' count per class) feed loss.class_weights and
    loss.logit_adjustment_tau; without them both must be off."""

    def __init__(self, cfg, num_classes: int, embed_dim: int, class_counts: torch.Tensor | None = None):
        super().__init__()
        if cfg.name not in LOSSES:
            raise ValueError(f"train.loss.name: unknown {cfg.name!r}; known {sorted(LOSSES)}")
        if class_counts is None and (cfg.class_weights != "none" or cfg.logit_adjustment_tau > 0):
            raise ValueError("train.loss.class_weights / logit_adjustment_tau need the training labels' class counts")
        self.cfg = cfg
        weight = class_weights(class_counts, cfg.class_weights, cfg.class_weights_beta) if class_counts is not None else None
        self.classification = LOSSES[cfg.name](cfg, weight)
        # the loss-based variant of logit adjustment: the offsets enter the training loss only;
        # the model's logits (prediction, validation, distillation) stay unadjusted
        offsets = logit_offsets(class_counts, cfg.logit_adjustment_tau) if class_counts is not None else None
        self.register_buffer("logit_offsets", offsets, persistent=False)
        self.center = CenterLoss(num_classes, embed_dim) if cfg.center_weight > 0 else None
        self.triplet = triplet_loss(cfg.triplet_mining, cfg.triplet_margin) if cfg.triplet_weight > 0 else None

    def forward(self, logits, targets, embeddings=None, teacher_logits=None) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        adjusted = logits.float() if self.logit_offsets is None else logits.float() + self.logit_offsets
        terms = {"classification": self.classification(adjusted, targets)}
        total = terms["classification"]
        if teacher_logits is not None:
            terms["distill"] = distillation_loss(logits, teacher_logits, cfg.distill.temperature)
            total = (1 - cfg.distill.weight) * total + cfg.distill.weight * terms["distill"]
        if self.center is not None:
            terms["center"] = self.center(embeddings, targets)
            total = total + cfg.center_weight * terms["center"]
        if self.triplet is not None:
            terms["triplet"] = self.triplet(embeddings, targets)
            total = total + cfg.triplet_weight * terms["triplet"]
        terms["total"] = total
        return terms
