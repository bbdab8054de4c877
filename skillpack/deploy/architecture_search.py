"""`skillpack tune --nas`: a two-objective architecture search of the sp_nas family
(skillpack.config.architecture) with Optuna - validation accuracy up, ONNX Runtime latency at
batch 1 (the median of params tune.nas.latency_runs calls) down.

A trial draws an architecture (3 or 4 stages; per stage Fused-MBConv or MBConv in the first two,
MBConv later; 1 to max_depth blocks; a width from the stage's list; kernel 3 or 5; expansion 1, 4
or 6; squeeze-excitation on or off), trains it through skillpack.train.runs.train_model
(tune.nas.epochs epochs on at most tune.nas.max_train train images: Optuna prunes no
multi-objective study, so each trial is kept short) and exports the trained model to ONNX to
time it (skillpack.deploy.architecture_cost, which also checks ONNX Runtime's logits against
eager torch's); its parameter count is recorded beside. The study is tune's: the same storage,
workers, budget and nested MLflow runs (skillpack.train.tune, tune_study), with two directions.
The first trial is the fused reference (sp_nas_fused_ref) when the space holds it.

When no trial is left running: the Pareto front (study.best_trials) as a table and a PNG
(tune/<study>/pareto.md, pareto.json, pareto.png, logged with the study's run), and the chosen
architecture - the most accurate front point at or under tune.nas.max_latency_ms - written into
recipes.yaml as the recipe tune.nas.recipe, `train.model: <its sp_nas_... name>`, which builds
anywhere a model name is read. It lives in deploy because a trial measures the exported form.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from skillpack import paths, tracking
from skillpack.config import NasParams, Params, ParamsError, TuneParams, load_params
from skillpack.config.architecture import EXPANSIONS, KERNELS, NAMED_ARCHITECTURES, ArchSpec, StageSpec
from skillpack.train.runs import RunData, train_model
from skillpack.train.search_space import as_overrides, trial_params
from skillpack.train.tune import TrialOutcome, TuneRun, recipe_values, study_run_id, work
from skillpack.train.tune_study import SharedStudy, counts, create_or_join

DIRECTIONS = ("maximize", "minimize")      # val_acc, latency_ms
REFERENCE = "sp_nas_fused_ref"
RECIPE_MARK = "# skillpack tune --nas:"
FRONT_COLUMNS = ("number", "name", "val_acc", "latency_ms", "params")


@dataclass
class NasSummary:
    counts: dict[str, int]
    finished: bool                      # no trial left running: the front, its plot and the recipe were written
    front: list[dict] = field(default_factory=list)   # FRONT_COLUMNS + macs, onnx_max_abs_diff; by latency
    chosen: dict | None = None          # the front point written as the recipe (None: none under the bound)
    recipe: dict = field(default_factory=dict)
    dvc_command: str = ""
    files: list[Path] = field(default_factory=list)


def study_settings(cfg: TuneParams) -> TuneParams:
    """tune's settings with the architecture study's name and budget: the storage and the workers
    are tune's."""
    nas = cfg.nas
    return cfg.model_copy(update={"study": nas.study, "n_trials": nas.n_trials, "timeout_s": nas.timeout_s,
                                  "recipe": nas.recipe})


def suggest_architecture(trial: optuna.Trial, nas: NasParams) -> ArchSpec:
    """The trial's architecture (an enqueued trial gets its fixed values)."""
    stages = []
    for i in range(1, trial.suggest_int("stages", 3, 4) + 1):
        block = trial.suggest_categorical(f"s{i}_block", ["fused", "mbconv"]) if i <= 2 else "mbconv"
        stages.append(StageSpec(block, trial.suggest_int(f"s{i}_depth", 1, nas.max_depth),
                                trial.suggest_categorical(f"s{i}_width", nas.widths[i - 1]),
                                trial.suggest_categorical(f"s{i}_kernel", list(KERNELS)),
                                trial.suggest_categorical(f"s{i}_expansion", list(EXPANSIONS)),
                                trial.suggest_categorical(f"s{i}_se", [False, True])))
    return ArchSpec(nas.stem, tuple(stages), nas.head)


def trial_values(spec: ArchSpec, nas: NasParams) -> dict | None:
    """The Optuna values that give `spec` (to queue it), or None when the space cannot give it."""
    values = {"stages": len(spec.stages)}
    for i, s in enumerate(spec.stages, 1):
        if (i > 2 and s.block != "mbconv") or s.depth > nas.max_depth or s.width not in nas.widths[i - 1]:
            return None
        values.update({f"s{i}_depth": s.depth, f"s{i}_width": s.width, f"s{i}_kernel": s.kernel,
                       f"s{i}_expansion": s.expansion, f"s{i}_se": s.se, **({f"s{i}_block": s.block} if i <= 2 else {})})
    return values if (spec.stem, spec.head) == (nas.stem, nas.head) else None


def measure(trained, name: str, image_shape: tuple[int, int, int], nas: NasParams) -> dict:
    """The trained model's cost: batch-1 median latency of its ONNX export, parameters, MACs, and
    ONNX Runtime's largest logit difference to eager torch's (16 images)."""
    from skillpack.deploy.architecture_cost import measure_classifier

    cost = measure_classifier(trained.model.cpu(), name, image_shape, batches=(1, 16), runs=nas.latency_runs,
                              threads=nas.latency_threads)
    return {"latency_ms": cost.latency["1"]["p50_ms"], "params": cost.params, "macs": cost.macs,
            "onnx_max_abs_diff": cost.max_abs_diff}


def run_architecture_trial(trial: optuna.Trial, nas: NasParams, run: TuneRun, data: RunData) -> TrialOutcome:
    """Train the trial's architecture for nas.epochs epochs and measure it: objectives (val_acc, latency_ms)."""
    name = suggest_architecture(trial, nas).encode()
    trial.set_user_attr("name", name)
    values = {"train.model": name, "train.epochs": nas.epochs}
    try:
        params = trial_params(run.params_path, run.overrides, values)
    except ParamsError as err:
        return TrialOutcome(TrialState.FAIL, values, error=str(err))
    curve: list[float] = []
    trained = train_model(params.train, data, params.seed, on_epoch=lambda record, *_: curve.append(record.val_acc))
    figures = measure(trained, name, data.image_shape, nas)
    for key, value in figures.items():
        trial.set_user_attr(key, value)
    return TrialOutcome(TrialState.COMPLETE, values, [float(v) for v in curve],
                        objectives=(float(curve[-1]), figures["latency_ms"]), figures=figures)


def pareto_front(study: optuna.Study) -> list[dict]:
    """study.best_trials (no point dominated by another) as rows, fastest first."""
    rows = [{"number": t.number, "name": t.user_attrs["name"], "val_acc": t.values[0], "latency_ms": t.values[1],
             "params": t.user_attrs["params"], "macs": t.user_attrs["macs"],
             "onnx_max_abs_diff": t.user_attrs["onnx_max_abs_diff"]} for t in study.best_trials]
    return sorted(rows, key=lambda row: (row["latency_ms"], -row["val_acc"]))


def choose(front: list[dict], max_latency_ms: float | None) -> dict | None:
    """The most accurate front point at or under `max_latency_ms` (any, when None)."""
    within = [row for row in front if max_latency_ms is None or row["latency_ms"] <= max_latency_ms]
    return max(within, key=lambda row: (row["val_acc"], -row["latency_ms"])) if within else None


def front_table(front: list[dict], chosen: dict | None = None) -> str:
    """The front as a markdown table, the chosen point marked."""
    lines = ["| trial | validation accuracy | latency batch 1 (ms, median) | parameters | architecture |",
             "|---:|---:|---:|---:|---|"]
    for row in front:
        mark = " (chosen)" if chosen and row["number"] == chosen["number"] else ""
        lines.append(f"| {row['number']} | {row['val_acc']:.4f} | {row['latency_ms']:.3f} | {row['params']:,} | "
                     f"`{row['name']}`{mark} |")
    return "\n".join(lines)


def save_front(study: optuna.Study, front: list[dict], chosen: dict | None, folder: Path) -> list[Path]:
    """pareto.md, pareto.json and pareto.png (Optuna's Pareto-front plot, matplotlib Agg) in `folder`."""
    from optuna.visualization.matplotlib import plot_pareto_front

    from skillpack.io import write_json, write_text
    from skillpack.plots import save_figure

    write_text(folder / "pareto.md", front_table(front, chosen) + "\n")
    write_json(folder / "pareto.json", {"front": front, "chosen": chosen})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = plot_pareto_front(study, target_names=["validation accuracy", "latency at batch 1 (ms, median)"])
    axes.figure.set_size_inches(8, 5)
    save_figure(axes.figure, folder / "pareto.png")
    return [folder / "pareto.md", folder / "pareto.json", folder / "pareto.png"]


def finish(shared: SharedStudy, run: TuneRun, cfg: TuneParams, run_id: str, say=print) -> NasSummary:
    """When no trial is left running: the front written and logged, the chosen architecture into
    recipes.yaml (its dvc command printed), the study's run closed. Each step is idempotent."""
    from skillpack.train.recipes import dvc_command, write_recipe

    study, tally, nas = shared.study, counts(shared.study), cfg.nas
    if tally.get("RUNNING") or not tally.get("COMPLETE"):
        say(f"[tune --nas] {tally}: " + ("the last worker to end writes the front" if tally.get("RUNNING")
                                         else "no trial completed, no front"))
        return NasSummary(tally, finished=False)
    front = pareto_front(study)
    chosen = choose(front, nas.max_latency_ms)
    files = save_front(study, front, chosen, run.folder / cfg.study)
    say(f"[tune --nas] Pareto front of {sum(tally.values())} trials:\n{front_table(front, chosen)}")
    if chosen is None:
        say(f"[tune --nas] no front point at or under {nas.max_latency_ms} ms: no recipe written")
        tracking.finish_parent_run(run_id, {"front_size": len(front)}, {"recipe": ""}, files)
        return NasSummary(tally, True, front, files=files)
    values = recipe_values(run, {"train.model": chosen["name"]})
    load_params(run.params_path, as_overrides(values))   # the recipe loads as params
    command = dvc_command(as_overrides(values))
    bound = f"at or under {nas.max_latency_ms} ms" if nas.max_latency_ms else "at any latency"
    write_recipe(cfg.recipe, values, [f"the most accurate Pareto point {bound} of study {cfg.study}: trial "
                                      f"{chosen['number']}, validation accuracy {chosen['val_acc']:.4f} after "
                                      f"{nas.epochs} epoch(s), {chosen['latency_ms']:.3f} ms at batch 1, "
                                      f"{chosen['params']:,} parameters", "re-run: skillpack tune --nas"],
                 run.recipes_path, RECIPE_MARK)
    tracking.finish_parent_run(run_id, {"front_size": len(front), "chosen_val_acc": chosen["val_acc"],
                                        "chosen_latency_ms": chosen["latency_ms"]},
                               {"chosen": chosen["name"], "recipe": cfg.recipe, "dvc_command": command}, files)
    say(f"[tune --nas] chosen: trial {chosen['number']} {chosen['name']} -> recipe {cfg.recipe!r} in "
        f"{run.recipes_path}\n{command}")
    return NasSummary(tally, True, front, chosen, values, command, files)


def nas_data(data: RunData, max_train: int | None, seed: int) -> RunData:
    """A stratified subset of at most `max_train` of `data`'s train images (val kept whole)."""
    from skillpack.data.sourcedata import Split
    from skillpack.data.split import stratified_subset

    images, labels = data.train
    subset = stratified_subset(Split(images, labels, [str(i) for i in range(len(labels))]), max_train, seed,
                               "tune.nas.max_train")
    return RunData((subset.images, subset.labels), data.val, data.num_classes)


def search_architectures(run: TuneRun, data: RunData | None = None, say=print) -> NasSummary:
    """One worker of the architecture study params tune.nas names (tune's storage and workers):
    join or create it, run trials until its budget is spent, and write the front and the recipe
    when it is the last worker to end. `data`: the prepared store's (cleaned) splits unless given."""
    params: Params = load_params(run.params_path, run.overrides)
    cfg = study_settings(params.tune)
    if data is None:
        from skillpack.train.production import training_input

        data = training_input(paths.PREPARED, paths.CLEANED).data
    data = nas_data(data, cfg.nas.max_train, params.seed)
    tracking.setup(params.registry.experiment)
    sampler = optuna.samplers.TPESampler(seed=params.seed + run.worker, constant_liar=True)
    shared = create_or_join(cfg, run.folder, sampler, optuna.pruners.NopPruner(), DIRECTIONS)
    run_id = study_run_id(shared, trial_values(NAMED_ARCHITECTURES[REFERENCE], cfg.nas), params.registry.experiment,
                          {"study": cfg.study, "search": "architecture", "objectives": "val_acc max, latency_ms min",
                           "space": json.dumps(cfg.nas.model_dump())}, source=REFERENCE)
    work(shared, cfg, params.registry.experiment, run_id,
         lambda trial: run_architecture_trial(trial, cfg.nas, run, data), say)
    return finish(shared, run, cfg, run_id, say)
