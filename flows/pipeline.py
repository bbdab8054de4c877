"""The pipeline flow: `dvc repro <stage>` for each stage in order, under one MLflow parent run.

    python -m flows.pipeline            # on Prefect's ephemeral server, no set-up
    python -m flows.pipeline --force    # re-run every stage even when DVC says it is up to date

The stages' own MLflow runs nest under the parent run through MLFLOW_PARENT_RUN_ID, and the
final metrics are published as a Prefect table artifact (key `pipeline-metrics`).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

import skillpack  # noqa: F401  (environment defaults first)
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from skillpack import tracking

from skillpack import paths
from stages import NAMES as STAGES

ARTIFACT_KEY = "pipeline-metrics"
# Stages whose failure is a verdict on the inputs (bad params, data failing its expectations):
# retrying cannot help. The others (training, MLflow/SQLite writes, export) are retried.
DETERMINISTIC = {"check_params", "validate"}


@task(name="dvc-repro")
def repro_stage(stage: str, repo: str, env: dict, force: bool = False) -> str:
    """Run one DVC stage (upstream stages are already up to date, so this runs just `stage`)."""
    cmd = ["dvc", "repro", *(["--force", "--single-item"] if force else []), stage]
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    logger = get_run_logger()
    tail = (proc.stdout + proc.stderr)[-4000:]
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}:\n{tail}")
    logger.info("%s\n%s", " ".join(cmd), tail[-1500:])
    return tail


def metrics_table(metrics: dict, per_class: dict) -> list[dict]:
    rows = [{"metric": k, "value": v} for k, v in metrics.items() if not isinstance(v, dict)]
    rows += [{"metric": f"f1/{name}", "value": round(m["f1"], 4)} for name, m in per_class.items()]
    return rows


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def run_label() -> str:
    """The Prefect flow run's name when there is one (MLflow parent run and Prefect run match)."""
    from prefect.runtime import flow_run

    return flow_run.name or "local"


@flow(name="skillpack-pipeline", log_prints=True)
def pipeline(repo: str = ".", stages: list[str] = list(STAGES), force: bool = False,
             experiment: str = "skillpack") -> dict:
    repo_path = Path(repo).resolve()
    env = {**os.environ, "SKILLPACK_ROOT": str(repo_path)}
    os.environ["SKILLPACK_ROOT"] = str(repo_path)
    env["MLFLOW_TRACKING_URI"] = tracking.tracking_uri()
    import mlflow

    tracking.setup(experiment)
    with mlflow.start_run(run_name=f"pipeline {run_label()}",
                          tags={"stage": "pipeline", "git_commit": tracking.git_commit(repo_path)}) as parent:
        env[tracking.PARENT_ENV] = env[tracking.REPRO_ENV] = parent.info.run_id
        mlflow.set_tag(tracking.REPRO_TAG, parent.info.run_id)
        for stage in stages:
            repro = repro_stage if stage in DETERMINISTIC else repro_stage.with_options(retries=2, retry_delay_seconds=30)
            repro(stage, str(repo_path), env, force)
        metrics = read_json(repo_path / paths.METRICS)
        if metrics:
            tracking.log_metrics({k: v for k, v in metrics.items() if not isinstance(v, (dict, bool))})
            create_table_artifact(key=ARTIFACT_KEY, table=metrics_table(metrics, read_json(repo_path / paths.PER_CLASS)),
                                  description=f"skillpack pipeline metrics (MLflow parent run {parent.info.run_id})")
    return {"parent_run_id": parent.info.run_id, "metrics": metrics}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".")
    parser.add_argument("--force", action="store_true", help="re-run stages DVC considers up to date")
    parser.add_argument("--stages", nargs="+", default=list(STAGES))
    args = parser.parse_args(argv)
    result = pipeline(repo=args.repo, stages=args.stages, force=args.force)
    print(json.dumps({"parent_run_id": result["parent_run_id"],
                      "test_accuracy": result["metrics"].get("test_accuracy")}))


if __name__ == "__main__":
    main()
