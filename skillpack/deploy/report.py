"""The accuracy-latency table of the compress and export stages and the model card, rendered
from their JSON: one row per (variant, runtime), each variant against the trained model, and
which model the service gets and by which rule."""
from __future__ import annotations

from skillpack.io import counted


def _fmt_latency(row: dict, batch: int) -> str:
    cell = row.get("latency", {}).get(str(batch))
    return f"{cell['p50_ms']:.3g} / {cell['p95_ms']:.3g}" if cell else "-"


def _fmt_delta(row: dict) -> str:
    return "-" if row.get("delta_points") is None else f"{row['delta_points']:+.2f}"


def _fmt_size(n: int | None, unit: str = "") -> str:
    return "-" if n is None else f"{n:,}{unit}"


def _served_lines(table: dict) -> list[str]:
    served, int8 = table["served"], table["int8_format"]
    rejected = [f"{name} ({v['delta_points']:+.2f} points)" for name, v in table["compress"]["variants"].items()
                if not v["accepted"]]
    return [f"**Served** (`models/export/model.onnx`): {served['variant']}, {served['runtime']}, test accuracy "
            f"{served['test_accuracy']:.4f} ({-served['drop_points']:+.2f} points), {served['p50_ms']:.3f} ms at batch 1 "
            f"- rule `{served['rule']}`: {served['why']}.",
            f"Rejected by the budget: {', '.join(rejected) or 'none'}. int8 format: {int8['format']} "
            f"({int8['decided_by']})."]


def compression_markdown(table: dict) -> str:
    """reports/compression.md from reports/compression.json."""
    batches = table["latency_batches"]
    lines = [
        "# Compression and export: accuracy against latency", "",
        f"Rendered by the export stage (`dvc repro export`) from `reports/compress.json` and its own measurements. "
        f"Data: {table['n_test']:,} test images, data version {table['data_hash']}. Each compressed variant was "
        f"trained once (seed {table['compress']['seed']}) and is compared with the trained model on the same test "
        f"set; a variant losing more than {table['compress']['max_drop_points']} points is rejected and not exported. "
        f"One training seed and one test set: for intervals over seeds see the ablation's light.* claims "
        f"(reports/claims.md).", "",
        *_served_lines(table), "",
        f"Latency: wall time per call of the raw-pixel model (uint8 in, logits out), median / 95th percentile "
        f"in ms, on {table['machine_line']}, OpenMP wait policy {table.get('omp_wait_policy', 'default')}.", "",
        "| variant | runtime | params | MMACs | file | test acc | vs trained model (points) | agreement with eager | "
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
        f"{counted(card['epochs'], 'epoch')}, seed {card['seed']}.", "",
        "## Served model", f"`models/export/model.onnx` is {card['served']['variant']} as {card['served']['runtime']} "
        f"(rule `{card['served']['rule']}`: {card['served']['why']}).", "",
        "## Metrics (test set)", "| metric | value |", "|---|---|", metrics, "",
        "## Files", *[f"- `{path}`: {what}" for path, what in card["files"].items()], "",
        "## Limits",
        f"- Trained and tested on {card['data_source']} only: images of other domains, sizes or colour modes are "
        f"out of distribution; resize to {h} x {w} with {c} channel(s) first and expect lower accuracy.",
        "- The accuracy is measured on one test set and one training seed; the seed spread of pruning and "
        "distillation is measured by the ablation (reports/claims.md, light.*).",
        "- int8: activations were calibrated on training images; inputs unlike them can lose more accuracy than "
        "the table's drop.",
        "- Not evaluated for fairness, robustness to adversarial inputs or calibration beyond the reliability "
        "diagram of reports/explain/.", ""])
