"""The accuracy-latency table of the compress and export stages, rendered from their JSON:
paired comparisons of each compressed variant with its control, one row per (variant,
runtime), and the model card."""
from __future__ import annotations

from skillpack.ablation import paired_comparison
from skillpack.verdicts import holm, minimum_detectable_effect


def compare_to_controls(accuracy: dict[str, dict[str, float]], controls: dict[str, str]) -> dict[str, dict]:
    """Each variant against its control, paired by seed (accuracy[variant][seed]): the mean
    difference in points with its 95% t-interval, p, and Holm's p over these comparisons."""
    out = {}
    for variant, control in controls.items():
        seeds = sorted(accuracy[variant], key=int)
        arm = [accuracy[variant][s] for s in seeds]
        base = [accuracy[control][s] for s in seeds]
        stats = paired_comparison(arm, base)
        differences = [100 * (a - b) for a, b in zip(arm, base)]
        out[variant] = {"control": control, "seeds": [int(s) for s in seeds], "differences_points": differences,
                        "delta_points": 100 * stats["delta"], "ci_low_points": 100 * stats["ci_low"],
                        "ci_high_points": 100 * stats["ci_high"], "p": stats["p_value"],
                        "mde_points": minimum_detectable_effect(differences)}
    for comparison, adjusted in zip(out.values(), holm([c["p"] for c in out.values()])):
        comparison["p_adjusted"] = adjusted
    return out


def _mean(values: dict[str, float]) -> float:
    return sum(values.values()) / len(values)


def _fmt_latency(row: dict, batch: int) -> str:
    cell = row.get("latency", {}).get(str(batch))
    return f"{cell['p50_ms']:.3g} / {cell['p95_ms']:.3g}" if cell else "-"


def _fmt_delta(row: dict) -> str:
    c = row.get("vs_control")
    if not c:
        return "-"
    return (f"{c['delta_points']:+.2f} [{c['ci_low_points']:+.2f}, {c['ci_high_points']:+.2f}] "
            f"vs {c['control']} ({len(c['seeds'])} seeds, Holm p {c['p_adjusted']:.3g})")


def _fmt_size(n: int | None, unit: str = "") -> str:
    return "-" if n is None else f"{n:,}{unit}"


def compression_markdown(table: dict) -> str:
    """reports/compression.md from reports/compression.json."""
    batches = table["latency_batches"]
    lines = [
        "# Compression and export: accuracy against latency", "",
        f"Rendered by the export stage (`dvc repro export`) from `reports/compress.json` and its own measurements. "
        f"Data: {table['n_test']:,} test images, data version {table['data_hash']}. Fine-tuned and distilled "
        f"variants: test accuracy is the mean over seeds {table['seeds']}; each is compared with its control, "
        f"paired by seed (95% t-interval; Holm over the comparisons of this table). The intervals cover seed "
        f"noise only (one trained baseline, one test set).", "",
        f"Latency: wall time per call of the raw-pixel model (uint8 in, logits out), median / 95th percentile "
        f"in ms, on {table['machine_line']}, OpenMP wait policy {table.get('omp_wait_policy', 'default')}.", "",
        "| variant | runtime | params | MMACs | file | test acc | vs control (points) | agreement with eager | "
        + " | ".join(f"batch {b} p50 / p95 ms" for b in batches) + " |",
        "|---|---|---|---|---|---|---|---|" + "---|" * len(batches)]
    for row in table["rows"]:
        macs = "-" if row.get("macs") is None else f"{row['macs'] / 1e6:.2f}"
        size = "-" if row.get("file_bytes") is None else f"{row['file_bytes'] / 1024:.0f} KiB"
        acc = "-" if row.get("test_accuracy") is None else f"{row['test_accuracy']:.4f}"
        agree = "-" if row.get("top1_agreement") is None else f"{row['top1_agreement']:.4f}"
        lines.append(f"| {row['variant']} | {row['runtime']} | {_fmt_size(row.get('params'))} | {macs} | {size} | "
                     f"{acc} | {_fmt_delta(row)} | {agree} | "
                     + " | ".join(_fmt_latency(row, b) for b in batches) + " |")
    lines += ["", "## Runtimes that did not run here", ""]
    lines += [f"- **{name}**: {reason}" for name, reason in table["skipped"].items()] or ["(none)"]
    lines += ["", "## Parity with eager PyTorch (whole test set)", "",
              "| variant | runtime | max abs logit difference | top-1 agreement | accuracy drop (points) |",
              "|---|---|---|---|---|"]
    for p in table["parity"]:
        lines.append(f"| {p['variant']} | {p['runtime']} | {p['max_abs_diff']:.2e} | {p['top1_agreement']:.4f} | "
                     f"{p['accuracy_drop_points']:+.2f} |")
    return "\n".join(lines) + "\n"


def model_card(card: dict) -> str:
    """reports/model_card.md: what the exported model is, takes, does and does not do."""
    classes = ", ".join(f"{i}: {name}" for i, name in enumerate(card["classes"]))
    h, w, c = card["image_shape"]
    metrics = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                        for k, v in card["metrics"].items())
    return "\n".join([
        f"# Model card: {card['registered_model']} ({card['model']})", "",
        "## Intended input",
        f"Raw pixels: a uint8 array of shape N x {h} x {w} x {c} (batch, height, width, channels), values 0-255, "
        f"as stored by the prepare stage. Normalisation happens inside the model (ONNX input `pixels`, output "
        f"`logits`: N x {len(card['classes'])} float32; softmax gives probabilities).", "",
        "## Classes", classes, "",
        "## Data", f"Source `{card['data_source']}`, data version {card['data_hash']} (the prepared store's manifest "
        f"hash); trained on {card['n_train']:,} images, tested on {card['n_test']:,}.", "",
        "## Training", f"`params.yaml` train section at git commit {card['git_commit']}: model {card['model']}, "
        f"{card['epochs']} epochs, seed {card['seed']}.", "",
        "## Metrics (test set)", "| metric | value |", "|---|---|", metrics, "",
        "## Files", *[f"- `{path}`: {what}" for path, what in card["files"].items()], "",
        "## Limits",
        f"- Trained and tested on {card['data_source']} only: images of other domains, sizes or colour modes are "
        f"out of distribution; resize to {h} x {w} with {c} channel(s) first and expect lower accuracy.",
        "- The accuracy is measured on one test set and one training seed; see reports/compression.md for the "
        "seed spread of the compressed variants.",
        "- int8: activations were calibrated on training images; inputs unlike them can lose more accuracy than "
        "the table's drop.",
        "- Not evaluated for fairness, robustness to adversarial inputs or calibration beyond the reliability "
        "diagram of reports/explain/.", ""])
