"""The ablation flow: one Prefect task per (arm, seed), results persisted so that an
interrupted ablation resumes and a finished run is never recomputed, then statistics,
reports and charts.

    python -m flows.ablation ablations/default.yaml            # the full CPU ablation
    python -m flows.ablation ablations/default.yaml --quick    # CI profile
    python -m flows.ablation ablations/default.yaml --report-only  # re-render the reports from
                                        # reports/ablation.json's stored runs and benchmarks/results/*.json
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import skillpack  # noqa: F401  (environment defaults first)
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from skillpack import ablation as ab
from skillpack import tracking
from skillpack.config import flatten

from skillpack.paths import ABLATION_RESULTS as RESULTS
from skillpack.paths import COMPRESS_METRICS, PREPARED, REPORTS

VAL_IMAGES = 1000


def _load_data():
    from skillpack.data import PreparedStore

    store = PreparedStore(PREPARED)
    return store, {split: store.arrays(split) for split in ("train", "val", "test")}


def teacher_path(spec: ab.Spec, name: str, data_hash: str, quick: bool) -> Path:
    from skillpack.engine import config_hash

    return RESULTS / "teachers" / f"{name}-{config_hash(spec.teachers[name], data_hash, quick)}.pt"


@task(name="train-teacher")
def train_teacher(spec_path: str, name: str, quick: bool) -> str:
    """Train a distillation teacher once per (teacher config, data version); cached on disk."""
    from skillpack.checkpoint import save_classifier
    from skillpack.runs import RunData, train_model

    spec = ab.load_spec(spec_path, quick)
    store, data = _load_data()
    path = teacher_path(spec, name, store.data_hash(), quick)
    if path.is_file():
        return str(path)
    body = spec.teachers[name]
    arm = ab.Arm(name=name, overrides=body.get("overrides", {}), regime=body.get("regime", "standard"))
    params = ab.run_params(spec, arm, body.get("seed", 0))
    x, y = ab.regime_split(*data["train"], ab.regime_options(spec, arm.regime))
    val = tuple(a[:VAL_IMAGES] for a in data["val"])
    trained = train_model(params.train, RunData((x, y), val, len(store.classes)), params.seed)
    save_classifier(path, trained.model.cpu(), model_name=params.train.model, classes=store.classes,
                    image_shape=x.shape[1:], head=params.train.head)
    return str(path)


def _log_child(parent_run_id: str, params, result: dict, data_hash: str) -> None:
    """Every (arm, seed) is a child run of the ablation's parent run, computed or from the store."""
    flat = {**flatten(params.train, "train"), "seed": params.seed}
    tracking.log_child_run(parent_run_id, params.mlflow.experiment, f"{result['arm']}/seed{result['seed']}", flat,
                           {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
                           {"arm": result["arm"], "seed": result["seed"], "claims": ",".join(result["claims"]),
                            "regime": result["regime"], "stage": "ablation", "data_hash": data_hash,
                            "cached": bool(result.get("cached"))})


@task(name="ablation-run")
def run_arm_seed(spec_path: str, arm_name: str, seed: int, quick: bool, parent_run_id: str,
                 teachers: dict[str, str]) -> dict:
    from skillpack.checkpoint import load_classifier
    from skillpack.runs import RunData, train_and_evaluate

    spec = ab.load_spec(spec_path, quick)
    arm = spec.arm(arm_name)
    params = ab.run_params(spec, arm, seed)
    store, data = _load_data()
    options = ab.regime_options(spec, arm.regime)
    key = ab.run_key(seed, params, store.data_hash(), options)
    results = ab.ResultStore(RESULTS / spec.name / ("quick" if quick else "full"))
    labels = dict(arm=arm.name, seed=seed, regime=arm.regime, claims=arm.claims, key=key)
    cached = results.get(key)
    if cached is not None:
        result = {**cached, **labels, "cached": True}
        _log_child(parent_run_id, params, result, store.data_hash())
        return result
    reference = params.train.loss.distill.teacher
    teacher = load_classifier(teachers[reference.split(":", 1)[1]])[0] if reference else None
    train = ab.regime_split(*data["train"], options)
    val = tuple(a[:VAL_IMAGES] for a in data["val"])  # per-epoch validation only feeds the curves here
    result = train_and_evaluate(params.train, params.seed, RunData(train, val, len(store.classes)), data["test"],
                                teacher)
    result.update(labels)
    _log_child(parent_run_id, params, result, store.data_hash())
    results.put(key, result)
    get_run_logger().info("%s seed %d: test accuracy %.4f in %.0fs", arm.name, seed, result["test_accuracy"],
                          result["train_seconds"])
    return result


@flow(name="skillpack-ablation", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def ablation(spec_path: str = "ablations/default.yaml", quick: bool = False) -> dict:
    import mlflow

    from skillpack.ablation_report import write_ablation_reports

    spec = ab.load_spec(spec_path, quick)
    experiment = "skillpack"
    tracking.setup(experiment)
    with mlflow.start_run(run_name=f"ablation:{spec.name}{':quick' if quick else ''}",
                          parent_run_id=os.environ.get(tracking.PARENT_ENV) or None,
                          tags={"stage": "ablation", "spec": spec.name, "git_commit": tracking.git_commit()}) as parent:
        teachers = {name: train_teacher(spec_path, name, quick) for name in spec.teachers}
        names = [a.name for a in spec.arms + spec.cumulative]
        futures = [run_arm_seed.with_options(task_run_name=f"{name}-seed{seed}").submit(
                   spec_path, name, seed, quick, parent.info.run_id, teachers)
                   for name in names for seed in spec.seeds]
        runs = [f.result() for f in futures]
        print(f"{len(runs)} runs, {sum(bool(r.get('cached')) for r in runs)} from the result store")
        outputs = write_ablation_reports(spec, runs, REPORTS, command=_command(spec_path, quick),
                                         benchmarks=load_benchmark_results())
        for path in outputs["files"]:
            tracking.log_artifact(path, "ablation")
        create_markdown_artifact(key=f"ablation-{spec.name}".lower().replace("_", "-"),
                                 markdown=Path(outputs["markdown"]).read_text(),
                                 description=f"skillpack ablation {spec.name}")
    return outputs


def _command(spec_path: str, quick: bool) -> str:
    return f"python -m flows.ablation {spec_path}" + (" --quick" if quick else "")


BENCHMARK_RESULTS = Path("benchmarks/results")
CLAIM_BENCHMARKS = ("cleaning", "train_speed", "time_to_accuracy", "serve_load")  # the results the claims report reads


def load_benchmark_results(folder: Path = BENCHMARK_RESULTS) -> dict[str, dict]:
    """The benchmark results the claims report reads, by benchmark name, where measured."""
    import json

    found = {name: json.loads((folder / f"{name}.json").read_text()) for name in CLAIM_BENCHMARKS
             if (folder / f"{name}.json").is_file()}
    if COMPRESS_METRICS.is_file():  # the compress stage's paired comparisons (claims light.*)
        found["compression"] = json.loads(COMPRESS_METRICS.read_text())
    return found


def render_reports(spec_path: str = "ablations/default.yaml", quick: bool = False) -> dict:
    """Re-render the ablation and claims reports from the runs stored in the ablation's JSON
    report and the benchmark results: no training, no MLflow, no Prefect."""
    import json

    from skillpack.ablation_report import report_paths, write_ablation_reports

    spec = ab.load_spec(spec_path, quick)
    command = _command(spec_path, quick)
    stored = json.loads(report_paths(REPORTS, spec, command)["json"].read_text())
    return write_ablation_reports(spec, stored["runs"], REPORTS, command=stored.get("command", command),
                                  benchmarks=load_benchmark_results(), rendered_by=f"{command} --report-only")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", nargs="?", default="ablations/default.yaml")
    parser.add_argument("--quick", action="store_true", help="the small CI profile of the spec")
    parser.add_argument("--concurrency", type=int, default=1, help="runs at once (threads x runs <= cores)")
    parser.add_argument("--report-only", action="store_true",
                        help="re-render the reports from the stored runs of the last ablation (no training)")
    args = parser.parse_args(argv)
    if args.report_only:
        outputs = render_reports(args.spec, args.quick)
        print("\n".join(str(path) for path in outputs["files"]))
        return
    runner = ThreadPoolTaskRunner(max_workers=args.concurrency)
    ablation.with_options(task_runner=runner)(spec_path=args.spec, quick=args.quick)


if __name__ == "__main__":
    main()
