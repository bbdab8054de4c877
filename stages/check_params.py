"""check_params: the DAG's first stage. It validates params.yaml (every section, model names,
policy options) and writes a constant marker, so that a bad edit stops `dvc repro` here -
before DVC removes the outputs of any stage the edit touches - and a good edit re-runs only
the stages whose own params changed (the marker's content never changes)."""
from __future__ import annotations

from stages.common import params_from_argv, run_stage

MARKER_TEXT = "params.yaml is valid\n"
READS_ALL_PARAMS = True  # it validates every section (stages/dag.py declares every tracked one)


def require_data_root(data) -> None:
    """prepare depends on data.root in dvc.yaml: say what to do when it is missing."""
    from pathlib import Path

    from skillpack.config import ParamsError

    if not Path(data.root).exists():
        fetch = f"`skillpack fetch {data.source} data/raw` and data.root: data/raw"
        hint = {"fashion_mnist": f"`apt-get install dataset-fashion-mnist` (make data) or {fetch}",
                "imagefolder": "point it at a folder of images (README, Bring your own images)"}.get(data.source, fetch)
        raise ParamsError(f"params.yaml data.root: {data.root} does not exist: {hint}")


def main() -> int:
    from skillpack import paths
    from skillpack.io import write_text

    params = params_from_argv()
    require_data_root(params.data)
    write_text(paths.PARAMS_CHECK, MARKER_TEXT)
    print(f"[check_params] {paths.PARAMS}: valid")
    return 0


if __name__ == "__main__":
    run_stage(main)
