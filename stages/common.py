"""What every stage shares: params and a clear one-line error instead of a traceback.
Artifact paths live in skillpack/paths.py."""
from __future__ import annotations

import sys

from skillpack.config import Params, load_params
from skillpack.paths import PARAMS
from skillpack.runtime import TRAINING_OMP_WAIT_POLICY, configure


def params_from_argv(argv: list[str] | None = None) -> Params:
    """params.yaml plus optional dotted overrides on the command line (key=value ...)."""
    return load_params(PARAMS, overrides=list(argv if argv is not None else sys.argv[1:]))


def write_dvc_metrics(path, figures: dict) -> None:
    """A stage's DVC metrics file: numbers only (a string or a bool here would widen every
    `dvc metrics show` table by a column that cannot be compared)."""
    import math

    from skillpack.io import write_json

    for key, value in figures.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{path}: metric {key!r} must be a finite number, got {value!r}")
    write_json(path, figures)


def publish(figures: dict, report, *, details: dict | None = None, dvc=None, dvc_keys: tuple[str, ...] = (),
            series: tuple[str, ...] = (), artifacts: tuple = ()) -> None:
    """A stage's one sink, inside its MLflow run: `figures` (one flat dict, one set of names)
    go whole into the report JSON at `report` (with the nested `details` beside them); the
    `dvc_keys` among them into the DVC metrics file `dvc`; the numbers among them into the
    run's MLflow metrics and the strings into its tags, under the same names. A figure named in
    `series` was logged per step already (an epoch's val_acc): MLflow's latest value of the
    series is the figure, so it is not logged again. Then the artifacts, (path, folder) pairs."""
    from skillpack import tracking
    from skillpack.io import write_json

    write_json(report, {**figures, **(details or {})})
    if dvc is not None:
        write_dvc_metrics(dvc, {key: figures[key] for key in dvc_keys})
    told = {key: value for key, value in figures.items() if key not in series}
    tracking.log_metrics({key: value for key, value in told.items() if not isinstance(value, str)})
    tracking.set_tags({key: value for key, value in told.items() if isinstance(value, str)})
    for path, folder in artifacts:
        tracking.log_artifact(path, folder)


def run_stage(main, omp_wait_policy: str | None = TRAINING_OMP_WAIT_POLICY) -> None:
    """Run a stage's main() (the process configured first: skillpack.runtime.configure, with
    `omp_wait_policy`; a stage imports torch inside main); known user errors exit 1 with one
    clear line."""
    configure(omp_wait_policy)
    from skillpack.io import one_line_error
    from skillpack.tracking import require_reachable, tracking_uri

    try:
        require_reachable(tracking_uri())   # before any work: a tracking server that does not answer is one line
        code = main()
    except Exception as err:
        line = one_line_error(err)
        if line is None:
            raise
        print(line, file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)
