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
