"""Serve the scheduled deployments of prefect.yaml from one long-running process.

    python -m flows.deployments                    # every deployment of prefect.yaml
    python -m flows.deployments --only nightly     # some of them

prefect.yaml stays the single place where names, entrypoints, parameters and schedules are
written: `prefect deploy --all` registers the same deployments for a work pool instead.
The Prefect server (PREFECT_API_URL) creates the scheduled runs; this process executes them.
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


def runner_deployment(spec: dict):
    from prefect.flows import load_flow_from_entrypoint
    from prefect.schedules import Cron

    flow = load_flow_from_entrypoint(str(PREFECT_YAML.parent / spec["entrypoint"]))
    schedules = [Cron(s["cron"], timezone=s.get("timezone", "UTC")) for s in spec.get("schedules", [])]
    return flow.to_deployment(name=spec["name"], description=spec.get("description"), tags=spec.get("tags"),
                              parameters=spec.get("parameters") or {}, schedules=schedules)


def main(argv: list[str] | None = None) -> None:
    from prefect import serve

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", help="deployment names from prefect.yaml")
    args = parser.parse_args(argv)
    serve(*[runner_deployment(spec) for spec in deployment_specs(only=args.only)])


if __name__ == "__main__":
    main()
