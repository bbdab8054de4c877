"""One module per DVC stage: `python -m stages.<name>`. Stages do not import Prefect."""

NAMES = ("check_params", "prepare", "validate", "oof", "clean", "train", "evaluate", "compress", "export", "alerts")


def add_stage_command(sub) -> None:
    """`skillpack stage <name> [key=value ...]` (entry point of the group skillpack.commands)."""
    p = sub.add_parser("stage", help="run one pipeline stage with params overrides")
    p.add_argument("name", choices=NAMES)
    p.add_argument("overrides", nargs="*", help="dotted params overrides, e.g. train.epochs=3")
    p.set_defaults(fn=_run_stage)


def _run_stage(args) -> int:
    import runpy
    import sys

    sys.argv = [f"stages.{args.name}", *args.overrides]
    runpy.run_module(f"stages.{args.name}", run_name="__main__")
    return 0
