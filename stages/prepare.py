"""prepare: read the configured source, carve the splits, write the prepared store."""
from __future__ import annotations

import time

from stages.common import params_from_argv, run_stage


def main() -> int:
    from skillpack import paths, tracking
    from skillpack.config import flatten
    from skillpack.data import PreparedStore, write_store
    from skillpack.data.store import prepare_splits, summary_line

    params = params_from_argv()
    t0 = time.perf_counter()
    source, splits = prepare_splits(params.data, params.seed)
    summary = write_store(paths.PREPARED, source, splits)
    seconds = time.perf_counter() - t0
    store = PreparedStore(paths.PREPARED)
    print(f"[prepare] {summary['source']}: {summary_line(summary)} in {seconds:.1f}s")
    with tracking.stage_run("prepare", params.registry.experiment, params=flatten(params.data, "data"),
                            data_hash=store.data_hash()):
        tracking.log_metrics({**{k: v for k, v in summary.items() if isinstance(v, (int, float))},  # its own names
                              "n_empty_classes": len(summary["empty_classes"]), "prepare_seconds": seconds})
        for name in ("summary.json", "quarantine.csv", "ignored.csv"):
            tracking.log_artifact(paths.PREPARED / name)
    return 0


if __name__ == "__main__":
    run_stage(main)
