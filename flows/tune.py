"""The tune flow: `skillpack tune` as a Prefect flow run - N worker processes on this machine
sharing the study of params tune (its journal file, or the RDB params tune.storage names), each
a task; the last one to end writes the best trial into recipes.yaml. The outcome (the best
trial and its `dvc exp run` command) becomes the Prefect artifact `tune-result`. With --nas
(nas=True) the workers run the architecture search of params tune.nas instead, and the artifact
is its Pareto front and the chosen architecture.

    python -m flows.tune --workers 2 train.epochs=3     # what the on-demand deployment `search` runs
    python -m flows.tune --nas tune.nas.n_trials=20     # the architecture search
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact


@task(name="tune-worker")
def tune_worker(repo: str, worker: int, overrides: list[str], nas: bool = False) -> str:
    """One worker, a process of its own (torch's seeds and threads are per process): its output."""
    proc = subprocess.run([sys.executable, "-m", "skillpack.cli", "tune", "--worker", str(worker),
                           *(["--nas"] if nas else []), *overrides], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"tune worker {worker} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def best_of(repo: Path, overrides: list[str]) -> dict:
    import optuna

    from skillpack.config import load_params
    from skillpack.train.tune_study import counts, open_storage

    cfg = load_params(repo / "params.yaml", overrides).tune
    study = optuna.load_study(study_name=cfg.study, storage=open_storage(cfg, repo / "tune"))
    best = study.best_trial
    return {"study": cfg.study, "trials": counts(study), "best_trial": best.number, "best_val_acc": best.value,
            "params": best.params, "recipe": cfg.recipe}


def front_of(repo: Path, overrides: list[str]) -> dict:
    import optuna

    from skillpack.config import load_params
    from skillpack.deploy.architecture_search import choose, front_table, pareto_front, study_settings
    from skillpack.train.tune_study import counts, open_storage

    cfg = study_settings(load_params(repo / "params.yaml", overrides).tune)
    study = optuna.load_study(study_name=cfg.study, storage=open_storage(cfg, repo / "tune"))
    front = pareto_front(study)
    chosen = choose(front, cfg.nas.max_latency_ms)
    return {"study": cfg.study, "trials": counts(study), "front": front, "chosen": chosen,
            "table": front_table(front, chosen), "recipe": cfg.nas.recipe}


def nas_artifact(result: dict, command: str) -> None:
    chosen = result["chosen"]
    head = f"chosen {chosen['name']}, val_acc {chosen['val_acc']:.4f}" if chosen else "no point under the latency bound"
    create_markdown_artifact(key="tune-result", markdown=f"# Architecture search {result['study']}: {head}\n\n"
                             f"{result['table']}\n\n`{command}`\n\nrecipe `{result['recipe']}` in recipes.yaml; "
                             f"trials by state: {result['trials']}", description=f"study {result['study']}")


@flow(name="skillpack-tune", log_prints=True)
def tune(repo: str = ".", workers: int = 1, overrides: list[str] | None = None, nas: bool = False) -> dict:
    root = Path(repo).resolve()
    outputs = [f.result() for f in [tune_worker.submit(str(root), k, list(overrides or []), nas)
                                    for k in range(workers)]]
    command = next((line for out in outputs for line in out.splitlines() if line.startswith("dvc exp run")), "")
    if nas:
        result = {**front_of(root, list(overrides or [])), "dvc_command": command}
        nas_artifact(result, command)
        print(result["table"], command, sep="\n")
        return result
    result = {**best_of(root, list(overrides or [])), "dvc_command": command}
    create_markdown_artifact(key="tune-result", markdown=f"# Tune: trial {result['best_trial']} of study "
                             f"{result['study']}, val_acc {result['best_val_acc']:.4f}\n\n`{command}`\n\n"
                             f"recipe `{result['recipe']}` in recipes.yaml; trials by state: {result['trials']}",
                             description=f"study {result['study']}")
    print(command)
    return result


def main(argv: list[str] | None = None) -> None:
    import json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--nas", action="store_true", help="the architecture search of params tune.nas")
    parser.add_argument("overrides", nargs="*", help="params overrides, e.g. tune.n_trials=40 train.epochs=3")
    args = parser.parse_args(argv)
    print(json.dumps(tune(repo=args.repo, workers=args.workers, overrides=args.overrides, nas=args.nas), default=str))


if __name__ == "__main__":
    main()
