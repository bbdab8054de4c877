"""Prefect flows: they orchestrate the DVC stages; the stages themselves never import Prefect.
Each flow module is an entry point (`python -m flows.<name>`, or a Prefect worker importing it),
and Prefect reads its settings when it is imported: the process is configured here
(skillpack.runtime), before any flow module imports Prefect or torch."""
from skillpack.runtime import configure

configure()


def add_pipeline_command(sub) -> None:
    """`skillpack pipeline [--force]` (entry point of the group skillpack.commands; Prefect is
    imported only when the command runs)."""
    p = sub.add_parser("pipeline", help="run the Prefect pipeline flow")
    p.add_argument("--force", action="store_true")
    p.set_defaults(fn=_run_pipeline)


def _run_pipeline(args) -> int:
    from flows.pipeline import main

    main(["--force"] if args.force else [])
    return 0
