"""Serve the scheduled deployments of prefect.yaml from one long-running process.

    python -m flows.deployments                    # every deployment of prefect.yaml
    python -m flows.deployments --only nightly     # some of them

prefect.yaml stays the single place where names, entrypoints, parameters and schedules are
written: `prefect deploy --all` registers the same deployments for a work pool instead.
The Prefect server (PREFECT_API_URL) creates the scheduled runs; this process executes them.
Served deployments are named `<name>-served`: Prefect pauses a served deployment's schedules
when the process stops, and a distinct name keeps that from pausing the work pool's ones.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import yaml

import skillpack  # noqa: F401  (environment defaults first)

PREFECT_YAML = Path(__file__).resolve().parent.parent / "prefect.yaml"


def deployment_specs(path: Path = PREFECT_YAML, only: list[str] | None = None) -> list[dict]:
    specs = yaml.safe_load(path.read_text())["deployments"]
    unknown = set(only or []) - {s["name"] for s in specs}
    if unknown:
        raise SystemExit(f"{path}: no deployment named {sorted(unknown)}; known: {[s['name'] for s in specs]}")
    return [s for s in specs if not only or s["name"] in only]


SERVED_SUFFIX = "-served"


def schedule(spec: dict):
    """A prefect.yaml schedule entry (cron or interval seconds) as a Prefect schedule."""
    from prefect.schedules import Cron, Interval

    if "cron" in spec:
        return Cron(spec["cron"], timezone=spec.get("timezone", "UTC"))
    return Interval(spec["interval"], timezone=spec.get("timezone", "UTC"))


def runner_deployment(spec: dict):
    from prefect.flows import load_flow_from_entrypoint

    flow = load_flow_from_entrypoint(str(PREFECT_YAML.parent / spec["entrypoint"]))
    return flow.to_deployment(name=spec["name"] + SERVED_SUFFIX, description=spec.get("description"),
                              tags=spec.get("tags"), parameters=spec.get("parameters") or {},
                              schedules=[schedule(s) for s in spec.get("schedules") or []])


def main(argv: list[str] | None = None) -> None:
    from prefect import serve

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", help="deployment names from prefect.yaml")
    args = parser.parse_args(argv)
    serve(*[runner_deployment(spec) for spec in deployment_specs(only=args.only)])


if __name__ == "__main__":
    main()
