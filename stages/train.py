"""train: the model from params on the prepared store (the cleaned view of its train split);
checkpoints every epoch, resumes, and registers the model in MLflow only when its weights
are new."""
from __future__ import annotations

import csv
import io

from stages.common import params_from_argv, run_stage, write_dvc_metrics


def write_train_log(path, history) -> None:
    from skillpack.io import write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0].as_dict()))
    writer.writeheader()
    for record in history:
        writer.writerow(record.as_dict())
    write_text(path, buf.getvalue())


def main() -> int:
    import numpy as np
    import torch

    from skillpack import paths, tracking
    from skillpack.config import flatten
    from skillpack.data import PreparedStore
    from skillpack.data.cleaning import cleaned_train_split
    from skillpack.io import counted, write_json
    from skillpack.machine import cpu_model
    from skillpack.train import distributed
    from skillpack.train.checkpoint import load_teacher, save_classifier, weights_sha256
    from skillpack.train.models import count_macs, count_params
    from skillpack.train.runs import RunData, train_model

    params = params_from_argv()
    cfg = params.train
    store = PreparedStore(paths.PREPARED)
    (train_x, train_y), val = store.arrays("train"), store.arrays("val")
    data_hash = store.data_hash()
    train_x, train_y, cleaned = cleaned_train_split(train_x, train_y, paths.CLEANED, data_hash)
    data = RunData((train_x, train_y), val, len(store.classes))
    teacher = load_teacher(cfg.loss.distill.teacher) if cfg.loss.distill.teacher else None
    fingerprint = f"{data_hash}:{cleaned.get('view_hash', 'uncleaned')}"  # a new cleaned view restarts training
    if not distributed.is_main():  # torchrun: the other ranks train their share; rank 0 logs, saves, registers
        train_model(cfg, data, params.seed, checkpoint=paths.CHECKPOINT, fingerprint=fingerprint, teacher=teacher)
        return 0

    with tracking.stage_run("train", params.registry.experiment, params={**flatten(cfg, "train"), "seed": params.seed},
                            data_hash=data_hash, extra_tags={"model": cfg.model}):
        def log_epoch(record):
            tracking.log_metrics({k: v for k, v in record.as_dict().items() if k != "epoch"}, step=record.epoch)

        def on_epoch(record, history, _model):
            log_epoch(record)
            write_train_log(paths.TRAIN_LOG, history)

        trained = train_model(cfg, data, params.seed, on_epoch=on_epoch, checkpoint=paths.CHECKPOINT,
                              fingerprint=fingerprint, teacher=teacher, progress=True)
        for record in trained.history[:trained.resumed_from_epoch]:  # epochs restored from the checkpoint
            log_epoch(record)
        write_train_log(paths.TRAIN_LOG, trained.history)
        model = trained.model.to("cpu", memory_format=torch.contiguous_format).eval()
        macs, n_params = count_macs(model, (data.image_shape[2], *data.image_shape[:2])), count_params(model)
        save_classifier(paths.MODEL_FILE, model, model_name=cfg.model, classes=store.classes,
                        image_shape=data.image_shape, head=cfg.head,
                        extra={"data_hash": data_hash, "cleaned_view": fingerprint, "seed": params.seed})
        images_per_s = trained.images_per_second(len(train_y))
        summary = {"model": cfg.model, "params": n_params, "macs": macs, "epochs": cfg.epochs,
                   "epochs_trained": trained.epochs_trained, "resumed_from_epoch": trained.resumed_from_epoch,
                   "train_seconds": round(trained.train_seconds, 2), "images_per_second": round(images_per_s, 1),
                   "resident": trained.resident, "compile_seconds": round(trained.compile_seconds, 2),
                   "final_val_acc": trained.history[-1].val_acc, "precision": trained.precision,
                   "cpu": cpu_model()[0], "weights_sha256": weights_sha256(model)}
        write_json(paths.TRAIN_METRICS, summary)
        write_dvc_metrics(paths.TRAIN_DVC_METRICS, {"val_accuracy": round(summary["final_val_acc"], 4),
                                                    "train_seconds": summary["train_seconds"]})
        tracking.log_metrics({"params": n_params, "macs": macs, "train_samples": len(train_y),
                              "resumed_from_epoch": trained.resumed_from_epoch,
                              "epochs_trained": trained.epochs_trained, "train_seconds": trained.train_seconds,
                              "compile_seconds": trained.compile_seconds, "bf16": float(trained.precision == "bf16"),
                              **({"images_per_second": images_per_s} if trained.epochs_trained else {}),
                              **{f"clean_{k}": cleaned[k] for k in ("drop", "relabel") if k in cleaned}})
        tracking.set_tags({"precision": trained.precision, "cpu": summary["cpu"]})  # train.amp auto decides by CPU
        tracking.log_artifact(paths.TRAIN_LOG)
        example = torch.from_numpy(np.array(val[0][:2] if len(val[0]) else train_x[:2])).permute(0, 3, 1, 2).float().numpy()
        description = (f"{cfg.model} ({n_params:,} parameters, {macs / 1e6:.1f} M MACs) trained {counted(cfg.epochs, 'epoch')} "
                       f"(seed {params.seed}) on {params.data.source} data {data_hash}; validation accuracy "
                       f"{trained.history[-1].val_acc:.4f}. The evaluate stage adds its test metrics as tags; "
                       f"the export stage registers the ONNX version with the full model card.")
        tags = {**tracking.lineage_tags(data_hash), "model": cfg.model, "seed": params.seed,
                "val_accuracy": f"{trained.history[-1].val_acc:.4f}", "params": n_params, "macs": macs}
        version, new = tracking.log_and_register_model(model, example, params.registry.model, params.registry.aliases.candidate,
                                                       weights_sha256(model), tags, description)
        registered = tracking.registration_line(params.registry.model, version, new, params.registry.aliases.candidate)
        print(f"[train] {cfg.model}: val acc {trained.history[-1].val_acc:.4f}, {counted(trained.epochs_trained, 'epoch')} in "
              f"{trained.train_seconds:.0f}s ({images_per_s:.0f} img/s); {registered}")
    return 0


if __name__ == "__main__":
    run_stage(main)
