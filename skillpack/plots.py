"""PNG figures people would rather see than read (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from skillpack.io import atomic_path  # noqa: E402


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, classes: list[str], path: str | Path, title: str = "") -> None:
    n = len(classes)
    size = max(5.0, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    row_sums = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, row_sums, out=np.zeros_like(matrix, dtype=float), where=row_sums > 0)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "Confusion matrix (counts; colour = row-normalised)")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    _save(fig, path)


def plot_curves(history: list[dict], path: str | Path, overfit: dict | None = None) -> None:
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], ":", color="tab:blue", label="training objective (aug.)")
    ax_loss.plot(epochs, [h["train_eval_loss"] for h in history], "o-", color="tab:blue", label="train loss (eval)")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", color="tab:orange", label="val loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [h["train_acc"] for h in history], ":", color="tab:blue", label="training batches (aug.)")
    ax_acc.plot(epochs, [h["train_eval_acc"] for h in history], "o-", color="tab:blue", label="train acc (eval)")
    ax_acc.plot(epochs, [h["val_acc"] for h in history], "o-", color="tab:orange", label="val acc")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    if overfit is not None:
        verdict = "OVERFITTING" if overfit["overfitting"] else "no overfitting"
        fig.suptitle(f"{verdict}: final val-train loss gap {overfit['loss_gap']:+.3f} "
                     f"(threshold {overfit['overfit_threshold']})",
                     color="red" if overfit["overfitting"] else "black")
    _save(fig, path)


def _show(ax, image: np.ndarray) -> None:
    """uint8 H x W x C image on an axis (grayscale for one channel)."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_cam_grid(rows: list[dict], path: str | Path, title: str, per_row: int) -> None:
    """rows: [{"class": name, "items": [{"image", "cam", "true", "pred", "correct"}]}]; one row per
    class, each image drawn with its heatmap over it (jet, alpha 0.45) and true/pred labels."""
    n_rows = len(rows)
    fig, axes = plt.subplots(n_rows, per_row, figsize=(1.9 * per_row, 2.1 * n_rows), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(per_row):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(row["items"]):
                continue
            item = row["items"][c]
            _show(ax, item["image"])
            ax.imshow(item["cam"], cmap="jet", alpha=0.45, vmin=0, vmax=1,
                      extent=(-0.5, item["image"].shape[1] - 0.5, item["image"].shape[0] - 0.5, -0.5))
            ax.axis("on")
            ax.set_title(f"T: {item['true']}\nP: {item['pred']}", fontsize=7,
                         color="green" if item["correct"] else "red")
        axes[r][0].set_ylabel(row["class"], fontsize=8)
    fig.tight_layout()
    fig.suptitle(title, fontsize=10, y=1.01)
    _save(fig, path)


def plot_tsne(points: np.ndarray, labels: np.ndarray, wrong: np.ndarray, classes: list[str], path: str | Path,
              title: str) -> None:
    fig, ax = plt.subplots(figsize=(8, 7))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for k, name in enumerate(classes):
        sel = labels == k
        if sel.any():
            ax.scatter(points[sel, 0], points[sel, 1], s=6, color=cmap(k % cmap.N), label=name, alpha=0.8)
    if wrong.any():
        ax.scatter(points[wrong, 0], points[wrong, 1], s=28, facecolors="none", edgecolors="black",
                   linewidths=0.8, label="misclassified")
    ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    _save(fig, path)


def plot_reliability(bins: list[dict], ece: float, path: str | Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    centers = [(b["low"] + b["high"]) / 2 for b in bins]
    widths = [b["high"] - b["low"] for b in bins]
    ax.bar(centers, [b["accuracy"] for b in bins], width=widths, edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.plot(centers, [b["confidence"] for b in bins], "r.", label="mean confidence")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax.set_title(f"Reliability diagram - ECE {ece:.4f}")
    _save(fig, path)


def plot_image_grid(items: list[dict], path: str | Path, title: str, per_row: int = 8) -> None:
    """items: [{"image", "caption", "bad"}] in order."""
    n_rows = max(1, -(-len(items) // per_row))
    fig, axes = plt.subplots(n_rows, per_row, figsize=(1.8 * per_row, 2.4 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, item in zip(axes.flat, items):
        _show(ax, item["image"])
        ax.axis("on")
        ax.set_title(item["caption"], fontsize=7, color="red" if item.get("bad") else "black")
    fig.tight_layout()
    fig.suptitle(title, fontsize=10, y=1.01)
    _save(fig, path)


def plot_score_histogram(groups: dict[str, np.ndarray], threshold: float | None, path: str | Path,
                         title: str) -> None:
    """Overlaid histograms of one score for several groups (e.g. clean vs flipped labels)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    values = np.concatenate([v for v in groups.values() if len(v)]) if any(len(v) for v in groups.values()) else np.zeros(1)
    bins = np.linspace(float(values.min()), float(values.max()) + 1e-9, 50)
    for name, v in groups.items():
        ax.hist(v, bins=bins, alpha=0.6, label=f"{name} (n={len(v)}, median {np.median(v) if len(v) else float('nan'):.3f})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_yscale("log")
    ax.set_xlabel("score")
    ax.set_ylabel("samples (log)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_effects(items: list[dict], path: str | Path, title: str, xlabel: str) -> None:
    """One horizontal interval per item ({label, delta, low, high, colour, claimed: [values],
    directions: [+1 | -1]}), the claimed values drawn as diamonds just under their interval,
    claims without a value as a triangle at 0 pointing the claimed way."""
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(9.5, 0.5 * len(items) + 1.8))
    for y, item in enumerate(items):
        ax.errorbar(item["delta"], y, xerr=[[item["delta"] - item["low"]], [item["high"] - item["delta"]]],
                    fmt="o", color=item["colour"], ecolor=item["colour"], elinewidth=2.5, capsize=3)
        for value in item.get("claimed", []):
            ax.plot(value, y + 0.28, "D", markerfacecolor="none", markeredgecolor="black", markersize=6)
        for sign in item.get("directions", []):
            ax.plot(0, y + 0.28, ">" if sign > 0 else "<", color="dimgray", markersize=6)
    ax.set_yticks(range(len(items)), [item["label"] for item in items])
    ax.axvline(0, color="black", lw=0.8)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    handles = [Line2D([], [], marker="o", color=c, lw=2.5, label=name) for name, c in
               (("improves", "tab:green"), ("hurts", "tab:red"), ("no detectable effect", "tab:gray"))]
    handles += [Line2D([], [], marker="D", ls="none", markerfacecolor="none", markeredgecolor="black",
                       label="the article's claimed value"),
                Line2D([], [], marker=">", ls="none", color="dimgray", label="claimed direction (no value)")]
    ax.legend(handles=handles, fontsize=8, loc="best")
    _save(fig, path)


def _waterfall_bar(ax, x: int, bottom: float, step: dict, claimed_from: float) -> list[float]:
    """One bar of `step`'s delta from `bottom`, its 95% CI and, where it has one, the claimed
    value as a diamond at claimed_from + claimed; the y values the axis must show."""
    d = step["delta"]
    ax.bar(x, d, bottom=bottom, color=step["colour"], yerr=[[d - step["low"]], [step["high"] - d]], capsize=3)
    tops = [bottom + d, bottom + step["low"], bottom + step["high"]]
    if step.get("claimed") is not None:
        ax.plot(x + 0.3, claimed_from + step["claimed"], "D", markerfacecolor="none", markeredgecolor="black")
        tops.append(claimed_from + step["claimed"])
    return tops


def plot_waterfall(start: float, steps: list[dict], path: str | Path, title: str, ylabel: str,
                   total: dict | None = None) -> None:
    """Cumulative steps ({label, delta, low, high, colour, claimed: value or None}) from `start`;
    each claimed step is drawn as a diamond beside its bar, where the article says the step ends.
    `total` (the same keys): the last step measured against the start, drawn from the start with
    its own CI and claimed value; the last bar is then start + its delta, not the sum of the steps."""
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    level = start
    ax.bar(0, start, color="tab:blue")
    ax.text(0, start, f"{start:.2f}", ha="center", va="bottom", fontsize=8)
    tops = [start]
    for i, step in enumerate(steps, start=1):
        tops += _waterfall_bar(ax, i, level, step, level)
        level += step["delta"]
    bars = [*steps, *([total] if total else [])]
    if total:
        tops += _waterfall_bar(ax, len(bars), start, total, start)
        level = start + total["delta"]
    ax.bar(len(bars) + 1, level, color="tab:blue")
    ax.text(len(bars) + 1, level, f"{level:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(bars) + 2), ["baseline", *[f"{s['label']}\n{s['delta']:+.2f}" for s in bars], "total"])
    ax.set_ylim(min(tops) - 1.5, max(tops) + 1.5)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(handles=[Line2D([], [], marker="D", ls="none", markerfacecolor="none", markeredgecolor="black",
                              label="where the article's step would end")]
              + [Line2D([], [], lw=6, color=c, label=name) for name, c in
                 (("improves", "tab:green"), ("hurts", "tab:red"), ("no detectable effect", "tab:gray"))],
              fontsize=8, loc="best")
    _save(fig, path)


def plot_budget_curves(panels: list[dict], path: str | Path, title: str) -> None:
    """One chart per claim: the measured effect (95% CI) of each arm against its training
    budget, one panel per axis (epochs, training images; log x), with 0 and the claimed value.
    `panels`: [{"axis": label, "lines": [{"label", "x", "delta", "low", "high", "colour"?}], "claimed": [values],
    "unit": "points"}]."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for i, line in enumerate(panel["lines"]):
            x = np.asarray(line["x"], float) * (1 + 0.03 * (i - (len(panel["lines"]) - 1) / 2))  # dodge
            delta = np.asarray(line["delta"])
            err = [delta - np.asarray(line["low"]), np.asarray(line["high"]) - delta]
            ax.errorbar(x, delta, yerr=err, marker="o", capsize=3, label=line["label"], color=line.get("colour"))
        ax.axhline(0, color="black", linewidth=0.8)
        for value in panel.get("claimed", []):
            ax.axhline(value, color="tab:purple", linestyle="--", linewidth=1, label=f"claimed {value:+g}")
        ax.set_xscale("log")
        xs = sorted({v for line in panel["lines"] for v in line["x"]})
        ax.set_xticks(xs, [f"{v:g}" for v in xs])
        ax.minorticks_off()
        ax.set_xlabel(panel["axis"])
        ax.set_ylabel(f"effect vs baseline ({panel.get('unit', 'points')})")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def save_figure(fig, path: str | Path) -> None:
    """A figure another library drew (Optuna's plots), saved as these are: PNG, atomically, then closed."""
    _save(fig, path)


def plot_interval_lines(panels: list[dict], path: str | Path, title: str) -> None:
    """Lines with 95% intervals (error bars) on a log x axis, one panel each.
    `panels`: [{"title", "xlabel", "ylabel", "lines": [{"label", "x", "y", "low", "high"}]}]."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for i, line in enumerate(panel["lines"]):
            x = np.asarray(line["x"], float) * (1 + 0.04 * (i - (len(panel["lines"]) - 1) / 2))  # dodge
            y = np.asarray(line["y"], float)
            err = [y - np.asarray(line["low"], float), np.asarray(line["high"], float) - y]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=line["label"])
        ax.set_xscale("log")
        xs = sorted({v for line in panel["lines"] for v in line["x"]})
        ax.set_xticks(xs, [f"{v:g}" for v in xs])
        ax.minorticks_off()
        ax.set(title=panel["title"], xlabel=panel["xlabel"], ylabel=panel["ylabel"])
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def plot_accuracy_over_time(lines: list[dict], path: str | Path, title: str, targets: list[float]) -> None:
    """Test accuracy against training minutes, one line per run coloured by its group (a recipe),
    with dashed target accuracies. `lines`: [{"group", "minutes": [...], "accuracy": [...]}]."""
    fig, ax = plt.subplots(figsize=(8, 5))
    groups = list(dict.fromkeys(line["group"] for line in lines))
    colours = dict(zip(groups, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3))
    for group in groups:
        for i, line in enumerate(line for line in lines if line["group"] == group):
            ax.plot(line["minutes"], line["accuracy"], color=colours[group], alpha=0.8, linewidth=1.2,
                    label=group if i == 0 else None)
    for target in targets:
        ax.axhline(target, color="gray", linestyle="--", linewidth=0.8)
        ax.annotate(f"{target:.1%}", (0, target), xytext=(2, 2), textcoords="offset points", fontsize=8, color="gray")
    floor = min(min(line["accuracy"]) for line in lines)
    ax.set_ylim(max(floor, min(targets) - 0.02), max(targets) + 0.005)
    ax.set(xlabel="training time (minutes)", ylabel="test accuracy")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)
