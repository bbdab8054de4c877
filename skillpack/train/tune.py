"""`skillpack tune`: hyper-parameter search with Optuna over a search-space file
(skillpack.train.search_space), each trial one training through skillpack.train.runs.train_model
on the prepared store's (cleaned) train and val splits, reporting its validation accuracy after
every epoch to the pruner (params tune.pruner).

The sampler is TPE, seeded with params seed (+ the worker's index, so that parallel workers
draw different values); the first trial is the current recipe (params.yaml's values of the
searched keys). Workers share the study through its storage (skillpack.train.tune_study).
MLflow: the study is a parent run, each trial a nested run with its values and its per-epoch
val_acc curve. When no trial is left running, the best one becomes a recipe of recipes.yaml
(params tune.recipe), its `dvc exp run -S ...` command is printed, and Optuna's optimisation
history and parameter importances are drawn into tune/<study>/ and logged with the study's run."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from skillpack import paths, tracking
from skillpack.config import Params, ParamsError, TuneParams, load_params
from skillpack.train.runs import RunData, train_model
from skillpack.train.search_space import as_overrides, default_point, load_space, suggest, trial_params
from skillpack.train.tune_study import (
    PARENT_RUN_ATTR,
    SharedStudy,
    claim_trial,
    counts,
    create_or_join,
    heartbeat,
    wait_for_attr,
)

RECIPE_MARK = "# skillpack tune:"   # the comment lines above a recipe this module wrote (replaced with it)
MLFLOW_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}


@dataclass
class TuneRun:
    """One worker's invocation: params.yaml and its overrides, the worker's index, where files go."""
    params_path: Path = paths.PARAMS
    overrides: tuple[str, ...] = ()
    worker: int = 0
    folder: Path = paths.TUNE
    recipes_path: Path = paths.RECIPES


@dataclass
class TrialOutcome:
    state: TrialState
    values: dict
    curve: list[float] = field(default_factory=list)   # val_acc after each epoch trained
    error: str = ""
    objectives: tuple[float, ...] = ()    # a multi-objective study's values, in its directions' order
    figures: dict = field(default_factory=dict)   # more of the trial's figures, logged with it (latency_ms, params)

    @property
    def value(self) -> float | list[float] | None:
        if self.state != TrialState.COMPLETE:
            return None
        return list(self.objectives) if self.objectives else self.curve[-1]


@dataclass
class TuneSummary:
    counts: dict[str, int]
    finished: bool                   # no trial left running: the recipe and plots were written
    best_number: int | None = None
    best_value: float | None = None
    recipe: dict = field(default_factory=dict)
    dvc_command: str = ""
    plots: list[Path] = field(default_factory=list)
    epochs_trained: int = 0          # epochs reported by every trial: the study's training cost in epochs


def sampler_and_pruner(params: Params, worker: int) -> tuple:
    cfg = params.tune
    sampler = optuna.samplers.TPESampler(seed=params.seed + worker, constant_liar=True)
    if cfg.pruner == "hyperband":
        return sampler, optuna.pruners.HyperbandPruner(min_resource=1, max_resource=params.train.epochs)
    return sampler, optuna.pruners.MedianPruner(n_startup_trials=cfg.startup_trials, n_warmup_steps=cfg.warmup_epochs)


def run_trial(trial: optuna.Trial, space: dict, run: TuneRun, data: RunData) -> TrialOutcome:
    """One training of params + the trial's values, pruned when the pruner says so after an epoch.
    A combination params refuse fails this trial only, with the params error as its reason."""
    values = suggest(trial, space)
    try:
        params = trial_params(run.params_path, run.overrides, values)
    except ParamsError as err:
        return TrialOutcome(TrialState.FAIL, values, error=str(err))
    curve: list[float] = []

    def on_epoch(record, _history, _model) -> None:
        curve.append(float(record.val_acc))
        trial.report(record.val_acc, record.epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {record.epoch}: val_acc {record.val_acc:.4f}")

    try:
        train_model(params.train, data, params.seed, on_epoch=on_epoch)
    except optuna.TrialPruned:
        return TrialOutcome(TrialState.PRUNED, values, curve)
    return TrialOutcome(TrialState.COMPLETE, values, curve)


def study_run_id(shared: SharedStudy, first: dict | None, experiment: str, tags: dict,
                 source: str = "params.yaml") -> str:
    """The study's MLflow run (tagged stage tune and `tags`, which name the study): opened by the
    worker that created the study, after it queued `first` (from `source`) as trial 0; the others
    wait for its id."""
    study = tags["study"]
    if shared.created and first is not None:
        shared.study.enqueue_trial(first, user_attrs={"source": source})
    run_id = None if shared.created else wait_for_attr(shared.study, PARENT_RUN_ATTR)
    if run_id is None:
        run_id = tracking.start_parent_run(experiment, f"tune {study}", {"stage": "tune", **tags,
                                                                         "mlflow.note.content": f"Optuna study {study}"})
        shared.study.set_user_attr(PARENT_RUN_ATTR, run_id)
    return run_id


def log_trial(run_id: str, experiment: str, number: int, outcome: TrialOutcome) -> None:
    tags = {"stage": "tune", "trial": number, "state": outcome.state.name, **({"error": outcome.error} if outcome.error
                                                                               else {})}
    metrics = {"val_acc": outcome.curve[-1], "epochs_trained": len(outcome.curve)} if outcome.curve else {}
    metrics.update(outcome.figures)
    tracking.log_child_run(run_id, experiment, f"trial {number}", outcome.values, metrics, tags,
                           series={"val_acc_by_epoch": outcome.curve}, status=MLFLOW_STATUS[outcome.state])


def work(shared: SharedStudy, cfg: TuneParams, experiment: str, run_id: str,
         run_one: Callable[[optuna.Trial], TrialOutcome], say=print) -> None:
    """Claim trials and run each (`run_one`) until the budget (cfg's n_trials or timeout_s) is spent."""
    deadline = time.monotonic() + cfg.timeout_s if cfg.timeout_s else None
    while (trial := claim_trial(shared, cfg.n_trials, deadline)) is not None:
        try:
            with heartbeat(shared, trial, cfg.heartbeat_s):
                outcome = run_one(trial)
        except BaseException:   # a bug or an interrupt: the trial ends FAIL, not RUNNING
            shared.study.tell(trial, state=TrialState.FAIL)
            raise
        shared.study.tell(trial, outcome.value, state=outcome.state)
        log_trial(run_id, experiment, trial.number, outcome)
        shown = f"val_acc {outcome.curve[-1]:.4f} after {len(outcome.curve)} epoch(s)" if outcome.curve else outcome.error
        extra = "".join(f", {key} {value:.4g}" for key, value in outcome.figures.items())
        say(f"[tune] trial {trial.number} {outcome.state.name}: {shown}{extra}")


def recipe_values(run: TuneRun, best: dict) -> dict:
    """The best trial as a recipe: the run's own overrides (but tune.*) and the trial's values."""
    given = {}
    for item in run.overrides:
        key, value = item.split("=", 1)
        if not key.startswith("tune."):
            given[key] = yaml.safe_load(value)
    return {**given, **best}


def save_plots(study: optuna.Study, folder: Path, say=print) -> list[Path]:
    """Optuna's optimisation history and parameter importances as PNGs (matplotlib, Agg)."""
    import warnings

    from optuna.visualization import matplotlib as optuna_plots

    from skillpack.plots import save_figure

    written = []
    for name, draw in (("history", optuna_plots.plot_optimization_history),
                       ("importance", optuna_plots.plot_param_importances)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                axes = draw(study, target_name="validation accuracy")
            except (ValueError, RuntimeError, ZeroDivisionError) as err:   # e.g. too few trials for importances
                say(f"[tune] no {name} plot: {err}")
                continue
        if name == "importance" and axes.get_legend():
            axes.get_legend().remove()   # one objective: its name is on the axis already
        figure = axes.figure
        figure.set_size_inches(8, 4.5)
        save_figure(figure, folder / f"{name}.png")
        written.append(folder / f"{name}.png")
    return written


def epochs_trained(study: optuna.Study) -> int:
    """Epochs trained over all trials (each reports its validation accuracy once per epoch)."""
    return sum(len(t.intermediate_values) for t in study.get_trials(deepcopy=False))


def finish(shared: SharedStudy, run: TuneRun, cfg: TuneParams, run_id: str, say=print) -> TuneSummary:
    """When no trial is left running: the best trial into recipes.yaml, its dvc command, the plots,
    the study's run closed. (Two workers ending at once both write the same: each step is idempotent.)"""
    from skillpack.train.recipes import dvc_command, write_recipe

    study, tally = shared.study, counts(shared.study)
    if tally.get("RUNNING") or not tally.get("COMPLETE"):
        say(f"[tune] {tally}: " + ("the last worker to end writes the recipe" if tally.get("RUNNING")
                                   else "no trial completed, no recipe"))
        return TuneSummary(tally, finished=False)
    best = study.best_trial
    values = recipe_values(run, best.params)
    command = dvc_command(as_overrides(values))
    load_params(run.params_path, as_overrides(values))   # the recipe loads as params
    ended = sum(tally.get(s.name, 0) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    write_recipe(cfg.recipe, values, [f"the best of {ended} trials of study {cfg.study} (search space {cfg.space}, "
                                      f"pruner {cfg.pruner}): trial {best.number}, validation accuracy {best.value:.4f}",
                                      "re-run: skillpack tune (it replaces this recipe)"],
                 run.recipes_path, RECIPE_MARK)
    plots = save_plots(study, run.folder / cfg.study, say)
    tracking.finish_parent_run(run_id, {"best_val_acc": best.value, **{f"trials_{k.lower()}": v for k, v in tally.items()}},
                               {"best_trial": best.number, "recipe": cfg.recipe, "dvc_command": command}, plots)
    say(f"[tune] best: trial {best.number}, val_acc {best.value:.4f} ({tally}) -> recipe {cfg.recipe!r} in "
        f"{run.recipes_path}\n{command}")
    return TuneSummary(tally, True, best.number, best.value, values, command, plots, epochs_trained(study))


def tune(run: TuneRun, data: RunData | None = None, say=print) -> TuneSummary:
    """One worker of the study params tune names: join (or create) it, run trials until the budget
    is spent, and write the recipe when it is the last worker to end. `data`: the prepared store's
    (cleaned) train and val splits unless given."""
    params = load_params(run.params_path, run.overrides)
    cfg = params.tune
    space = load_space(cfg.space, params)
    first = default_point(space, params, cfg.space)
    trial_params(run.params_path, run.overrides, first)   # the current recipe must load, or every trial would fail
    if data is None:
        from skillpack.train.production import training_input

        data = training_input(paths.PREPARED, paths.CLEANED).data
    tracking.setup(params.registry.experiment)
    shared = create_or_join(cfg, run.folder, *sampler_and_pruner(params, run.worker))
    run_id = study_run_id(shared, first, params.registry.experiment,
                          {"study": cfg.study, "pruner": cfg.pruner, "space": cfg.space})
    work(shared, cfg, params.registry.experiment, run_id, lambda trial: run_trial(trial, space, run, data), say)
    return finish(shared, run, cfg, run_id, say)
