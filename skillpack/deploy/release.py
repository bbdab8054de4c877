"""Which exported model the service gets: the trained model and the compress stage's accepted
variants, each as ONNX fp32 and int8, scored on the test set and timed; a rule of params
(export.serve_rule) picks one within the accuracy budget (compress.max_drop_points), and it
is written to models/export/model.onnx with the metadata the service reads."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from skillpack.config import SERVE_RULES


@dataclass
class Candidate:
    variant: str             # baseline (the trained model) | a compress variant
    runtime: str             # onnx fp32 | onnx int8
    file: str
    test_accuracy: float
    drop_points: float       # 100 x (the trained model's eager test accuracy - this one's)
    p50_ms: float            # batch 1, median wall time per call
    file_bytes: int

    def within(self, max_drop_points: float) -> bool:
        return self.drop_points <= max_drop_points

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Rule:
    minimises: Callable[[Candidate], tuple]
    budgeted: bool           # only candidates within compress.max_drop_points compete
    sentence: str            # what it picks, for the reports ({budget}: the budget in points)


RULES = {  # export.serve_rule (skillpack.config.SERVE_RULES) -> its rule
    "fastest_within_budget": Rule(lambda c: (c.p50_ms, c.drop_points), True,
                                  "the fastest at batch 1 (p50) within {budget} points of the trained model's "
                                  "test accuracy"),
    "smallest_within_budget": Rule(lambda c: (c.file_bytes, c.drop_points), True,
                                   "the smallest file within {budget} points of the trained model's test accuracy"),
    "most_accurate": Rule(lambda c: (c.drop_points, c.p50_ms), False, "the most accurate on the test set"),
}
if set(RULES) != set(SERVE_RULES):
    raise ImportError(f"skillpack.deploy.release.RULES {sorted(RULES)} and config.SERVE_RULES {sorted(SERVE_RULES)} differ")


def choose(candidates: list[Candidate], rule: str, max_drop_points: float) -> Candidate:
    """The candidate `rule` picks; the budget filters first where the rule has one. The trained
    model in fp32 is always within any budget >= 0 (its drop is 0), so a choice always exists."""
    if rule not in RULES:
        raise ValueError(f"export.serve_rule: unknown {rule!r}; choose {', '.join(RULES)}")
    picked = RULES[rule]
    eligible = [c for c in candidates if c.within(max_drop_points)] if picked.budgeted else list(candidates)
    if not eligible:
        raise ValueError(f"no candidate within {max_drop_points} points of the trained model")
    return min(eligible, key=picked.minimises)


def rule_sentence(rule: str, max_drop_points: float) -> str:
    return RULES[rule].sentence.format(budget=max_drop_points)


def write_served_model(chosen: Candidate, metadata: dict, target: str | Path) -> Path:
    """`chosen`'s ONNX file at `target` (atomically), with `metadata` in its metadata_props (the
    class names and shape the service reads; quantization does not carry them over)."""
    import onnx

    from skillpack.io import atomic_path

    proto = onnx.load(chosen.file)
    present = {p.key for p in proto.metadata_props}
    for key, value in metadata.items():
        if key not in present:
            proto.metadata_props.add(key=key, value=json.dumps(value))
    target = Path(target)
    with atomic_path(target) as tmp:
        onnx.save(proto, str(tmp))
    return target


# -- every variant, every runtime: measured --------------------------------------------------

SERVABLE = ("onnx fp32", "onnx int8")   # what `skillpack serve` runs (ONNX Runtime)


@dataclass
class Measured:
    """The export stage's figures: one row per (variant, runtime), the parity checks, the
    candidates the serve rule chose among, the runtimes that did not run, the files built."""
    rows: list[dict]
    parity: list[dict]
    candidates: list[Candidate]
    skipped: dict[str, str]
    files: dict[str, str]


def measure_variant(name: str, model, info: dict, base_acc: float | None, test: tuple, built: dict, cfg,
                    sync) -> tuple[list[dict], list[dict], list[Candidate]]:
    """Eager and every built runtime of one variant: accuracy on the whole test set, parity with
    its own eager logits, latency per batch size. `info`: its size figures (params, macs);
    `base_acc`: the trained model's eager test accuracy (None: this is the trained model)."""
    from skillpack.deploy.export import eager_runner, latency_by_batch, logits_of, parity
    from skillpack.metrics import accuracy

    test_x, test_y = test
    eager = eager_runner(model)
    reference = logits_of(eager, test_x)
    size = {"model": info["model"], "params": info["params"], "macs": info["macs"]}
    eager_acc = accuracy(reference, test_y)
    base_acc = eager_acc if base_acc is None else base_acc
    rows = [{"variant": name, "runtime": "eager torch", **size, "test_accuracy": eager_acc,
             "delta_points": 100 * (eager_acc - base_acc),
             "latency": latency_by_batch(eager, test_x, cfg.latency_batches, cfg.latency_seconds)}]
    checks, candidates = [], []
    for runtime, runtime_built in built.items():
        logits = logits_of(runtime_built.run, test_x)
        acc = accuracy(logits, test_y)
        checks.append({"variant": name, "runtime": runtime, **parity(reference, logits).as_dict(), "test_accuracy": acc,
                       "accuracy_drop_points": 100 * (eager_acc - acc)})
        timed_sync = sync if "cuda" in runtime or "tensorrt" in runtime else (lambda: None)
        latency = latency_by_batch(runtime_built.run, test_x, cfg.latency_batches, cfg.latency_seconds, timed_sync)
        rows.append({"variant": name, "runtime": runtime, **size, "file_bytes": runtime_built.file.stat().st_size,
                     "test_accuracy": acc, "delta_points": 100 * (acc - base_acc),
                     "top1_agreement": checks[-1]["top1_agreement"], "latency": latency})
        if runtime in SERVABLE:
            candidates.append(Candidate(name, runtime, str(runtime_built.file), acc, 100 * (base_acc - acc),
                                        latency[str(min(cfg.latency_batches))]["p50_ms"],
                                        runtime_built.file.stat().st_size))
    return rows, checks, candidates


def measure_all(models: dict[str, tuple], image_shape, folder: Path, calibration, test: tuple, cfg, int8_format: str,
                metadata: dict) -> Measured:
    """Build every runtime of each model of `models` (name -> (model, size figures)) under
    folder/<name>/ and measure it (measure_variant); the trained model is `baseline`."""
    import torch

    from skillpack.deploy.export import build_runtimes

    if next(iter(models)) != "baseline":
        raise ValueError("measure_all: the trained model (baseline) comes first, every variant is scored against it")
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    base_acc = None   # the baseline's own eager accuracy, once measured
    out = Measured([], [], [], {}, {})
    for name, (model, info) in models.items():
        built, skipped = build_runtimes(model, image_shape, folder / name, calibration, opset=cfg.opset,
                                        metadata={**metadata, "model_name": info["model"], "variant": name},
                                        aoti_cpu=cfg.aoti_cpu, quantize_method=cfg.quantize.calibrate_method,
                                        per_channel=cfg.quantize.per_channel, int8_format=int8_format,
                                        tensorrt_workspace_mb=cfg.tensorrt_workspace_mb)
        rows, checks, candidates = measure_variant(name, model, info, base_acc, test, built, cfg, sync)
        base_acc = rows[0]["test_accuracy"] if base_acc is None else base_acc
        out.rows += rows
        out.parity += checks
        out.candidates += candidates
        out.skipped.update(skipped)
        out.files.update({str(b.file): f"{name}, {runtime}" for runtime, b in built.items()})
    return out
