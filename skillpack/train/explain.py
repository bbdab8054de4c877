"""Visual analysis: Grad-CAM (pytorch-grad-cam) for CNNs and ViTs, t-SNE (scikit-learn) with
its silhouette score, calibration (ECE + reliability diagram) and error analysis.

The Grad-CAM target layer is chosen per architecture family: for a ViT the patch embeddings
(see VIT_DEFAULT_LAYER) with a reshape computed from the model's own patch grid; for anything convolutional
the deepest module whose output still has at least `min_spatial` x `min_spatial` positions
(at 28 px ResNet's layer4 is 1x1 and layer3 2x2: a map there is blank or coarse).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

CAM_METHODS = ("gradcam", "gradcam++", "eigencam")


# ------------------------------------------------------------------ Grad-CAM

def _module_by_name(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as err:
        raise ValueError(f"evaluate.explain.target_layer: {name!r} is not a module of the model: {err}") from None


def is_vit(backbone: nn.Module) -> bool:
    return hasattr(backbone, "patch_embed") and hasattr(backbone, "blocks")


def vit_reshape(backbone: nn.Module, prefix: int):
    """Tokens (N, prefix + H*W, C) -> (N, C, H, W) with H, W from the model's own patch grid."""
    grid_h, grid_w = backbone.patch_embed.grid_size

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, prefix:, :]
        return patches.reshape(tokens.shape[0], grid_h, grid_w, tokens.shape[2]).permute(0, 3, 1, 2)
    return reshape


def conv_target_layer(model: nn.Module, input_shape: tuple[int, int, int], min_spatial: int = 4) -> str:
    """Name of the deepest module (in forward order) with a 4-d output of at least
    min_spatial x min_spatial positions."""
    outputs: list[tuple[str, tuple]] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: outputs.append((n, tuple(out.shape)))
                                     if isinstance(out, torch.Tensor) else None)
             for n, m in model.backbone.named_modules() if n and not isinstance(m, (nn.Sequential, nn.ModuleList))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    model.train(was_training)
    for h in hooks:
        h.remove()
    good = [n for n, shape in outputs if len(shape) == 4 and min(shape[2:]) >= min_spatial]
    if not good:
        raise ValueError("no convolutional layer keeps enough spatial resolution; set evaluate.explain.target_layer")
    return "backbone." + good[-1]


# For ViTs the usual choice, the last block's norm1, did not localise on our from-scratch ViTs:
# attention has mixed every token with the evidence by then, while the patch embeddings keep the
# patch grid (tests/test_explain.py trains a ViT on a bright-patch task and asserts the
# inside/outside ratio of Grad-CAM++ on this layer is above 1.4).
VIT_DEFAULT_LAYER = "backbone.patch_embed"


@dataclass
class CamSetup:
    layer_name: str
    layer: nn.Module
    reshape: object


def cam_setup(model: nn.Module, input_shape: tuple[int, int, int], target_layer: str | None = None,
              min_spatial: int = 4) -> CamSetup:
    backbone = model.backbone
    if target_layer:
        name = target_layer
    elif is_vit(backbone):
        name = VIT_DEFAULT_LAYER
    else:
        name = conv_target_layer(model, input_shape, min_spatial)
    reshape = None
    if is_vit(backbone):  # tokens out of patch_embed carry no class/register tokens
        prefix = 0 if name.endswith("patch_embed") else getattr(backbone, "num_prefix_tokens", 1)
        reshape = vit_reshape(backbone, prefix)
    return CamSetup(name, _module_by_name(model, name), reshape)


def cam_maps(model: nn.Module, images: torch.Tensor, classes: list[int], setup: CamSetup,
             method: str = "gradcam") -> np.ndarray:
    """Heatmaps in [0, 1], one per image, for the given target classes, at input resolution."""
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    methods = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "eigencam": EigenCAM}
    if method not in methods:
        raise ValueError(f"evaluate.explain.method: unknown {method!r}; choose from {list(methods)}")
    model.eval()
    with methods[method](model=model, target_layers=[setup.layer], reshape_transform=setup.reshape) as cam:
        return cam(input_tensor=images.float(), targets=[ClassifierOutputTarget(int(c)) for c in classes])


def cam_overlay(image: np.ndarray, cam: np.ndarray, image_weight: float = 0.55) -> np.ndarray:
    """uint8 H x W x C image with its heatmap (in [0, 1], H x W) over it in jet, the image at
    `image_weight` (as the Grad-CAM grid draws it): uint8 H x W x 3 (pytorch-grad-cam's blend)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    return show_cam_on_image(rgb.astype(np.float32) / 255.0, cam.astype(np.float32), use_rgb=True,
                             image_weight=image_weight)


# ------------------------------------------------------------------ t-SNE

def stratified_sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of a class-stratified sample (equal share per class, as far as classes allow)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = max(size // len(classes), 1)
    picks = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]
    return np.sort(np.concatenate(picks))


def tsne(embeddings: np.ndarray, seed: int, perplexity: float = 30.0) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = min(perplexity, max(2.0, (len(embeddings) - 1) / 3))
    return TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(embeddings)


def silhouette(points: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(points, labels)) if len(np.unique(labels)) > 1 else float("nan")


# ------------------------------------------------------------------ calibration

def expected_calibration_error(confidence: np.ndarray, predicted: np.ndarray, labels: np.ndarray,
                               n_bins: int = 15) -> dict:
    """ECE with equal-width confidence bins: sum_b |B|/N * |acc(B) - conf(B)|. Also returns the
    per-bin figures for the reliability diagram."""
    from skillpack.metrics import accuracy

    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    bins = []
    ece = 0.0
    for b in range(n_bins):
        inside = which == b
        if inside.any():
            acc, conf = accuracy(predicted[inside], labels[inside]), float(confidence[inside].mean())
            ece += inside.mean() * abs(acc - conf)
            bins.append({"low": edges[b], "high": edges[b + 1], "count": int(inside.sum()), "accuracy": acc,
                         "confidence": conf})
    return {"ece": float(ece), "bins": bins}


# ------------------------------------------------------------------ error analysis

def confused_pairs(confusion: np.ndarray, classes: list[str], top: int = 10) -> list[dict]:
    """Most frequent (true, predicted) pairs off the diagonal."""
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:top]
    rows = []
    for flat in order:
        i, j = np.unravel_index(flat, off.shape)
        if off[i, j] == 0:
            break
        rows.append({"true": classes[i], "predicted": classes[j], "count": int(off[i, j]),
                     "share_of_true": float(off[i, j] / max(confusion[i].sum(), 1))})
    return rows


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    return nn.functional.cross_entropy(logits, labels, reduction="none").numpy()


# ------------------------------------------------------------------ the whole analysis

def _hwc(images_nchw: torch.Tensor) -> np.ndarray:
    return images_nchw.permute(0, 2, 3, 1).clamp(0, 255).to(torch.uint8).numpy()


def _cam_rows(model, images, labels, preds, classes, cfg, setup) -> list[dict]:
    """Per class: up to k correct then up to k wrong test images, with the map of the
    predicted class."""
    rows = []
    for k, name in enumerate(classes):
        correct = np.flatnonzero((labels == k) & (preds == k))[:cfg.examples_per_class]
        wrong = np.flatnonzero((labels == k) & (preds != k))[:cfg.examples_per_class]
        pick = np.concatenate([correct, wrong]).astype(int)
        if len(pick) == 0:
            rows.append({"class": name, "items": []})
            continue
        maps = cam_maps(model, images[pick], preds[pick].tolist(), setup, cfg.method)
        rows.append({"class": name, "items": [
            {"image": img, "cam": cam, "true": classes[labels[i]], "pred": classes[preds[i]],
             "correct": bool(labels[i] == preds[i])}
            for i, img, cam in zip(pick, _hwc(images[pick]), maps)]})
    return rows


def _cam_figure(model, images, labels, preds, classes, cfg, out) -> str:
    """gradcam.png: the maps of _cam_rows; returns the layer they were taken at."""
    from skillpack.plots import plot_cam_grid

    setup = cam_setup(model, tuple(images.shape[1:]), cfg.target_layer, cfg.min_spatial)
    rows = _cam_rows(model, images, labels, preds, classes, cfg, setup)
    plot_cam_grid(rows, out / "gradcam.png", f"{cfg.method} on {setup.layer_name} - green: correct, red: wrong "
                  f"(heatmap of the predicted class)", per_row=2 * cfg.examples_per_class)
    return setup.layer_name


def _tsne_figure(model, images, labels, preds, classes, cfg, seed, out) -> dict:
    """tsne.png of a stratified sample's penultimate embeddings; their silhouettes, in 2-d and in full."""
    from skillpack.plots import plot_tsne
    from skillpack.train.engine import predict

    sample = stratified_sample(labels, cfg.tsne_samples, seed)
    embeddings = predict(model, images[sample], embeddings=True).numpy()
    points = tsne(embeddings, seed, cfg.tsne_perplexity)
    metrics = {"tsne_silhouette": silhouette(points, labels[sample]),
               "embedding_silhouette": silhouette(embeddings, labels[sample])}
    plot_tsne(points, labels[sample], preds[sample] != labels[sample], classes, out / "tsne.png",
              f"t-SNE of penultimate embeddings ({len(sample)} test images) - silhouette "
              f"{metrics['tsne_silhouette']:.3f} (2-d), {metrics['embedding_silhouette']:.3f} (embeddings)")
    return metrics


def _error_figures(images, logits, probs, labels, preds, classes, cfg, out) -> list[dict]:
    """confused_pairs.csv and high_loss.png (the highest-loss images); returns the confused pairs."""
    import pandas as pd

    from skillpack.data.loader import to_label_tensor
    from skillpack.io import atomic_path
    from skillpack.metrics import confusion
    from skillpack.plots import plot_image_grid

    pairs = confused_pairs(confusion(labels, preds, len(classes)), classes, cfg.top_confused)
    with atomic_path(out / "confused_pairs.csv") as tmp:
        pd.DataFrame(pairs, columns=["true", "predicted", "count", "share_of_true"]).to_csv(tmp, index=False)
    losses = per_sample_loss(logits, to_label_tensor(labels))
    worst = np.argsort(-losses, kind="stable")[:cfg.high_loss_images]
    plot_image_grid([{"image": img, "caption": f"T: {classes[labels[i]]}\nP: {classes[preds[i]]} ({probs[i].max():.2f})\n"
                      f"loss {losses[i]:.2f}", "bad": preds[i] != labels[i]}
                     for i, img in zip(worst, _hwc(images[worst]))],
                    out / "high_loss.png", f"The {len(worst)} highest-loss test images")
    return pairs


def explain_model(model: nn.Module, images: torch.Tensor, labels: np.ndarray, classes: list[str], cfg,
                  out_dir, seed: int = 0, logits: torch.Tensor | None = None) -> dict:
    """Every visual-analysis artifact for one model on one labelled image set (uint8 NCHW).
    Writes PNGs and a CSV under out_dir and returns the metrics."""
    from pathlib import Path

    from skillpack.plots import plot_reliability
    from skillpack.train.engine import predict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    logits = predict(model, images) if logits is None else logits
    probs = torch.softmax(logits, 1).numpy()
    preds = probs.argmax(1)
    labels = np.asarray(labels)
    metrics: dict = {"cam_layer": _cam_figure(model, images, labels, preds, classes, cfg, out)}
    metrics.update(_tsne_figure(model, images, labels, preds, classes, cfg, seed, out))
    calibration = expected_calibration_error(probs.max(1), preds, labels, cfg.calibration_bins)
    metrics["ece"] = calibration["ece"]
    plot_reliability(calibration["bins"], calibration["ece"], out / "reliability.png")
    metrics["top_confused"] = _error_figures(images, logits, probs, labels, preds, classes, cfg, out)[:3]
    return metrics
