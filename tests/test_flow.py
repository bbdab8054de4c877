"""The Prefect pipeline flow on the tiny real subset: stages nest under one MLflow parent run,
and the final metrics are a Prefect table artifact."""
import json

from mlflow import MlflowClient

from conftest import project_env


def test_pipeline_flow_nests_stage_runs_and_publishes_metrics(tiny_repo, prefect_server, monkeypatch):
    from prefect.artifacts import Artifact

    from flows.pipeline import ARTIFACT_KEY, pipeline

    for key, value in project_env(tiny_repo).items():
        monkeypatch.setenv(key, value)
    result = pipeline(repo=str(tiny_repo), force=True)
    parent_id = result["parent_run_id"]
    metrics = json.loads((tiny_repo / "reports" / "metrics.json").read_text())
    assert result["metrics"]["test_accuracy"] == metrics["test_accuracy"]

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
