"""Validation of the prepared store: a Great Expectations 1.x suite on the manifest plus the
bookkeeping checks GX has no expectation for (found = prepared + quarantined + ignored,
imbalance).

`validate_manifest` returns a report dict; `report["success"]` is False when any check
fails, and every failed check names its expectation, column and up to N offending ids, and
says what is wrong in one line of words (`message`): classes by their (folder) name, label
conflicts with the files that carry them.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from skillpack.data.store import MANIFEST_COLUMNS

REQUIRED_SPLITS_WITH_EVERY_CLASS = ("train", "test")


DERIVED_COLUMNS = ["leaks_into_test", "label_conflict"]


def _derived(manifest: pd.DataFrame) -> pd.DataFrame:
    """Columns that turn cross-row rules into per-row ones GX can point at: a train/val image
    also in test, and an image (same sha256) that appears under more than one label, within a
    split or across splits."""
    df = manifest.copy()
    test_hashes = set(df.loc[df["split"] == "test", "sha256"])
    df["leaks_into_test"] = (df["split"] != "test") & df["sha256"].isin(test_hashes)
    labels_per_hash = df.groupby("sha256", dropna=False)["label"].transform("nunique") if len(df) else df["label"]
    df["label_conflict"] = (labels_per_hash > 1) if len(df) else pd.Series(dtype=bool)
    return df


def _mode(series: pd.Series):
    return series.mode().iloc[0].item() if len(series) else None


def build_expectations(df: pd.DataFrame, classes: list[str]) -> list:
    import great_expectations.expectations as gxe

    labels = list(range(len(classes)))
    exps = [
        gxe.ExpectTableColumnsToMatchSet(column_set=MANIFEST_COLUMNS + DERIVED_COLUMNS, exact_match=True),
        gxe.ExpectColumnValuesToNotBeNull(column="id"),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToNotBeNull(column="sha256"),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "val", "test"]),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=labels),
        gxe.ExpectColumnPairValuesToBeInSet(column_A="label", column_B="label_name",
                                            value_pairs_set=[(i, name) for i, name in enumerate(classes)]),
        gxe.ExpectColumnValuesToBeInSet(column="leaks_into_test", value_set=[False]),
        gxe.ExpectColumnValuesToBeInSet(column="label_conflict", value_set=[False]),
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


def _describe(result, df: pd.DataFrame, max_rows: int, classes: list[str]) -> dict:
    cfg = result.expectation_config
    kwargs = {k: v for k, v in cfg.kwargs.items() if k in ("column", "column_A", "column_B", "row_condition")}
    entry = {"expectation": cfg.type, **kwargs, "success": bool(result.success)}
    res = result.result or {}
    if "unexpected_count" in res:
        entry["unexpected_count"] = int(res["unexpected_count"])
        index = [i for i in (res.get("unexpected_index_list") or []) if i in df.index]
        if kwargs.get("column") == "label_conflict":  # the files that carry each conflicting image
            entry["conflicts"] = _conflicts(df.loc[index], classes, max_rows)
        entry["offending_rows"] = [
            {"id": str(df.at[i, "id"]), "split": str(df.at[i, "split"]),
             **({"value": _plain(df.at[i, kwargs["column"]])} if "column" in kwargs else {})}
            for i in index[:max_rows]
        ]
    if cfg.type == "expect_column_distinct_values_to_contain_set":
        if "partial_missing_list" in res:
            entry["missing_values"] = sorted(res["partial_missing_list"])
        else:
            entry["missing_values"] = sorted(set(cfg.kwargs["value_set"]) - set(res.get("observed_value") or []))
        entry["missing_classes"] = [classes[i] if 0 <= i < len(classes) else str(i) for i in entry["missing_values"]]
    if cfg.type == "expect_table_columns_to_match_set":
        entry["observed_columns"] = res.get("observed_value")
        entry["expected_columns"] = list(cfg.kwargs.get("column_set") or [])
    return entry


def _conflicts(rows: pd.DataFrame, classes: list[str], max_groups: int) -> list[dict]:
    """One entry per image (sha256) found under several labels: its files, split and label name."""
    out = []
    for sha, group in rows.groupby("sha256", sort=False):
        out.append({"sha256": str(sha), "files": [
            {"id": str(r.id), "split": str(r.split), "label": _plain(r.label), "label_name": str(r.label_name)}
            for r in group.itertuples()]})
        if len(out) >= max_groups:
            break
    return out


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
    """Train images per class, every class of the class set counted (an empty class is 0), and
    the imbalance ratio largest / smallest: infinite when a class has no train image."""
    train = manifest[manifest["split"] == "train"]
    labels = train["label"][(train["label"] >= 0) & (train["label"] < len(classes))].astype(int)
    counts = np.bincount(labels, minlength=len(classes))[: len(classes)]
    if not len(counts) or counts.max() == 0:
        ratio = float("nan")
    else:
        ratio = float(counts.max() / counts.min()) if counts.min() > 0 else float("inf")
    return {"train_class_counts": {name: int(c) for name, c in zip(classes, counts)}, "imbalance_ratio": ratio,
            "empty_train_classes": [name for name, c in zip(classes, counts) if c == 0]}


def _ids(check: dict, limit: int = 5) -> str:
    rows = check.get("offending_rows") or []
    shown = ", ".join(r["id"] for r in rows[:limit])
    more = check.get("unexpected_count", len(rows)) - min(len(rows), limit)
    return shown + (f" and {more} more" if more > 0 else "")


def _split_of(check: dict) -> str:
    condition = check.get("row_condition") or ""
    if isinstance(condition, dict):  # GX 1.x: {"pass_through_filter": 'split=="train"', "type": ...}
        condition = str(condition.get("pass_through_filter") or condition)
    return condition.split("==")[-1].strip().strip('"') if "==" in condition else "every"


def in_words(check: dict) -> str:
    """One line saying what a failed check found, naming classes, files and numbers."""
    kind, column, n = check["expectation"], check.get("column"), check.get("unexpected_count")
    if kind == "expect_column_distinct_values_to_contain_set":
        names = ", ".join(repr(c) for c in check.get("missing_classes", []))
        return (f"the {_split_of(check)} split has no image of class {names} "
                f"(an empty or missing class folder, or every file of it quarantined or ignored)")
    if kind == "expect_table_columns_to_match_set":
        observed, expected = set(check.get("observed_columns") or []), set(check.get("expected_columns") or [])
        return (f"the manifest's columns are wrong: missing {sorted(expected - observed)}, "
                f"unexpected {sorted(observed - expected)}")
    if column == "label_conflict":
        groups = check.get("conflicts") or []
        shown = "; ".join(" vs ".join(f"{f['id']} ({f['label_name']}, {f['split']})" for f in g["files"])
                          for g in groups)
        return (f"{n} files hold an image that is also under another label (same sha256, different labels): "
                f"{len(groups)} image{'s' if len(groups) != 1 else ''}: {shown}")
    if column == "leaks_into_test":
        return f"{n} train/val images are also in the test split (same sha256): {_ids(check)}"
    if kind == "expect_column_values_to_be_unique":
        return f"{n} rows share their {column} with another row: {_ids(check)}"
    if kind == "expect_column_values_to_not_be_null":
        return f"{n} rows have no {column}: {_ids(check)}"
    if kind == "expect_column_pair_values_to_be_in_set":
        return f"{n} rows have a label_name that is not their label's class name: {_ids(check)}"
    if column == "label":
        return f"{n} rows have a label outside the class set: {_ids(check)}"
    if column in ("height", "width", "channels"):
        values = sorted({r.get("value") for r in check.get("offending_rows") or []}, key=str)
        return f"{n} images have a {column} unlike the others' ({values}): {_ids(check)}"
    if column == "split":
        return f"{n} rows have a split other than train/val/test: {_ids(check)}"
    if kind == "imbalance_ratio_at_most":
        empty = check.get("empty_classes") or []
        return (f"the train split's class imbalance ratio (largest / smallest class) is {check['value']:.2f}, "
                f"over validate.max_imbalance_ratio {check['max']}"
                + (f"; classes with no train image: {', '.join(map(repr, empty))}" if empty else ""))
    if kind == "arrays_match_manifest":
        return (f"the {check['split']} arrays do not match manifest.csv: {check['image_rows']} images and "
                f"{check['label_rows']} labels for {check['manifest_rows']} rows (or the labels differ); "
                f"prepare again")
    if kind == "found_equals_prepared_plus_quarantined":
        return (f"the counts do not add up: found {check['found']} != prepared {check['prepared']} + quarantined "
                f"{check['quarantined']} + ignored {check['ignored']} + left out by max_train/max_test "
                f"{check['subset_excluded']}")
    return f"{kind}" + (f" on {column}" if column else "") + (f": {n} offending rows: {_ids(check)}" if n else "")


def validate_manifest(manifest: pd.DataFrame, classes: list[str], summary: dict | None = None,
                      quarantine: pd.DataFrame | None = None, max_imbalance_ratio: float | None = None,
                      max_rows: int = 20, ignored: pd.DataFrame | None = None,
                      arrays: dict[str, tuple[int, np.ndarray]] | None = None) -> dict:
    df = _derived(manifest.reset_index(drop=True))
    results = run_suite(df, build_expectations(df, classes))
    checks = [_describe(r, df, max_rows, classes) for r in results.results]
    if arrays is not None:
        checks += arrays_match_manifest(manifest, arrays)
    balance = class_balance(manifest, classes)
    if max_imbalance_ratio is not None:
        checks.append({"expectation": "imbalance_ratio_at_most", "value": balance["imbalance_ratio"],
                       "max": max_imbalance_ratio, "empty_classes": balance["empty_train_classes"],
                       "success": bool(balance["imbalance_ratio"] <= max_imbalance_ratio)})
    quarantined = [] if quarantine is None else quarantine.to_dict(orient="records")
    ignored_rows = [] if ignored is None else ignored.to_dict(orient="records")
    counts = {"prepared": int(len(manifest)), "quarantined": len(quarantined),
              "ignored": len(ignored_rows) if ignored is not None else int((summary or {}).get("ignored", 0))}
    if summary is not None:
        counts.update(found=int(summary["found"]), subset_excluded=int(summary.get("subset_excluded", 0)))
        balanced = counts["found"] == (counts["prepared"] + counts["quarantined"] + counts["ignored"]
                                       + counts["subset_excluded"])
        checks.append({"expectation": "found_equals_prepared_plus_quarantined", **counts, "success": bool(balanced)})
    for check in checks:
        if not check["success"]:
            check["message"] = in_words(check)
    return {
        "success": all(c["success"] for c in checks),
        "failed": [c for c in checks if not c["success"]],
        "checks": checks,
        "counts": counts,
        "splits": manifest["split"].value_counts().to_dict(),
        "duplicates_within_split": duplicates_within_splits(manifest),
        **balance,
        "quarantine": quarantined,
        "ignored": ignored_rows,
    }


def arrays_match_manifest(manifest: pd.DataFrame, arrays: dict[str, tuple[int, np.ndarray]]) -> list[dict]:
    """Per split, the store's arrays hold what the manifest lists: as many images and labels
    as its rows, the labels in its order (GX sees the manifest only; a store whose arrays were
    rewritten without it would otherwise pass)."""
    checks = []
    for split, (n_images, labels) in arrays.items():
        listed = manifest.loc[manifest["split"] == split, "label"].to_numpy()
        same = n_images == len(listed) == len(labels) and bool(np.array_equal(labels, listed))
        checks.append({"expectation": "arrays_match_manifest", "split": split, "manifest_rows": int(len(listed)),
                       "image_rows": n_images, "label_rows": int(len(labels)), "success": same})
    return checks


def _name(check: dict) -> str:
    column = check.get("column") or ",".join(filter(None, [check.get("column_A"), check.get("column_B")]))
    return check["expectation"] + (f" on {column}" if column else "")


def format_failures(report: dict) -> str:
    """One line per failed expectation: what is wrong in words, then the expectation's name."""
    return "\n".join(f"FAILED {check.get('message') or in_words(check)} [{_name(check)}]" for check in report["failed"])
