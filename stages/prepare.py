"""prepare: read the configured source, carve the splits, write the prepared store."""
from __future__ import annotations

import time

from stages.common import PREPARED, params_from_argv, run_stage


def main() -> int:
    from skillpack import tracking
    from skillpack.data import PreparedStore, load_source, write_store
    from skillpack.data.store import carve_splits

    params = params_from_argv()
    d = params.data
    t0 = time.perf_counter()
    source = load_source(d.source, root=d.root, image_size=d.image_size, channels=d.channels, seed=params.seed)
    splits = carve_splits(source, d.val_fraction, params.seed, d.max_train, d.max_test)
    summary = write_store(PREPARED, source, splits)
    seconds = time.perf_counter() - t0
    store = PreparedStore(PREPARED)
    print(f"[prepare] {summary['source']}: found {summary['found']}, prepared {summary['prepared']} "
          f"{summary['splits']}, quarantined {summary['quarantined']} in {seconds:.1f}s")
    with tracking.stage_run("prepare", params.mlflow.experiment, params={f"data.{k}": v for k, v in d.model_dump().items()},
                            data_hash=store.data_hash()):
        tracking.log_metrics({"found": summary["found"], "prepared": summary["prepared"],
                              "quarantined": summary["quarantined"], "prepare_seconds": seconds})
        tracking.log_artifact(PREPARED / "summary.json")
        tracking.log_artifact(PREPARED / "quarantine.csv")
    return 0


if __name__ == "__main__":
    run_stage(main)
