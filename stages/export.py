"""export: the trained model in deployable forms, each checked against eager PyTorch on the
whole test set and timed: ONNX fp32 (uint8 pixels in, preprocessing inside, dynamic batch),
ONNX int8 (ONNX Runtime static QDQ, calibrated on training images), an AOTInductor package
(CPU, and CUDA fp16 where a GPU is present), TensorRT FP16 / INT8 engines where TensorRT and a
GPU are present (else a recorded skip). Renders reports/compression.{json,md} with the
compress stage's variants, the model card, and registers the ONNX model in MLflow."""
from __future__ import annotations

import stages.default_omp  # noqa: F401  (first: OpenMP's default wait policy while timing)

from stages.common import params_from_argv, run_stage


def torch_variants(baseline, meta):
    """The eager models to time: the trained one and the compress stage's."""
    from skillpack import paths
    from skillpack.checkpoint import load_classifier

    models = {"baseline": (baseline, paths.MODEL_FILE)}
    for name in ("pruned", "pruned_distilled", "student_distilled"):
        path = paths.COMPRESSED / f"{name}.pt"
        models[name] = (load_classifier(path)[0], path)
    return models


def pipeline_figures(base_acc: float, checks: list[dict], rows: list[dict]) -> dict[str, float]:
    """What a batch run exports for Prometheus: accuracies and p50 / p95 latencies per runtime."""
    figures = {"test_accuracy": base_acc}
    figures.update({f"test_accuracy_{c['runtime']}": c["test_accuracy"] for c in checks})
    for r in rows:
        for batch, cell in r["latency"].items():
            for q in ("p50_ms", "p95_ms"):
                figures[f"latency_{q}_{r['variant']}_{r['runtime']}_b{batch}"] = cell[q]
    return figures


def main() -> int:
    import json
    import time

    import numpy as np
    import torch

    from skillpack import paths, tracking
    from skillpack.checkpoint import load_classifier, weights_sha256
    from skillpack.compression_report import compression_markdown, model_card
    from skillpack.data import PreparedStore
    from skillpack.compress import calibration_images
    from skillpack.export import build_runtimes, eager_runner, latency_by_batch, logits_of, parity
    from skillpack.io import file_sha256, write_json, write_text
    from skillpack.machine import describe, one_line
    from skillpack.metrics import accuracy
    from skillpack.monitoring import textfile_metrics

    params = params_from_argv()
    cfg = params.export
    torch.set_num_threads(params.train.threads)
    t0 = time.perf_counter()
    store = PreparedStore(paths.PREPARED)
    test_x, test_y = store.arrays("test")
    test_x = np.array(test_x)  # in memory and writable: every runtime is timed on the same array
    train_x, _ = store.arrays("train")
    compressed = json.loads(paths.COMPRESS_METRICS.read_text())
    baseline, meta = load_classifier(paths.MODEL_FILE)
    reference = logits_of(eager_runner(baseline), test_x)
    metadata = {"classes": store.classes, "model_name": meta["model_name"], "data_hash": store.data_hash(),
                "weights_sha256": weights_sha256(baseline)}
    quantize = params.compress.quantize
    built, skipped = build_runtimes(baseline, store.image_shape, paths.EXPORTED,
                                    calibration_images(train_x, quantize.calibration_images, params.seed),
                                    opset=cfg.opset, metadata=metadata, aoti_cpu=cfg.aoti_cpu,
                                    quantize_method=quantize.calibrate_method, per_channel=quantize.per_channel,
                                    tensorrt_workspace_mb=cfg.tensorrt_workspace_mb)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    rows, checks = [], []
    for name, (model, path) in torch_variants(baseline, meta).items():
        info = compressed["variants"][name]
        acc = info["test_accuracy"]
        rows.append({"variant": name, "runtime": "eager torch", "model": info["model"], "params": info["params"],
                     "macs": info["macs"], "file_bytes": path.stat().st_size,
                     "test_accuracy": acc.get("trained", sum(acc.values()) / len(acc)),
                     "vs_control": compressed["comparisons"].get(name),
                     "latency": latency_by_batch(eager_runner(model), test_x, cfg.latency_batches,
                                                 cfg.latency_seconds)})
    base_acc = accuracy(reference, test_y)
    for runtime, runtime_built in built.items():
        runner, path = runtime_built.run, runtime_built.file
        logits = logits_of(runner, test_x)
        check = {"variant": "baseline", "runtime": runtime, **parity(reference, logits).as_dict(),
                 "test_accuracy": accuracy(logits, test_y)}
        check["accuracy_drop_points"] = 100 * (base_acc - check["test_accuracy"])
        checks.append(check)
        rows.append({"variant": "baseline", "runtime": runtime, "model": meta["model_name"],
                     "params": rows[0]["params"], "macs": rows[0]["macs"], "file_bytes": path.stat().st_size,
                     "test_accuracy": check["test_accuracy"], "top1_agreement": check["top1_agreement"],
                     "latency": latency_by_batch(runner, test_x, cfg.latency_batches, cfg.latency_seconds,
                                                 sync if "cuda" in runtime or "tensorrt" in runtime else lambda: None)})
    machine = describe()
    table = {"rows": rows, "parity": checks, "skipped": skipped, "latency_batches": cfg.latency_batches,
             "seeds": compressed["seeds"], "n_test": int(len(test_y)), "data_hash": store.data_hash(),
             "machine": machine, "machine_line": one_line(machine), "seconds": round(time.perf_counter() - t0, 1),
             "omp_wait_policy": stages.default_omp.WAIT_POLICY}
    write_json(paths.COMPRESSION_TABLE, table)
    write_text(paths.COMPRESSION_REPORT, compression_markdown(table))
    card = model_card({
        "registered_model": params.mlflow.registered_model, "model": meta["model_name"], "classes": store.classes,
        "image_shape": list(store.image_shape), "data_source": params.data.source, "data_hash": store.data_hash(),
        "n_train": int(len(train_x)), "n_test": int(len(test_y)), "git_commit": tracking.git_commit(),
        "epochs": params.train.epochs, "seed": params.seed,
        "metrics": {"test_accuracy (eager)": base_acc,
                    **{f"test_accuracy ({c['runtime']})": c["test_accuracy"] for c in checks}},
        "files": {str(b.file): runtime for runtime, b in built.items()}})
    write_text(paths.MODEL_CARD, card)
    write_text(paths.PIPELINE_PROM, textfile_metrics(pipeline_figures(base_acc, checks, rows),
                                                     {"model": meta["model_name"], "data": store.data_hash()}))
    onnx_file = built["onnx fp32"].file
    with tracking.stage_run("export", params.mlflow.experiment, params={"export.opset": cfg.opset},
                            data_hash=store.data_hash()):
        flat = {f"{c['runtime']}.{k}".replace(" ", "_"): c[k] for c in checks
                for k in ("max_abs_diff", "top1_agreement", "test_accuracy")}
        tracking.log_metrics(flat)
        for path in (paths.COMPRESSION_TABLE, paths.COMPRESSION_REPORT, paths.MODEL_CARD):
            tracking.log_artifact(path, "export")
        version, new = tracking.register_onnx_model(onnx_file, params.mlflow.registered_model, cfg.registered_alias,
                                                    file_sha256(onnx_file), test_x[:2], description=card,
                                                    tags={**{k: f"{v:.6g}" for k, v in flat.items()},
                                                          **tracking.lineage_tags(store.data_hash())})
    for c in checks:
        print(f"[export] {c['runtime']}: max |logit diff| {c['max_abs_diff']:.2e}, top-1 agreement "
              f"{c['top1_agreement']:.4f}, test accuracy {c['test_accuracy']:.4f} ({c['accuracy_drop_points']:+.2f} points)")
    for runtime, reason in skipped.items():
        print(f"[export] {runtime}: {reason}")
    print(f"[export] ONNX {'registered as' if new else 'unchanged:'} {params.mlflow.registered_model} v{version} "
          f"@{cfg.registered_alias}; {paths.COMPRESSION_REPORT}, {paths.MODEL_CARD} in {table['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    run_stage(main)
