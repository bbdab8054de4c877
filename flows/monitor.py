"""The monitor flow: read the service's production signals from Prometheus's HTTP API, judge
each against params.yaml `monitor:` (the same thresholds and PromQL as the generated alert
rules, skillpack.deploy.monitoring.signals), publish the readings as a Prefect table artifact
(`monitor-readings`) and a Prefect event, and, when rolling accuracy is below its threshold,
start the retrain deployment (params monitor.retrain_deployment) at once.

    python -m flows.monitor                                  # Prometheus at params monitor.prometheus_url
    python -m flows.monitor --prometheus http://127.0.0.1:9090
    SKILLPACK_PROMETHEUS_URL=http://prometheus:9090 python -m flows.monitor   # between the two

Deployed by prefect.yaml as `skillpack-monitor/every-15-minutes`.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from skillpack import paths

ARTIFACT_KEY = "monitor-readings"
PROMETHEUS_ENV = "SKILLPACK_PROMETHEUS_URL"  # where Prometheus is not on 127.0.0.1 (docker/compose.yaml sets it)
ACCURACY = "accuracy_min"


def query_vector(prometheus_url: str, expr: str) -> list[float]:
    """The values of an instant query's result vector (empty when no series matches)."""
    import httpx

    url = f"{prometheus_url.rstrip('/')}/api/v1/query"
    try:
        response = httpx.get(url, params={"query": expr}, timeout=10)
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, ValueError) as err:
        raise RuntimeError(f"Prometheus at {prometheus_url} did not answer the query {expr!r}: {err}") from err
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus at {prometheus_url} refused {expr!r}: {body.get('error')}")
    return [float(sample["value"][1]) for sample in body["data"]["result"]]


def reading(signal, prometheus_url: str) -> dict:
    """One signal's value (the worst across series) and whether it breaches its threshold.
    A signal with no data, or whose guard does not hold (too few labels), is not judged."""
    values = query_vector(prometheus_url, signal.value)
    value = (min(values) if signal.op == "<" else max(values)) if values else None
    judged = value is not None and (not signal.guard or bool(query_vector(prometheus_url, signal.guard)))
    return {"signal": signal.name, "alert": signal.alert, "value": value, "rule": f"{signal.op} {signal.threshold}",
            "judged": judged, "breached": judged and signal.breached(value)}


@task(name="read-signals", retries=2, retry_delay_seconds=10)
def read_signals(prometheus_url: str, monitor) -> list[dict]:
    from skillpack.deploy.monitoring import signals

    return [reading(signal, prometheus_url) for signal in signals(monitor)]


@task(name="trigger-retrain")
def trigger_retrain(deployment: str, reason: str) -> str:
    """Create a flow run of the retrain deployment now (does not wait for it): its id."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    try:
        run = run_deployment(deployment, timeout=0, tags=["triggered-by-monitor"], as_subflow=False)
    except ObjectNotFound as err:
        raise RuntimeError(f"{reason}, but the deployment {deployment!r} is not registered: "
                           "run `prefect --no-prompt deploy --all` (docs/deployment.md, Scheduled runs)") from err
    return str(run.id)


def emit_readings(job: str, rows: list[dict]) -> None:
    from prefect.events import emit_event

    breached = [r["signal"] for r in rows if r["breached"]]
    emit_event(event="skillpack.monitor.breach" if breached else "skillpack.monitor.ok",
               resource={"prefect.resource.id": f"skillpack.service.{job}", "prefect.resource.name": job},
               payload={"breached": breached, "readings": rows})


@flow(name="skillpack-monitor", log_prints=True)
def monitor(repo: str = ".", prometheus_url: str | None = None) -> dict:
    from skillpack.config import load_params

    params = load_params(Path(repo).resolve() / paths.PARAMS).monitor
    url = prometheus_url or os.environ.get(PROMETHEUS_ENV) or params.prometheus_url
    rows = read_signals(url, params)
    emit_readings(params.job, rows)
    create_table_artifact(key=ARTIFACT_KEY, table=rows, description=f"skillpack service `{params.job}` from {url}")
    accuracy = next(r for r in rows if r["signal"] == ACCURACY)
    retrain_run = None
    if accuracy["breached"]:
        reason = f"rolling accuracy {accuracy['value']:.4f} is below monitor.accuracy_min {accuracy['rule']}"
        retrain_run = trigger_retrain(params.retrain_deployment, reason)
        get_run_logger().warning("%s: started %s (flow run %s)", reason, params.retrain_deployment, retrain_run)
    print(", ".join(f"{r['signal']}={r['value']}{' BREACHED' if r['breached'] else ''}" for r in rows))
    return {"readings": rows, "breached": [r["signal"] for r in rows if r["breached"]], "retrain_flow_run": retrain_run}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".")
    parser.add_argument("--prometheus", default=None, help="Prometheus base URL (default: params monitor.prometheus_url)")
    args = parser.parse_args(argv)
    print(json.dumps(monitor(repo=args.repo, prometheus_url=args.prometheus), default=str))


if __name__ == "__main__":
    main()
