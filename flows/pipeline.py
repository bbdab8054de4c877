"""The pipeline flow: `dvc repro <stage>` for each stage in order, under one MLflow parent run.

    python -m flows.pipeline            # on Prefect's ephemeral server, no set-up
    python -m flows.pipeline --force    # re-run every stage even when DVC says it is up to date

The stages' own MLflow runs nest under the parent run through MLFLOW_PARENT_RUN_ID, and the
final metrics are published as a Prefect table artifact (key `pipeline-metrics`).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.logging.handlers import APILogHandler

from flows.stream import run_streaming
from skillpack import model_registry, paths, tracking
from stages import NAMES as STAGES

ARTIFACT_KEY = "pipeline-metrics"
RESULT_MARKER = "pipeline-result "   # the last line of `python -m flows.pipeline`: this, then JSON (benchmarks read it)
# Stages whose failure is a verdict on the inputs (bad params, data failing its expectations):
# retrying cannot help. The others (training, MLflow/SQLite writes, export) are retried.
DETERMINISTIC = {"check_params", "validate"}


@task(name="dvc-repro", task_run_name="dvc-repro-{stage}")
def repro_stage(stage: str, repo: str, env: dict, force: bool = False) -> str:
    """Run one DVC stage (upstream stages are already up to date, so this runs just `stage`), its
    output live on the terminal and, as throttled lines, in the flow run's logs."""
    cmd = ["dvc", "repro", *(["--force", "--single-item"] if force else []), stage]
    logger = get_run_logger()
    logger.info("%s", " ".join(cmd))
    return run_streaming(cmd, api_only(logger), cwd=repo, env=env)


def api_only(run_logger: logging.LoggerAdapter) -> logging.LoggerAdapter:
    """`run_logger` minus Prefect's console echo: its records go to the run's logs in the API only.
    The terminal already shows the stage's output; an echo would print each line twice and break
    into a progress bar's line as it redraws."""
    logger = logging.getLogger("skillpack.stage_output")
    if not logger.handlers:
        logger.addHandler(APILogHandler())
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return logging.LoggerAdapter(logger, run_logger.extra)


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


@task(name="registry-sync")
def sync_registry(repo: Path) -> dict:
    """Point registry.aliases at their versions (skillpack.model_registry.sync_aliases): idempotent, so
    the aliases follow a rename in params' registry section, which re-runs no stage."""
    from skillpack.config import load_section

    return model_registry.sync_repo_aliases(repo, load_section(repo / paths.PARAMS, "registry"))


@flow(name="skillpack-pipeline", log_prints=True)
def pipeline(repo: str = ".", stages: list[str] | None = None, force: bool = False) -> dict:
    """Every stage (default: all, in order; `dvc repro <stage>` each) under one MLflow parent run in params'
    registry.experiment, then the registry's aliases synced; returns the parent run id, the
    metrics and each stage's wall seconds."""
    import time

    from skillpack.config import load_section

    stages = list(STAGES) if stages is None else stages
    repo_path = Path(repo).resolve()
    env = {**os.environ, "SKILLPACK_ROOT": str(repo_path)}
    os.environ["SKILLPACK_ROOT"] = str(repo_path)
    env["MLFLOW_TRACKING_URI"] = tracking.tracking_uri()
    import mlflow

    tracking.setup(load_section(repo_path / paths.PARAMS, "registry").experiment)
    seconds = {}
    with mlflow.start_run(run_name=f"pipeline {run_label()}",
                          tags={"stage": "pipeline", "git_commit": tracking.git_commit(repo_path)}) as parent:
        env[tracking.PARENT_ENV] = env[tracking.REPRO_ENV] = parent.info.run_id
        mlflow.set_tag(tracking.REPRO_TAG, parent.info.run_id)
        for stage in stages:
            repro = repro_stage if stage in DETERMINISTIC else repro_stage.with_options(retries=2, retry_delay_seconds=30)
            t0 = time.perf_counter()
            repro(stage, str(repo_path), env, force)
            seconds[stage] = round(time.perf_counter() - t0, 1)
        aliases = sync_registry(repo_path)
        metrics = read_json(repo_path / paths.METRICS)
        tracking.log_metrics({f"stage_seconds.{stage}": s for stage, s in seconds.items()})
        if metrics:
            tracking.log_metrics({k: v for k, v in metrics.items() if not isinstance(v, (dict, bool))})
            create_table_artifact(key=ARTIFACT_KEY, table=metrics_table(metrics, read_json(repo_path / paths.PER_CLASS)),
                                  description=f"skillpack pipeline metrics (MLflow parent run {parent.info.run_id})")
    return {"parent_run_id": parent.info.run_id, "metrics": metrics, "stage_seconds": seconds, "aliases": aliases}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".")
    parser.add_argument("--force", action="store_true", help="re-run stages DVC considers up to date")
    parser.add_argument("--stages", nargs="+", default=list(STAGES))
    args = parser.parse_args(argv)
    result = pipeline(repo=args.repo, stages=args.stages, force=args.force)
    print(RESULT_MARKER + json.dumps({"parent_run_id": result["parent_run_id"],
                                      "test_accuracy": result["metrics"].get("test_accuracy"),
                                      "stage_seconds": result["stage_seconds"]}))


if __name__ == "__main__":
    main()
