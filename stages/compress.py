"""compress: smaller models from the trained one, each a training through the run API, over
`compress.seeds`: the model pruned to (1 - prune_ratio) of its channels and fine-tuned, the
same distilled from the unpruned model, and a student (`compress.student`) distilled from it.
Each is paired by seed with its control: the unpruned model given the same fine-tune, the
student trained without a teacher. Writes models/compressed/*.pt (first seed) and
reports/compress.json; the int8 variant is made by the export stage, from the ONNX file."""
from __future__ import annotations

from stages.common import params_from_argv, run_stage


def main() -> int:
    import time

    from tqdm.auto import tqdm

    from skillpack import paths, tracking
    from skillpack.checkpoint import load_classifier, save_classifier
    from skillpack.cleaning import cleaned_train_split
    from skillpack.compress import channel_counts, prune_channels
    from skillpack.config import flatten, with_overrides
    from skillpack.data import PreparedStore
    from skillpack.io import write_json
    from skillpack.models import count_macs, count_params
    from skillpack.runs import RunData, evaluate_model, train_model
    from skillpack.compression_report import compare_to_controls

    params = params_from_argv()
    cfg = params.compress
    store = PreparedStore(paths.PREPARED)
    data_hash = store.data_hash()
    train_x, train_y, _ = cleaned_train_split(*store.arrays("train"), paths.CLEANED, data_hash)
    data = RunData((train_x, train_y), store.arrays("val"), len(store.classes))
    test_x, test_y = store.arrays("test")
    baseline, meta = load_classifier(paths.MODEL_FILE)
    distill = {"loss.distill.temperature": cfg.distill_temperature, "loss.distill.weight": cfg.distill_weight}
    finetune = with_overrides(params.train, {"epochs": cfg.finetune_epochs, "optimizer.lr": cfg.finetune_lr,
                                             "schedule.warmup_epochs": 0, **distill})
    student = with_overrides(params.train, {"model": cfg.student, "epochs": cfg.student_epochs, **distill})
    pruned = prune_channels(baseline, store.image_shape, cfg.prune_ratio, cfg.prune_importance)
    recipes = {  # variant -> how it is trained: (train params, init, teacher)
        "finetuned": (finetune, baseline, None),
        "pruned": (finetune, pruned, None),
        "pruned_distilled": (finetune, pruned, baseline),
        "student": (student, None, None),
        "student_distilled": (student, None, baseline),
    }
    t0 = time.perf_counter()
    accuracy = {name: {} for name in recipes}
    seconds = {name: [] for name in recipes}
    deployable = {}
    with tracking.stage_run("compress", params.mlflow.experiment,
                            params={**flatten(cfg, "compress"), "train.model": params.train.model},
                            data_hash=data_hash):
        bar = tqdm(total=len(cfg.seeds) * len(recipes), desc="compress", mininterval=1.0)
        for seed in cfg.seeds:
            for name, (train_cfg, init, teacher) in recipes.items():
                bar.set_postfix_str(f"{name} seed {seed}")
                trained = train_model(train_cfg, data, seed, init=init, teacher=teacher)
                model = trained.model.cpu().eval()
                accuracy[name][str(seed)] = evaluate_model(model, test_x, test_y).accuracy
                seconds[name].append(trained.train_seconds)
                tracking.log_metrics({f"{name}_test_accuracy": accuracy[name][str(seed)]}, step=seed)
                deployable.setdefault(name, model)
                bar.update()
        bar.close()
        baseline_acc = evaluate_model(baseline, test_x, test_y).accuracy
        shape = store.image_shape
        variants = {"baseline": {"model": meta["model_name"], "test_accuracy": {"trained": baseline_acc},
                                 **_size(baseline, shape, count_params, count_macs)}}
        for name, model in deployable.items():
            model_name = cfg.student if name.startswith("student") else meta["model_name"]
            if name != "finetuned":
                save_classifier(paths.COMPRESSED / f"{name}.pt", model, model_name=model_name, classes=store.classes,
                                image_shape=shape, head=params.train.head,
                                extra={"data_hash": data_hash, "seed": cfg.seeds[0], "variant": name})
            variants[name] = {"model": model_name, "test_accuracy": accuracy[name],
                              "train_seconds": seconds[name], **_size(model, shape, count_params, count_macs)}
        variants["pruned"]["channels"] = channel_counts(deployable["pruned"])
        variants["baseline"]["channels"] = channel_counts(baseline)
        comparisons = compare_to_controls(accuracy, {"pruned": "finetuned", "pruned_distilled": "finetuned",
                                                     "student_distilled": "student"})
        summary = {"seeds": cfg.seeds, "prune_ratio": cfg.prune_ratio, "prune_importance": cfg.prune_importance,
                   "finetune_epochs": cfg.finetune_epochs, "student": cfg.student, "student_epochs": cfg.student_epochs,
                   "n_train": int(len(train_y)), "n_test": int(len(test_y)), "data_hash": data_hash,
                   "variants": variants, "comparisons": comparisons,
                   "seconds": round(time.perf_counter() - t0, 1)}
        write_json(paths.COMPRESS_METRICS, summary)
        tracking.log_metrics({f"{name}_delta_points": c["delta_points"] for name, c in comparisons.items()})
        tracking.log_artifact(paths.COMPRESS_METRICS)
    for name, c in comparisons.items():
        print(f"[compress] {name} vs {c['control']}: {c['delta_points']:+.2f} points "
              f"[{c['ci_low_points']:+.2f}, {c['ci_high_points']:+.2f}] over seeds {cfg.seeds}, "
              f"Holm p {c['p_adjusted']:.3f}")
    print(f"[compress] params {variants['baseline']['params']:,} -> pruned {variants['pruned']['params']:,}, "
          f"student {variants['student']['params']:,}; {summary['seconds']:.0f}s -> {paths.COMPRESSED}")
    return 0


def _size(model, shape, count_params, count_macs) -> dict:
    h, w, c = shape
    return {"params": count_params(model), "macs": count_macs(model, (c, h, w))}


if __name__ == "__main__":
    run_stage(main)
