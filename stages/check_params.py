"""check_params: the DAG's first stage. It validates params.yaml (every section, model names,
policy options) and writes a constant marker, so that a bad edit stops `dvc repro` here -
before DVC removes the outputs of any stage the edit touches - and a good edit re-runs only
the stages whose own params changed (the marker's content never changes)."""
from __future__ import annotations

from stages.common import params_from_argv, run_stage

MARKER_TEXT = "params.yaml is valid\n"
READS_ALL_PARAMS = True  # it validates every section (stages/dag.py declares all of params.yaml)


def main() -> int:
    from skillpack import paths
    from skillpack.io import write_text

    params_from_argv()
    write_text(paths.PARAMS_CHECK, MARKER_TEXT)
    print(f"[check_params] {paths.PARAMS}: valid")
    return 0


if __name__ == "__main__":
    run_stage(main)
