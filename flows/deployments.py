"""Serve the scheduled deployments of prefect.yaml from one long-running process.

    python -m flows.deployments                    # every deployment of prefect.yaml
    python -m flows.deployments --only nightly     # some of them
    python -m flows.deployments --automations-only # only the automation that crashes zombie runs

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


# A flow run whose process dies (a killed worker, a lost machine) would stay Running forever:
# its flow runs send a heartbeat every HEARTBEAT_S seconds (PREFECT_FLOWS_HEARTBEAT_FREQUENCY in
# prefect.yaml's job variables; Prefect's minimum is 30), and this automation marks a run Crashed
# when none came for ZOMBIE_AFTER_S, as Prefect's docs ("Detect zombie flows") describe. A rerun of
# the deployment then re-runs only the stages DVC finds out of date.
HEARTBEAT_S = 30
ZOMBIE_AFTER_S = 90
ZOMBIE_AUTOMATION = "skillpack: crash zombie flow runs"


def ensure_zombie_automation() -> str:
    """Create the automation on the server PREFECT_API_URL names, once (idempotent): its id."""
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    try:
        return str(Automation.read(name=ZOMBIE_AUTOMATION).id)
    except ValueError:   # none by that name yet
        pass
    automation = Automation(
        name=ZOMBIE_AUTOMATION, description=f"no heartbeat for {ZOMBIE_AFTER_S} s: the flow run's process is gone",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
            within=timedelta(seconds=ZOMBIE_AFTER_S)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=f"no heartbeat for {ZOMBIE_AFTER_S} s")])
    return str(automation.create().id)


def main(argv: list[str] | None = None) -> None:
    from prefect import serve

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", help="deployment names from prefect.yaml")
    parser.add_argument("--automations-only", action="store_true",
                        help="create the zombie-run automation on the server and exit (after `prefect deploy --all`)")
    args = parser.parse_args(argv)
    print(f"automation {ZOMBIE_AUTOMATION!r}: {ensure_zombie_automation()}", flush=True)
    if args.automations_only:
        return
    serve(*[runner_deployment(spec) for spec in deployment_specs(only=args.only)])


if __name__ == "__main__":
    main()
