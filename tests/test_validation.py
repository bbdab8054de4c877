"""The Great Expectations suite fails on what it must, and names the offending rows."""
import pandas as pd
import pytest

from skillpack.data.validation import format_failures, validate_manifest

CLASSES = ["a", "b", "c"]


def manifest(rows=None):
    base = []
    i = 0
    for split in ("train", "val", "test"):
        for label in range(3):
            for _ in range(4 if split == "train" else 2):
                base.append({"id": f"{split}/{i}", "split": split, "label": label, "label_name": CLASSES[label],
                             "sha256": f"hash{i:04d}", "height": 28, "width": 28, "channels": 1, "source": "t"})
                i += 1
    return pd.DataFrame(base + (rows or []))


def failed_types(report):
    return {c["expectation"] for c in report["failed"]}


def test_clean_manifest_passes():
    report = validate_manifest(manifest(), CLASSES)
    assert report["success"], format_failures(report)
    assert report["imbalance_ratio"] == 1.0


def test_train_test_duplicate_fails_and_names_the_row():
    df = manifest()
    test_hash = df.loc[df["split"] == "test", "sha256"].iloc[0]
    df.loc[0, "sha256"] = test_hash  # train/0 is now a copy of a test image
    report = validate_manifest(df, CLASSES)
    assert not report["success"]
    (leak,) = [c for c in report["failed"] if c.get("column") == "leaks_into_test"]
    assert leak["unexpected_count"] == 1
    assert leak["offending_rows"][0]["id"] == "train/0"
    assert "train/0" in format_failures(report)


def test_label_outside_the_class_set_fails():
    df = manifest([{"id": "x", "split": "train", "label": 7, "label_name": "?", "sha256": "zz",
                    "height": 28, "width": 28, "channels": 1, "source": "t"}])
    report = validate_manifest(df, CLASSES)
    assert not report["success"]
    bad = [c for c in report["failed"] if c.get("column") == "label"]
    assert bad and bad[0]["offending_rows"][0]["id"] == "x" and bad[0]["offending_rows"][0]["value"] == 7


def test_empty_class_fails():
    df = manifest()
    df = df[~((df["split"] == "train") & (df["label"] == 2))]
    report = validate_manifest(df, CLASSES)
    assert not report["success"]
    (missing,) = [c for c in report["failed"] if c["expectation"] == "expect_column_distinct_values_to_contain_set"]
    assert missing["missing_values"] == [2] and missing["missing_classes"] == ["c"]
    assert report["train_class_counts"]["c"] == 0
    assert report["imbalance_ratio"] == float("inf")  # the empty class counts
    assert format_failures(report) == ("FAILED the train split has no image of class 'c' (an empty or missing class "
                                       "folder, or every file of it quarantined or ignored) "
                                       "[expect_column_distinct_values_to_contain_set on label]")


def test_same_image_under_two_labels_fails_listing_the_files():
    df = manifest()
    df.loc[1, "sha256"] = df.loc[4, "sha256"]   # train/1 (label a) and train/4 (label b): one image
    test_row = df.index[(df["split"] == "test") & (df["label"] == 2)][0]
    df.loc[test_row, "sha256"] = df.loc[0, "sha256"]  # and train/0 (a) is a test image labelled c
    report = validate_manifest(df, CLASSES)
    (conflict,) = [c for c in report["failed"] if c.get("column") == "label_conflict"]
    assert conflict["unexpected_count"] == 4
    groups = {frozenset((f["id"], f["label_name"]) for f in g["files"]) for g in conflict["conflicts"]}
    assert groups == {frozenset({("train/1", "a"), ("train/4", "b")}),
                      frozenset({("train/0", "a"), (df.loc[test_row, "id"], "c")})}
    assert "train/1 (a, train) vs train/4 (b, train)" in conflict["message"]
    same_label = manifest()
    same_label.loc[1, "sha256"] = same_label.loc[0, "sha256"]   # a duplicate with one label: reported only
    assert validate_manifest(same_label, CLASSES)["success"]


def test_duplicate_ids_and_inconsistent_dims_fail():
    df = manifest()
    df.loc[1, "id"] = df.loc[0, "id"]
    df.loc[2, "channels"] = 3
    report = validate_manifest(df, CLASSES)
    failed = {(c["expectation"], c.get("column")) for c in report["failed"]}
    assert ("expect_column_values_to_be_unique", "id") in failed
    assert ("expect_column_values_to_be_in_set", "channels") in failed


def test_duplicates_within_a_split_are_reported_not_failed():
    df = manifest()
    df.loc[1, "sha256"] = df.loc[0, "sha256"]
    df.loc[2, "sha256"] = df.loc[0, "sha256"]
    report = validate_manifest(df, CLASSES)
    assert report["success"]
    assert report["duplicates_within_split"]["train"] == {"duplicate_images": 2, "duplicate_groups": 1}


def test_missing_column_fails():
    report = validate_manifest(manifest().drop(columns=["sha256"]).assign(sha256="h").drop(columns=["source"]), CLASSES)
    assert "expect_table_columns_to_match_set" in failed_types(report)


@pytest.mark.parametrize("found, ok", [(25, True), (30, False)])
def test_counts_must_add_up(found, ok):
    df = manifest()
    quarantine = pd.DataFrame([{"path": "p", "split": "train", "reason": "unreadable"}])
    summary = {"found": found, "subset_excluded": 0}
    report = validate_manifest(df, CLASSES, summary=summary, quarantine=quarantine)
    assert report["success"] is ok
    assert report["counts"]["quarantined"] == 1
    if not ok:
        assert format_failures(report) == ("FAILED the counts do not add up: found 30 != prepared 24 + quarantined 1 "
                                           "+ ignored 0 + left out by max_train/max_test 0 "
                                           "[found_equals_prepared_plus_quarantined]")


def test_ignored_entries_count_towards_found():
    ignored = pd.DataFrame([{"path": "d/a/pipe", "split": "all", "reason": "not a regular file: a fifo"}] * 2)
    report = validate_manifest(manifest(), CLASSES, summary={"found": 26, "subset_excluded": 0},
                               quarantine=pd.DataFrame(columns=["path", "split", "reason"]), ignored=ignored)
    assert report["success"] and report["counts"]["ignored"] == 2 and len(report["ignored"]) == 2


def test_imbalance_limit():
    df = manifest([{"id": f"extra{i}", "split": "train", "label": 0, "label_name": "a", "sha256": f"e{i}",
                    "height": 28, "width": 28, "channels": 1, "source": "t"} for i in range(8)])
    report = validate_manifest(df, CLASSES, max_imbalance_ratio=2.0)
    assert report["imbalance_ratio"] == 3.0
    assert "imbalance_ratio_at_most" in failed_types(report)
