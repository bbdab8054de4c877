"""The Prefect pipeline flow on the tiny real subset (the tiny_repo fixture runs it, as `make
run` does): stages nest under one MLflow parent run, and the final metrics are a Prefect table
artifact."""
import json

from conftest import flow_result
from mlflow import MlflowClient


def test_pipeline_flow_nests_stage_runs_and_publishes_metrics(tiny_repo, prefect_server):
    from prefect.artifacts import Artifact

    from flows.pipeline import ARTIFACT_KEY, STAGES

    result = flow_result(tiny_repo)
    parent_id = result["parent_run_id"]
    metrics = json.loads((tiny_repo / "reports" / "metrics.json").read_text())
    assert result["test_accuracy"] == metrics["test_accuracy"]
    assert list(result["stage_seconds"]) == list(STAGES) and all(s > 0 for s in result["stage_seconds"].values())

    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("skillpack")
    children = client.search_runs([experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    assert {r.data.tags["stage"] for r in children} == {"prepare", "validate", "oof", "clean", "train", "evaluate",
                                                        "compress", "export"}  # check_params and alerts log no run
    assert {r.data.tags["skillpack.repro_id"] for r in children} == {parent_id}  # one repro, one id
    assert client.get_run(parent_id).info.run_name.startswith("pipeline ")
    assert client.get_run(parent_id).data.metrics["test_accuracy"] == metrics["test_accuracy"]

    artifact = Artifact.get(ARTIFACT_KEY)
    assert artifact is not None and artifact.type == "table"
    table = artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data)
    rows = {row["metric"]: row["value"] for row in table}
    assert rows["test_accuracy"] == metrics["test_accuracy"]
