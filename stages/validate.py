"""validate: the Great Expectations suite on the manifest; exits non-zero on failure so
`dvc repro` stops, with one line in words per failed expectation (classes by name, the
offending files)."""
from __future__ import annotations

import sys

from stages.common import params_from_argv, run_stage


def main() -> int:
    import math

    from skillpack import paths, tracking
    from skillpack.data import PreparedStore
    from skillpack.data.validation import format_failures, validate_manifest
    from skillpack.io import write_json

    params = params_from_argv()
    store = PreparedStore(paths.PREPARED)
    report = validate_manifest(store.manifest(), store.classes, store.summary, store.quarantine(),
                               params.validate_.max_imbalance_ratio, params.validate_.max_rows_reported,
                               ignored=store.ignored(), arrays=store.array_labels())
    write_json(paths.VALIDATION, report)
    with tracking.stage_run("validate", params.registry.experiment, data_hash=store.data_hash(),
                            params={"validate.max_imbalance_ratio": params.validate_.max_imbalance_ratio}):
        ratio = report["imbalance_ratio"]
        tracking.log_metrics({"success": float(report["success"]), "failed_checks": len(report["failed"]),
                              **({"imbalance_ratio": ratio} if math.isfinite(ratio) else {}),
                              "n_empty_train_classes": len(report["empty_train_classes"]), **report["counts"]})
        tracking.log_artifact(paths.VALIDATION)
    dup = {s: d["duplicate_images"] for s, d in report["duplicates_within_split"].items()}
    print(f"[validate] {len(report['checks'])} checks, {len(report['failed'])} failed; "
          f"duplicates within split {dup}; imbalance ratio {report['imbalance_ratio']:.2f}; "
          f"quarantined {report['counts']['quarantined']}, ignored {report['counts']['ignored']}")
    if not report["success"]:
        print(format_failures(report), file=sys.stderr)
        print(f"[validate] FAILED - see {paths.VALIDATION}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_stage(main)
