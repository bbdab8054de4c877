"""train: the model from params on the prepared store (the cleaned view of its train split);
checkpoints every epoch, resumes, and registers the model in MLflow only when its weights
are new."""
from __future__ import annotations

import csv
import io

from stages.common import params_from_argv, publish, run_stage


def write_train_log(path, history) -> None:
    from skillpack.io import write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0].as_dict()))
    writer.writeheader()
    for record in history:
        writer.writerow(record.as_dict())
    write_text(path, buf.getvalue())


def epoch_figures(record) -> dict:
    """An epoch's figures as MLflow metrics at step `epoch` (the same names as train_log.csv's columns)."""
    return {k: v for k, v in record.as_dict().items() if k != "epoch"}


def main() -> int:
    from skillpack import model_registry, paths, tracking
    from skillpack.config import flatten
    from skillpack.io import counted
    from skillpack.train import distributed
    from skillpack.train.production import save_production, train_production, training_input

    params = params_from_argv()
    inputs = training_input(paths.PREPARED, paths.CLEANED)
    if not distributed.is_main():  # torchrun: the other ranks train their share; rank 0 logs, saves, registers
        train_production(params.train, params.seed, inputs, paths.CHECKPOINT)
        return 0
    with tracking.stage_run("train", params.registry.experiment, params={**flatten(params.train, "train"),
                            "seed": params.seed}, data_hash=inputs.data_hash, extra_tags={"model": params.train.model}):
        def on_epoch(record, history, _model):
            tracking.log_metrics(epoch_figures(record), step=record.epoch)
            write_train_log(paths.TRAIN_LOG, history)

        trained = train_production(params.train, params.seed, inputs, paths.CHECKPOINT, on_epoch=on_epoch,
                                   progress=True)
        for record in trained.history[:trained.resumed_from_epoch]:  # epochs restored from the checkpoint
            tracking.log_metrics(epoch_figures(record), step=record.epoch)
        write_train_log(paths.TRAIN_LOG, trained.history)
        shipped = save_production(params.train, params.seed, params.data.source, inputs, trained, paths.MODEL_FILE)
        publish(shipped.figures, paths.TRAIN_METRICS, dvc=paths.TRAIN_DVC_METRICS, dvc_keys=("val_acc", "train_seconds"),
                series=("val_acc",), artifacts=((paths.TRAIN_LOG, None),))
        registered = model_registry.register_trained_model(shipped.model, inputs.example, shipped.figures, shipped.description,
                                                     params.registry, model_registry.lineage_tags(inputs.data_hash))
    f = shipped.figures
    print(f"[train] {f['model']}: val acc {f['val_acc']:.4f}, {counted(f['epochs_trained'], 'epoch')} in "
          f"{f['train_seconds']:.0f}s ({f['images_per_second']:.0f} img/s); {registered}")
    return 0


if __name__ == "__main__":
    run_stage(main)
