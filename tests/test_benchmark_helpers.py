"""The pure parts of the benchmarks: the cleaned views of the policy probe, the recovery figure."""
import numpy as np
import pytest

from benchmarks.cleaning import recovered
from benchmarks.cleaning_policies import class_thresholds, diagnostic_views, views


def _probs(rows):
    probs = np.asarray(rows, dtype=np.float64)
    return probs / probs.sum(1, keepdims=True)


def test_class_thresholds_are_mean_self_confidence():
    probs = _probs([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    assert class_thresholds(probs, np.array([0, 0, 1]), 2) == pytest.approx([0.7, 0.8])


def test_policy_views_act_only_on_flagged_rows():
    # class 0: t_0 = mean(0.9, 0.8, 0.3, 0.05) = 0.5125; class 1: t_1 = mean(0.9, 0.7) = 0.8
    probs = _probs([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.05, 0.95], [0.1, 0.9], [0.3, 0.7]])
    noisy = np.array([0, 0, 0, 0, 1, 1])
    flag = np.array([False, False, True, True, False, False])
    # row 2: suggested 1 with p 0.7 < t_1 (not confident), p(given) 0.3 >= t_0 / 2 (not low)
    # row 3: suggested 1 with p 0.95 >= t_1 (confident), p(given) 0.05 < t_0 / 2 (low)
    got = views(flag, probs, noisy)

    kept, labels = got["relabel"]
    assert kept.tolist() == [0, 1, 2, 3, 4, 5] and labels.tolist() == [0, 0, 1, 1, 1, 1]
    kept, labels = got["relabel_confident"]
    assert kept.tolist() == [0, 1, 3, 4, 5] and labels.tolist() == [0, 0, 1, 1, 1]
    kept, labels = got["drop_confident"]
    assert kept.tolist() == [0, 1, 2, 4, 5] and labels.tolist() == [0, 0, 0, 1, 1]
    kept, labels = got["drop_low_self"]
    assert kept.tolist() == [0, 1, 2, 4, 5] and labels.tolist() == [0, 0, 0, 1, 1]


def test_diagnostic_views_split_the_dropped_set_by_ground_truth():
    flipped = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], bool)
    flag = np.array([1, 1, 0, 1, 1, 0, 0, 0, 0, 0], bool)  # 2 flips found, 1 missed, 2 clean flagged
    noisy = np.arange(10)
    got = diagnostic_views(flag, flipped, noisy, seed=3)
    assert got["diag_drop_found_flips_only"][0].tolist() == [2, 3, 4, 5, 6, 7, 8, 9]
    assert got["diag_drop_all_flips_and_flagged_clean"][0].tolist() == [5, 6, 7, 8, 9]
    kept, labels = got["diag_drop_all_flips_and_random_clean"]
    assert len(kept) == 5 and not flipped[kept].any() and np.array_equal(labels, noisy[kept])


def test_recovered_is_the_share_of_lost_accuracy_won_back():
    r = {"acc_clean": 0.92, "acc_noisy": 0.90, "acc_cleaned": 0.905,
         "acc_clean_by_seed": {"0": 0.92, "1": 0.91}, "acc_noisy_by_seed": {"0": 0.90, "1": 0.90},
         "acc_cleaned_by_seed": {"0": 0.91, "1": 0.899}}
    assert recovered(r) == pytest.approx(0.25)
    assert recovered(r, "0") == pytest.approx(0.5)
    assert recovered(r, "1") == pytest.approx(-0.1)
    assert np.isnan(recovered({**r, "acc_noisy": 0.93}))


def test_merge_previous_keeps_only_settings_measured_with_the_same_model_and_detectors(tmp_path, monkeypatch):
    import json

    import benchmarks.cleaning as bench

    full = {name: {"f1": 0.5} for name in bench.DETECTOR_ORDER}
    older = {name: {"f1": 0.5} for name in bench.DETECTOR_ORDER[:-1]}
    previous = {"acc_clean_by_seed": {"0": 0.91}, "settings": ["pair_0.1", "pair_0.2", "pair_0.4"],
                "pair_0.1": full, "pair_0.2": older, "pair_0.4": full}
    (tmp_path / "cleaning.json").write_text(json.dumps(previous))
    monkeypatch.setattr(bench, "RESULTS", tmp_path)

    results = {"acc_clean_by_seed": {"0": 0.91}, "pair_0.4": {"new": True}}
    assert bench.merge_previous(results, ["pair_0.4"]) == ["pair_0.1", "pair_0.4"]
    assert results["pair_0.1"] == full and results["pair_0.4"] == {"new": True} and "pair_0.2" not in results
    other_model = {"acc_clean_by_seed": {"0": 0.92}}
    assert bench.merge_previous(other_model, []) == [] and "pair_0.1" not in other_model
