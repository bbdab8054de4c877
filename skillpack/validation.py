"""Validation of the prepared store: a Great Expectations 1.x suite on the manifest plus the
bookkeeping checks GX has no expectation for (found = prepared + quarantined, imbalance).

`validate_manifest` returns a report dict; `report["success"]` is False when any check
fails, and every failed check names its expectation, column and up to N offending ids.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from skillpack.data.store import MANIFEST_COLUMNS

REQUIRED_SPLITS_WITH_EVERY_CLASS = ("train", "test")


def _derived(manifest: pd.DataFrame) -> pd.DataFrame:
    """Columns that turn cross-row rules into per-row ones GX can point at."""
    df = manifest.copy()
    test_hashes = set(df.loc[df["split"] == "test", "sha256"])
    df["leaks_into_test"] = (df["split"] != "test") & df["sha256"].isin(test_hashes)
    return df


def _mode(series: pd.Series):
    return series.mode().iloc[0].item() if len(series) else None


def build_expectations(df: pd.DataFrame, classes: list[str]) -> list:
    import great_expectations.expectations as gxe

    labels = list(range(len(classes)))
    exps = [
        gxe.ExpectTableColumnsToMatchSet(column_set=MANIFEST_COLUMNS + ["leaks_into_test"], exact_match=True),
        gxe.ExpectColumnValuesToNotBeNull(column="id"),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToNotBeNull(column="sha256"),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "val", "test"]),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=labels),
        gxe.ExpectColumnPairValuesToBeInSet(column_A="label", column_B="label_name",
                                            value_pairs_set=[(i, name) for i, name in enumerate(classes)]),
        gxe.ExpectColumnValuesToBeInSet(column="leaks_into_test", value_set=[False]),
    ]
    for column in ("height", "width", "channels"):
        exps.append(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[_mode(df[column])]))
    for split in REQUIRED_SPLITS_WITH_EVERY_CLASS:
        exps.append(gxe.ExpectColumnDistinctValuesToContainSet(
            column="label", value_set=labels, row_condition=f'split=="{split}"', condition_parser="pandas"))
    return exps


def run_suite(df: pd.DataFrame, expectations: list):
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("manifest").add_dataframe_asset("manifest")
    batch = asset.add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(gx.ExpectationSuite(name="prepared_manifest"))
    for expectation in expectations:
        suite.add_expectation(expectation)
    validation = context.validation_definitions.add(gx.ValidationDefinition(name="manifest", data=batch, suite=suite))
    return validation.run(batch_parameters={"dataframe": df}, result_format="COMPLETE")


def _describe(result, df: pd.DataFrame, max_rows: int) -> dict:
    cfg = result.expectation_config
    kwargs = {k: v for k, v in cfg.kwargs.items() if k in ("column", "column_A", "column_B", "row_condition")}
    entry = {"expectation": cfg.type, **kwargs, "success": bool(result.success)}
    res = result.result or {}
    if "unexpected_count" in res:
        entry["unexpected_count"] = int(res["unexpected_count"])
        index = res.get("unexpected_index_list") or []
        entry["offending_rows"] = [
            {"id": str(df.at[i, "id"]), "split": str(df.at[i, "split"]),
             **({"value": _plain(df.at[i, kwargs["column"]])} if "column" in kwargs else {})}
            for i in index[:max_rows] if i in df.index
        ]
    if cfg.type == "expect_column_distinct_values_to_contain_set":
        if "partial_missing_list" in res:
            entry["missing_values"] = sorted(res["partial_missing_list"])
        else:
            entry["missing_values"] = sorted(set(cfg.kwargs["value_set"]) - set(res.get("observed_value") or []))
    if cfg.type == "expect_table_columns_to_match_set":
        entry["observed_columns"] = res.get("observed_value")
    return entry


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def duplicates_within_splits(manifest: pd.DataFrame) -> dict:
    """Exact duplicate images inside each split: reported, not a failure."""
    report = {}
    for split, group in manifest.groupby("split"):
        counts = group["sha256"].value_counts()
        dup = counts[counts > 1]
        report[split] = {"duplicate_images": int(dup.sum() - len(dup)), "duplicate_groups": int(len(dup))}
    return report


def class_balance(manifest: pd.DataFrame, classes: list[str]) -> dict:
    train = manifest[manifest["split"] == "train"]
    counts = np.bincount(train["label"].clip(lower=0), minlength=len(classes))[: len(classes)]
    nonzero = counts[counts > 0]
    ratio = float(nonzero.max() / nonzero.min()) if len(nonzero) else float("nan")
    return {"train_class_counts": {name: int(c) for name, c in zip(classes, counts)}, "imbalance_ratio": ratio}


def validate_manifest(manifest: pd.DataFrame, classes: list[str], summary: dict | None = None,
                      quarantine: pd.DataFrame | None = None, max_imbalance_ratio: float | None = None,
                      max_rows: int = 20) -> dict:
    df = _derived(manifest.reset_index(drop=True))
    results = run_suite(df, build_expectations(df, classes))
    checks = [_describe(r, df, max_rows) for r in results.results]
    balance = class_balance(manifest, classes)
    if max_imbalance_ratio is not None:
        checks.append({"expectation": "imbalance_ratio_at_most", "value": balance["imbalance_ratio"],
                       "max": max_imbalance_ratio,
                       "success": bool(balance["imbalance_ratio"] <= max_imbalance_ratio)})
    quarantined = [] if quarantine is None else quarantine.to_dict(orient="records")
    counts = {"prepared": int(len(manifest)), "quarantined": len(quarantined)}
    if summary is not None:
        counts.update(found=int(summary["found"]), subset_excluded=int(summary.get("subset_excluded", 0)))
        balanced = counts["found"] == counts["prepared"] + counts["quarantined"] + counts["subset_excluded"]
        checks.append({"expectation": "found_equals_prepared_plus_quarantined", **counts, "success": bool(balanced)})
    return {
        "success": all(c["success"] for c in checks),
        "failed": [c for c in checks if not c["success"]],
        "checks": checks,
        "counts": counts,
        "splits": manifest["split"].value_counts().to_dict(),
        "duplicates_within_split": duplicates_within_splits(manifest),
        **balance,
        "quarantine": quarantined,
    }


def format_failures(report: dict) -> str:
    lines = []
    for check in report["failed"]:
        where = check.get("column") or ",".join(filter(None, [check.get("column_A"), check.get("column_B")]))
        head = f"FAILED {check['expectation']}" + (f" [{where}]" if where else "")
        if check.get("row_condition"):
            head += f" where {check['row_condition']}"
        if "unexpected_count" in check:
            head += f": {check['unexpected_count']} offending rows"
        if check.get("missing_values"):
            head += f": missing {check['missing_values']}"
        if "observed_columns" in check:
            head += f": columns are {check['observed_columns']}"
        lines.append(head)
        for row in check.get("offending_rows", []):
            lines.append(f"    {row}")
        extra = {k: v for k, v in check.items() if k in ("found", "prepared", "quarantined", "value", "max")}
        if extra:
            lines.append(f"    {extra}")
    return "\n".join(lines)
