"""export: the trained model and the compress stage's accepted variants in deployable forms,
each checked against its eager PyTorch logits on the whole test set and timed: ONNX fp32
(uint8 pixels in, preprocessing inside, dynamic batch), ONNX int8 (ONNX Runtime static QDQ,
calibrated on training images, in the int8 format this CPU runs exactly: export.quantize.format),
an AOTInductor package (CPU when export.aoti_cpu, and CUDA fp16 where a GPU is present), TensorRT
FP16 / INT8 engines where TensorRT and a GPU are present (else a recorded skip). The rule
export.serve_rule picks the ONNX model the service gets (models/export/model.onnx); the stage
renders reports/compression.{json,md} and the model card, and registers that model in MLflow."""
from __future__ import annotations

from stages.common import params_from_argv, publish, run_stage


def deployable_models(compressed: dict) -> dict[str, tuple]:
    """The trained model and the compress stage's accepted variants: name -> (model, size figures)."""
    from skillpack import paths
    from skillpack.train.checkpoint import load_classifier

    models = {"baseline": (load_classifier(paths.MODEL_FILE)[0], compressed["baseline"])}
    for name, info in compressed["variants"].items():
        if info["accepted"]:
            models[name] = (load_classifier(paths.COMPRESSED / f"{name}.pt")[0], info)
    return models


def pipeline_figures(rows: list[dict], served: dict) -> dict[str, float]:
    """What a batch run exports for Prometheus: accuracies and p50 / p95 latencies per
    (variant, runtime), and the served model's test accuracy."""
    figures = {"test_accuracy": served["test_accuracy"]}
    for r in rows:
        tag = f"{r['variant']}_{r['runtime']}".replace(" ", "_")
        figures[f"test_accuracy_{tag}"] = r["test_accuracy"]
        for batch, cell in r["latency"].items():
            for q in ("p50_ms", "p95_ms"):
                figures[f"latency_{q}_{tag}_b{batch}"] = cell[q]
    return figures


def main() -> int:
    import json
    import time

    import numpy as np
    import torch

    from skillpack import paths
    from skillpack.data import PreparedStore
    from skillpack.deploy.compress import calibration_images, choose_int8_format
    from skillpack.deploy.release import choose, measure_all, rule_sentence, write_served_model
    from skillpack.machine import describe, one_line
    from skillpack.runtime import DEFAULT_OMP_WAIT_POLICY

    params = params_from_argv()
    cfg = params.export
    torch.set_num_threads(params.train.threads)
    t0 = time.perf_counter()
    store = PreparedStore(paths.PREPARED)
    test_x, test_y = store.arrays("test")
    test = (np.array(test_x), test_y)  # in memory and writable: every runtime is timed on the same array
    compressed = json.loads(paths.COMPRESS_METRICS.read_text())
    int8 = choose_int8_format(cfg.quantize.format)
    metadata = {"classes": store.classes, "data_hash": store.data_hash(), "image_shape": list(store.image_shape)}
    calibration = calibration_images(store.arrays("train")[0], cfg.quantize.calibration_images, params.seed)
    measured = measure_all(deployable_models(compressed), store.image_shape, paths.EXPORTED, calibration, test, cfg,
                           int8["format"], metadata)
    chosen = choose(measured.candidates, cfg.serve_rule, params.compress.max_drop_points)
    write_served_model(chosen, metadata, paths.EXPORTED / "model.onnx")
    table = {"rows": measured.rows, "parity": measured.parity, "skipped": measured.skipped,
             "latency_batches": cfg.latency_batches, "n_test": int(len(test_y)), "data_hash": store.data_hash(),
             "compress": compressed, "candidates": [c.as_dict() for c in measured.candidates],
             "served": {**chosen.as_dict(), "rule": cfg.serve_rule,
                        "why": rule_sentence(cfg.serve_rule, params.compress.max_drop_points)},
             "int8_format": int8, "machine": (machine := describe()), "machine_line": one_line(machine),
             "omp_wait_policy": DEFAULT_OMP_WAIT_POLICY, "seconds": round(time.perf_counter() - t0, 1)}
    facts = {"data_source": params.data.source, "epochs": params.train.epochs, "seed": params.seed, "opset": cfg.opset}
    release(params.registry, facts, store, table, measured.files)
    return 0


def served_figures(table: dict) -> dict:
    """The export's flat figures (reports/compression.json's top level, MLflow metrics and tags):
    the served model's, and each (variant, runtime)'s parity with its eager logits."""
    served, int8 = table["served"], table["int8_format"]
    return {"served_test_accuracy": served["test_accuracy"], "served_drop_points": served["drop_points"],
            "served_p50_ms_b1": served["p50_ms"], "served_file_bytes": served["file_bytes"],
            "served_variant": served["variant"], "served_runtime": served["runtime"], "serve_rule": served["rule"],
            "int8_format": int8["format"], "int8_decided_by": int8["decided_by"], "n_test": table["n_test"],
            "seconds": table["seconds"], "data_hash": table["data_hash"], "machine_line": table["machine_line"],
            "omp_wait_policy": table["omp_wait_policy"],
            **{f"{c['variant']}.{c['runtime']}.{k}".replace(" ", "_"): c[k] for c in table["parity"]
               for k in ("max_abs_diff", "top1_agreement", "test_accuracy")}}


def release(registry, facts: dict, store, table: dict, files: dict) -> None:
    """reports/compression.{json,md}, the model card, the textfile metrics, the MLflow run and
    the registered ONNX model, from `table` (`facts`: the params the model card and the run name)."""
    from skillpack import model_registry, paths, tracking
    from skillpack.deploy.monitoring import textfile_metrics
    from skillpack.deploy.report import compression_markdown, model_card
    from skillpack.io import file_sha256, write_text

    served, int8 = table["served"], table["int8_format"]
    card = model_card({
        "registered_model": registry.model, "model": table["compress"]["baseline"]["model"],
        "classes": store.classes, "image_shape": list(store.image_shape), "data_source": facts["data_source"],
        "data_hash": store.data_hash(), "n_train": table["compress"]["n_train"], "n_test": table["n_test"],
        "git_commit": tracking.git_commit(), "epochs": facts["epochs"], "seed": facts["seed"], "served": served,
        "metrics": {f"test_accuracy ({r['variant']}, {r['runtime']})": r["test_accuracy"] for r in table["rows"]},
        "files": {path: f"{what} ({int8['format']}: {int8['decided_by']})" if what.endswith("onnx int8") else what
                  for path, what in files.items()}})
    write_text(paths.MODEL_CARD, card)
    write_text(paths.PIPELINE_PROM, textfile_metrics(pipeline_figures(table["rows"], served),
                                                     {"model": table["compress"]["baseline"]["model"],
                                                      "data": store.data_hash()}))
    served_file = paths.EXPORTED / "model.onnx"
    figures = served_figures(table)
    with tracking.stage_run("export", registry.experiment, params={"export.opset": facts["opset"]},
                            data_hash=store.data_hash()):
        publish(figures, paths.COMPRESSION_TABLE, details=table)
        write_text(paths.COMPRESSION_REPORT, compression_markdown(table))
        for path in (paths.COMPRESSION_TABLE, paths.COMPRESSION_REPORT, paths.MODEL_CARD):
            tracking.log_artifact(path, "export")
        version, new = model_registry.register_onnx_model(
            served_file, registry.model, registry.aliases.candidate_onnx, file_sha256(served_file),
            table_example(store), description=card,
            tags={**{k: (f"{v:.6g}" if not isinstance(v, str) else v) for k, v in figures.items()},
                  **model_registry.lineage_tags(store.data_hash())})
    print(f"[export] served: {served['variant']} {served['runtime']} (test accuracy {served['test_accuracy']:.4f}, "
          f"{served['p50_ms']:.3f} ms at batch 1) - {served['why']}")
    for runtime, reason in table["skipped"].items():
        print(f"[export] {runtime}: {reason}")
    registered = model_registry.registration_line(registry.model, version, new, registry.aliases.candidate_onnx)
    print(f"[export] ONNX {registered}"
          f"; int8 in {int8['format']} ({int8['decided_by']}); "
          f"{paths.COMPRESSION_REPORT}, {paths.MODEL_CARD} in {table['seconds']:.0f}s")


def table_example(store):
    """Two test images: the input example the registered model carries."""
    return store.arrays("test")[0][:2]


if __name__ == "__main__":
    run_stage(main, omp_wait_policy=None)   # timed under OpenMP's default, as a torch user's process runs
