"""train: the model from params on the prepared store; checkpoints every epoch, resumes."""
from __future__ import annotations

import csv
import io

from stages.clean import CLEANED
from stages.common import CHECKPOINT, MODEL_FILE, PREPARED, REPORTS, params_from_argv, run_stage

TRAIN_LOG = REPORTS / "train_log.csv"


def write_train_log(history) -> None:
    from skillpack.io import write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0].as_dict()))
    writer.writeheader()
    for record in history:
        writer.writerow(record.as_dict())
    write_text(TRAIN_LOG, buf.getvalue())


def apply_cleaned_view(train_x, train_y, data_hash: str):
    """The train split as the clean stage left it (kept rows, their labels after the policy)."""
    from skillpack.cleaning import read_cleaned
    from skillpack.io import file_sha256

    if not (CLEANED / "summary.json").is_file():
        print(f"[train] no {CLEANED}: training on the prepared train split as is")
        return train_x, train_y, {}
    index, labels, summary = read_cleaned(CLEANED, data_hash)
    summary["view_hash"] = file_sha256(CLEANED / "actions.csv")[:16]
    if summary["policy"] != "flag":
        print(f"[train] clean.policy={summary['policy']}: {summary['keep']} kept as given, "
              f"{summary['relabel']} relabeled, {summary['drop']} dropped (of {summary['input']})")
    return train_x[index], labels, summary


def main() -> int:
    import torch

    from skillpack import tracking
    from skillpack.checkpoint import save_classifier
    from skillpack.data import PreparedStore
    from skillpack.checkpoint import load_teacher
    from skillpack.engine import Trainer, build_classifier, channel_stats, seed_everything
    from skillpack.io import write_json
    from skillpack.models import count_macs, count_params

    params = params_from_argv()
    cfg = params.train
    store = PreparedStore(PREPARED)
    (train_x, train_y), (val_x, val_y) = store.arrays("train"), store.arrays("val")
    train_x, train_y, cleaned = apply_cleaned_view(train_x, train_y, store.data_hash())
    h, w, c = store.image_shape
    seed_everything(params.seed)
    model = build_classifier(cfg.model, len(store.classes), (h, w, c), cfg.head, *channel_stats(train_x))
    teacher = load_teacher(cfg.loss.distill.teacher) if cfg.loss.distill.teacher else None
    macs, n_params = count_macs(model, (c, h, w)), count_params(model)
    data_hash = store.data_hash()
    fit_hash = f"{data_hash}:{cleaned.get('view_hash', 'uncleaned')}"  # a new cleaned view restarts training
    flat = {k: v for k, v in params.flat().items() if k.startswith("train.") or k == "seed"}

    with tracking.stage_run("train", params.mlflow.experiment, params=flat, data_hash=data_hash,
                            extra_tags={"model": cfg.model}):
        tracking.log_metrics({"params": n_params, "macs": macs, "train_samples": len(train_y),
                              **{f"clean_{k}": cleaned[k] for k in ("drop", "relabel") if k in cleaned}})

        def log_epoch(record):
            tracking.log_metrics({k: v for k, v in record.as_dict().items() if k != "epoch"}, step=record.epoch)

        def on_epoch_end(record, history):
            log_epoch(record)
            write_train_log(history)

        trainer = Trainer(model, cfg, params.seed, checkpoint=CHECKPOINT, data_hash=fit_hash,
                          on_epoch_end=on_epoch_end, teacher=teacher)
        result = trainer.fit(train_x, train_y, val_x, val_y)
        for record in result.history[:result.resumed_from_epoch]:  # epochs restored from the checkpoint
            log_epoch(record)
        tracking.log_metrics({"resumed_from_epoch": result.resumed_from_epoch})
        write_train_log(result.history)
        model = trainer.model.to("cpu", memory_format=torch.contiguous_format).eval()
        save_classifier(MODEL_FILE, model, model_name=cfg.model, classes=store.classes, image_shape=(h, w, c),
                        head=cfg.head, extra={"data_hash": data_hash, "cleaned_view": fit_hash, "seed": params.seed})
        images_per_s = len(train_y) * (cfg.epochs - result.resumed_from_epoch) / max(result.train_seconds, 1e-9)
        summary = {"model": cfg.model, "params": n_params, "macs": macs, "epochs": cfg.epochs,
                   "resumed_from_epoch": result.resumed_from_epoch, "train_seconds": round(result.train_seconds, 2),
                   "images_per_second": round(images_per_s, 1), "final_val_acc": result.history[-1].val_acc,
                   "device": str(trainer.device)}
        write_json(REPORTS / "train.json", summary)
        tracking.log_metrics({"train_seconds": result.train_seconds, "images_per_second": images_per_s})
        tracking.log_artifact(TRAIN_LOG)
        example = torch.as_tensor(val_x[:2] if len(val_x) else train_x[:2]).permute(0, 3, 1, 2).float().numpy()
        version = tracking.log_and_register_model(model, example, params.mlflow.registered_model, params.mlflow.alias)
        print(f"[train] {cfg.model}: val acc {result.history[-1].val_acc:.4f} in {result.train_seconds:.0f}s "
              f"({images_per_s:.0f} img/s); registered {params.mlflow.registered_model} v{version} "
              f"@{params.mlflow.alias}")
    return 0


if __name__ == "__main__":
    run_stage(main)
