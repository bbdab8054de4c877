"""The ablation flow: one Prefect task per (arm, seed), results persisted so that an
interrupted ablation resumes and a finished run is never recomputed, then statistics,
reports and charts.

    python -m flows.ablation ablations/default.yaml            # the full CPU ablation
    python -m flows.ablation ablations/default.yaml --quick    # CI profile
    python -m flows.ablation ablations/default.yaml --report-only  # re-render the reports from
                                        # reports/ablation.json's stored runs and benchmarks/results/*.json
    python -m flows.ablation ablations/default.yaml --restore-store  # fill the result store (not in git)
                                        # from reports/ablation.json's runs: the next run computes only new ones
    python -m flows.ablation ablations/default.yaml --task-runner dask --workers 2   # one run's override

Where the (arm, seed) runs execute is params.yaml `ablation.task_runner` (read by
`runner_params`, nowhere else): `thread` (Prefect's thread pool, in this process), `process`
(Prefect's process pool on this machine: N trainings at once on one GPU, each process capped
at its share of the GPU's memory - skillpack.train.concurrent; `workers: auto` derives N from the
free GPU memory, or from the cores on a CPU), `dask` (prefect-dask: a local cluster of
`workers` processes with one thread each, or the cluster at `address`) or `ray` (prefect-ray,
an optional extra: `pip install 'skillpack[ray]'`). A flow run may override it (the
`task_runner` parameter; the CLI flags above). In a process, Dask or Ray worker every run
trains with `torch_threads` (default 1) torch threads; a run's stored result is keyed by its
config and data, not by where or on how many threads it ran.

    python -m flows.ablation ablations/default.yaml --task-runner process --workers auto   # one GPU, N at once
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from skillpack import tracking
from skillpack.config import TaskRunnerParams, flatten
from skillpack.evidence import ablation as ab
from skillpack.evidence import runs as ablation_runs
from skillpack.paths import ABLATION_RESULTS as RESULTS
from skillpack.paths import PREPARED, REPORTS

VAL_IMAGES = ablation_runs.VAL_IMAGES


def teacher_path(spec: ab.Spec, name: str, data_hash: str) -> Path:
    from skillpack.train.engine import config_hash

    body = spec.teachers[name]
    regime = spec.regimes[body.get("regime", "standard")]
    return RESULTS / "teachers" / f"{name}-{config_hash(body, regime, spec.base, data_hash)}.pt"


@task(name="train-teacher")
def train_teacher(spec_path: str, name: str, profile: str) -> str:
    """Train a distillation teacher once per (teacher config, data version); cached on disk."""
    spec = ab.load_spec(spec_path, profile=profile)
    store, data = ablation_runs.prepared_data(PREPARED)
    return str(ablation_runs.train_teacher(spec, name, data, store.classes, teacher_path(spec, name, store.data_hash())))


def _log_child(parent_run_id: str, params, result: dict, data_hash: str) -> None:
    """Every (arm, seed) is a child run of the ablation's parent run, computed or from the store."""
    flat = {**flatten(params.train, "train"), "seed": params.seed}
    tracking.log_child_run(parent_run_id, params.registry.experiment, f"{result['arm']}/seed{result['seed']}", flat,
                           {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
                           {"arm": result["arm"], "seed": result["seed"], "claims": ",".join(result["claims"]),
                            "regime": result["regime"], "stage": "ablation", "data_hash": data_hash,
                            "cached": bool(result.get("cached"))})


@task(name="ablation-run")
def run_arm_seed(spec_path: str, arm_name: str, seed: int, profile: str, parent_run_id: str,
                 teachers: dict[str, str], torch_threads: int | None = None) -> dict:
    import torch

    spec = ablation_runs.cached_spec(spec_path, profile)
    store, data = ablation_runs.prepared_data(PREPARED)  # read once per worker process
    results = ab.ResultStore(RESULTS / spec.name)  # one store for every profile: a run is keyed by its config
    result, params = ablation_runs.arm_run(spec, arm_name, seed, data, len(store.classes), store.data_hash(), teachers,
                                torch_threads, results)
    _log_child(parent_run_id, params, result, store.data_hash())
    if result.get("cached"):
        return result
    get_run_logger().info("%s seed %d: test accuracy %.4f in %.0fs (pid %d, %d torch threads)", arm_name, seed,
                          result["test_accuracy"], result["train_seconds"], os.getpid(), torch.get_num_threads())
    return result


# ------------------------------------------------------------------ task runners

def runner_params(overrides: dict | None = None, params_path: str | Path = "params.yaml") -> TaskRunnerParams:
    """params.yaml's ablation.task_runner, with a flow run's overrides ({"kind": "dask", ...})."""
    from skillpack.config import load_params, with_overrides

    runner = load_params(params_path).ablation.task_runner
    return with_overrides(runner, overrides) if overrides else runner


def concurrency_plan(runner: TaskRunnerParams, device: str = "auto"):
    """How many runs at once (skillpack.train.concurrent.plan): `workers` as given, or auto - from
    the free GPU memory for a process pool on CUDA, else from the cores."""
    from skillpack.train import concurrent
    threads = torch_threads(runner) or 1
    on_gpu = runner.kind == "process"
    return concurrent.plan(runner.workers, threads, device if on_gpu else "cpu", runner.run_memory_gb)


def build_task_runner(runner: TaskRunnerParams, api_url: str | None = None, device: str = "auto", plan=None):
    """The Prefect task runner of `runner`: thread pool, process pool (skillpack.train.concurrent:
    each process with its torch threads and, on CUDA, its GPU memory cap), Dask (a local
    cluster of worker processes with one thread each, or a running one) or Ray. `api_url`: the
    Prefect API the local workers report to (the flow's own, so that they never start a
    temporary server each; the workers of a running cluster need PREFECT_API_URL set where they
    run). `device`: runtime.device, where a process pool's runs train; `plan`: concurrency_plan's,
    when already made."""
    plan = plan or concurrency_plan(runner, device)
    workers = plan.workers
    env = {"PREFECT_API_URL": api_url} if api_url else {}
    if runner.kind == "thread":
        return ThreadPoolTaskRunner(max_workers=workers)
    if runner.kind == "process":
        from skillpack.train import concurrent
        return ProcessPoolTaskRunner(max_workers=plan.workers, initializer=concurrent.init_worker,
                                     initargs=(plan.threads, plan.memory_fraction, env))
    if runner.kind == "dask":
        from prefect_dask import DaskTaskRunner

        if runner.address:
            return DaskTaskRunner(address=runner.address)
        # processes, not threads: torch's thread pool is per process. Dask's nanny also sets
        # OMP_NUM_THREADS=1 in each worker before it starts (distributed.nanny.pre-spawn-environ).
        return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                              cluster_kwargs={"n_workers": workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None, "env": env})
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise SystemExit("ablation.task_runner.kind=ray needs prefect-ray: pip install 'skillpack[ray]'") from None
    if runner.address:
        return RayTaskRunner(address=runner.address)
    return RayTaskRunner(init_kwargs={"num_cpus": workers, "runtime_env": {"env_vars": env}})


def torch_threads(runner: TaskRunnerParams) -> int | None:
    """Torch threads of each run: train.threads in the thread pool (None), 1 per process / Dask /
    Ray worker."""
    return runner.torch_threads or (None if runner.kind == "thread" else 1)


@flow(name="skillpack-ablation-runs")
def run_grid(spec_path: str, profile: str, todo: list[tuple[str, int]], parent_run_id: str,
             teachers: dict[str, str], torch_threads: int | None = None) -> list[dict]:
    """The (arm, seed) runs of one round as tasks on this flow's task runner (ablation sets it),
    with a progress bar over their completion."""
    from prefect.futures import as_completed
    from tqdm import tqdm

    # The task as the package names it: Dask / Ray workers import it by that name, and this
    # file may be running as __main__ (python -m) or as a file a deployment loaded.
    from flows.ablation import run_arm_seed

    futures = [run_arm_seed.with_options(task_run_name=f"{name}-seed{seed}").submit(
               spec_path, name, seed, profile, parent_run_id, teachers, torch_threads) for name, seed in todo]
    done = []
    with tqdm(total=len(futures), desc="runs", unit="run", mininterval=10) as bar:
        for future in as_completed(futures):
            done.append(future.result())
            bar.update()
    return done


INVOCATIONS = "invocations.jsonl"  # in the result store: when each ablation over it started


def log_invocation(store: Path, store_at_start: int) -> dict:
    """Append this invocation's start to the store's log, so that the cost of an ablation that
    was killed and resumed (even in another shell, days later) is the sum of its invocations."""
    import time

    entry = {"started": time.time(), "store_at_start": store_at_start, "git_commit": tracking.git_commit()}
    store.mkdir(parents=True, exist_ok=True)
    with open(store / INVOCATIONS, "a") as log:
        log.write(json.dumps(entry) + "\n")
    return entry


def invocations_since_empty(store: Path, wall_s: float, computed: int) -> list[dict]:
    """The invocations since the store was last empty, each with its wall time: the last one's
    as measured, an earlier one's up to the last result it stored (one killed mid-way wrote no
    figure of its own)."""
    entries = [json.loads(line) for line in (store / INVOCATIONS).read_text().splitlines() if line.strip()]
    empty = max((i for i, e in enumerate(entries) if e["store_at_start"] == 0), default=0)
    chain = entries[empty:]
    stamps = sorted(p.stat().st_mtime for p in store.glob("*.json"))
    for entry, following in zip(chain, chain[1:]):
        stored = [t for t in stamps if entry["started"] <= t < following["started"]]
        entry["wall_s"] = round(max(stored, default=entry["started"]) - entry["started"], 1)
        entry["computed_runs"] = len(stored)
    chain[-1].update(wall_s=round(wall_s, 1), computed_runs=computed)
    return chain


def write_cost(spec: ab.Spec, runs: dict, computed: int, wall_s: float, outputs: dict, path: Path,
               store: Path) -> dict:
    """benchmarks/results/ablation_cost.json: what the profile cost and what its intervals came
    to. `from_empty_store` and `wall_s` cover every invocation since the store was last empty
    (a killed ablation resumed is one ablation: invocations_since_empty)."""
    import platform
    import statistics

    from skillpack.io import write_json
    from skillpack.machine import describe as describe_machine

    tests = [t for t in outputs["tests"] if t["family"] == "main"]
    invocations = invocations_since_empty(store, wall_s, computed)
    cost = {"generated_by": _command_profile(spec), "profile": spec.profile, "spec": spec.name,
            "runs": len(runs), "computed_runs": computed, "cached_runs": len(runs) - computed,
            "from_empty_store": invocations[0]["store_at_start"] == 0,
            "wall_s": round(sum(i["wall_s"] for i in invocations), 1), "wall_s_last_invocation": round(wall_s, 1),
            "invocations": invocations,
            "seeds_median": statistics.median(t["n_seeds"] for t in tests) if tests else None,
            "halfwidth_median_points": round(statistics.median(t["halfwidth_points"] for t in tests), 3)
            if tests else None,
            "tests": len(outputs["tests"]), "machine": describe_machine(), "python": platform.python_version()}
    write_json(path, cost)
    return cost


def run_planned(spec: ab.Spec, where: str, run_batch) -> tuple[dict[tuple[str, int], dict], int]:
    """Every run the spec plans (ab.Spec.planned_runs: a fixed number of seeds per arm, declared
    in the spec before any run). `run_batch` runs a list of (arm, seed) on `where` (a task
    runner, as the log names it). The runs by (arm, seed), and how many were computed rather than
    read from the result store."""
    todo = spec.planned_runs()
    print(f"{len(todo)} runs on {where}")
    runs: dict[tuple[str, int], dict] = {}
    computed = 0
    for result in run_batch(todo):
        runs[(result["arm"], result["seed"])] = result
        computed += not result.get("cached")
    print(f"{len(runs)} runs, {len(runs) - computed} from the result store")
    return runs, computed


@flow(name="skillpack-ablation", log_prints=True)
def ablation(spec_path: str = "ablations/default.yaml", quick: bool = False, task_runner: dict | None = None,
             profile: str | None = None) -> dict:
    """The ablation of `spec_path` under `profile` (quick | cpu | gpu; `quick` is the same as
    profile quick): every arm on the seeds the spec declares. `task_runner` overrides params.yaml's
    ablation.task_runner for this run ({"kind": "dask", "workers": 4} or {"kind": "dask",
    "address": "tcp://..."})."""
    import time

    import mlflow

    from skillpack.config import load_params
    from skillpack.evidence.claims import load_claims
    from skillpack.evidence.report import write_ablation_reports

    profile = profile or ("quick" if quick else "cpu")
    spec = ab.load_spec(spec_path, profile=profile)
    runner = runner_params(task_runner)
    claims_doc = load_claims()
    tracking.setup("skillpack")
    started = time.perf_counter()
    with mlflow.start_run(run_name=f"ablation:{spec.name}:{profile}",
                          parent_run_id=os.environ.get(tracking.PARENT_ENV) or None,
                          tags={"stage": "ablation", "spec": spec.name, "profile": profile,
                                "git_commit": tracking.git_commit()}) as parent:
        store_at_start = len(list((RESULTS / spec.name).glob("*.json")))
        log_invocation(RESULTS / spec.name, store_at_start)  # before the teachers: their training is part of the cost
        teachers = {name: train_teacher(spec_path, name, profile) for name in spec.teachers}
        device = load_params().runtime.device
        plan = concurrency_plan(runner, device)  # on CUDA: reads the free GPU memory once
        api_url = str(FlowRunContext.get().client.api_url)  # the server this flow reports to (maybe temporary)
        grid = run_grid.with_options(task_runner=build_task_runner(runner, api_url, device, plan))
        where = (f"the {runner.kind} task runner ({runner.address or f'{plan.workers} workers'})"
                 + (f": {plan.describe()}" if runner.kind == "process" else ""))
        runs, computed = run_planned(spec, where, lambda todo: grid(
            spec_path, profile, todo, parent.info.run_id, teachers, torch_threads(runner)))
        outputs = write_ablation_reports(spec, list(runs.values()), REPORTS, command=_command(spec_path, profile),
                                         benchmarks=load_benchmark_results(), claims_doc=claims_doc)
        if profile == "cpu":
            cost = write_cost(spec, runs, computed, time.perf_counter() - started, outputs, ABLATION_COST,
                              RESULTS / spec.name)
            mlflow.log_metrics({k: v for k, v in cost.items() if isinstance(v, (int, float)) and v is not None
                                and not isinstance(v, bool)})
        for path in outputs["files"]:
            tracking.log_artifact(path, "ablation")
        create_markdown_artifact(key=f"ablation-{spec.name}".lower().replace("_", "-"),
                                 markdown=Path(outputs["markdown"]).read_text(),
                                 description=f"skillpack ablation {spec.name} ({profile})")
    return outputs


ABLATION_COST = Path("benchmarks/results/ablation_cost.json")


def _command_profile(spec: ab.Spec) -> str:
    return "make ablate" if spec.profile == "cpu" else f"python -m flows.ablation <spec> --profile {spec.profile}"


def _command(spec_path: str, profile: str) -> str:
    return f"python -m flows.ablation {spec_path}" + (f" --profile {profile}" if profile != "cpu" else "")


BENCHMARK_RESULTS = Path("benchmarks/results")
# the results the claims report reads
CLAIM_BENCHMARKS = ("cleaning", "train_speed", "time_to_accuracy", "serve_load", "label_efficiency")


def load_benchmark_results(folder: Path = BENCHMARK_RESULTS) -> dict[str, dict]:
    """The benchmark results the claims report reads, by benchmark name, where measured."""
    import json

    return {name: json.loads((folder / f"{name}.json").read_text()) for name in CLAIM_BENCHMARKS
            if (folder / f"{name}.json").is_file()}


def render_reports(spec_path: str = "ablations/default.yaml", profile: str = "cpu") -> dict:
    """Re-render the ablation and claims reports from the runs stored in the ablation's JSON
    report and the benchmark results: no training, no MLflow, no Prefect."""
    import json

    from skillpack.evidence.report import report_paths, write_ablation_reports

    spec = ab.load_spec(spec_path, profile=profile)
    command = _command(spec_path, profile)
    stored = json.loads(report_paths(REPORTS, spec, command)["json"].read_text())
    return write_ablation_reports(spec, stored["runs"], REPORTS, command=stored.get("command", command),
                                  benchmarks=load_benchmark_results(), rendered_by=f"{command} --report-only")


PER_INVOCATION = ("cached",)  # labels a run's result gets from the invocation that returned it, not stored


def restore_store(spec_path: str = "ablations/default.yaml", profile: str = "cpu", reports: Path = REPORTS,
                  results: Path = RESULTS) -> tuple[Path, dict[str, int]]:
    """Write every run of the profile's committed report (reports/ablation.json: `runs`, each
    with its `key`) into the result store, skipping keys already stored: the store is not in
    git, and a fresh clone's ablation then computes only the runs whose keys are new. Returns
    the store's folder and how many runs were restored, already stored, or had no key (all 0
    where there is no report)."""
    import json

    from skillpack.evidence.report import report_paths

    spec = ab.load_spec(spec_path, profile=profile)
    path = report_paths(reports, spec, _command(spec_path, profile))["json"]
    store = ab.ResultStore(results / spec.name)
    counts = {"restored": 0, "already_stored": 0, "without_key": 0}
    if not path.is_file():  # nothing to restore: the ablation computes every run
        return store.root, counts
    report = json.loads(path.read_text())
    if report.get("spec") != spec.name:
        raise SystemExit(f"{path}: runs of spec {report.get('spec')!r}, not {spec.name!r}")
    for run in report["runs"]:
        key = run.get("key")
        if not key:
            counts["without_key"] += 1
        elif store.get(key) is not None:
            counts["already_stored"] += 1
        else:
            store.put(key, {k: v for k, v in run.items() if k not in PER_INVOCATION})
            counts["restored"] += 1
    return store.root, counts


def _workers(value: str) -> int | str:
    return value if value == "auto" else int(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", nargs="?", default="ablations/default.yaml")
    parser.add_argument("--profile", choices=list(ab.PROFILES), default=None,
                        help="quick (CI, minutes), cpu (the default ablation), gpu (full data, article budgets)")
    parser.add_argument("--quick", action="store_true", help="the same as --profile quick")
    parser.add_argument("--task-runner", choices=["thread", "process", "dask", "ray"],
                        help="this run's ablation.task_runner.kind (default: params.yaml's)")
    parser.add_argument("--workers", type=_workers,
                        help="runs at once, or auto (process: from free GPU memory; threads x runs <= cores) "
                             "(default: params.yaml's)")
    parser.add_argument("--address", help="dask / ray: a running cluster's address")
    parser.add_argument("--report-only", action="store_true",
                        help="re-render the reports from the stored runs of the last ablation (no training)")
    parser.add_argument("--restore-store", action="store_true",
                        help="write the runs of the committed report (reports/ablation.json) into the result store, "
                             "skipping keys already stored, then stop: the next ablation computes only new runs")
    args = parser.parse_args(argv)
    if args.restore_store:
        root, counts = restore_store(args.spec, args.profile or ("quick" if args.quick else "cpu"))
        print(f"result store {root}: " + ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in counts.items()))
        return
    if args.report_only:
        outputs = render_reports(args.spec, args.profile or ("quick" if args.quick else "cpu"))
        print("\n".join(str(path) for path in outputs["files"]))
        return
    overrides = {k: v for k, v in (("kind", args.task_runner), ("workers", args.workers), ("address", args.address))
                 if v is not None}
    ablation(spec_path=args.spec, quick=args.quick, task_runner=overrides or None, profile=args.profile)


if __name__ == "__main__":
    main()
