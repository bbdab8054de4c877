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


def test_noise_draws_flip_their_own_labels_and_add_to_the_stored_results(tmp_path, monkeypatch):
    """Two real noise draws on a tiny random set (out-of-fold models of 1 epoch): each draw flips
    exactly rate x N labels of its own, the stored results keep their other figures, and results
    from other detectors are refused rather than mixed."""
    import json
    from types import SimpleNamespace

    import benchmarks.cleaning as bench
    from skillpack.config import load_params

    monkeypatch.setattr(bench, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    monkeypatch.setattr("benchmarks.common.RESULTS", tmp_path)
    monkeypatch.setattr(bench, "render_claims", lambda: None)
    params = load_params("params.yaml", ["clean.oof.train.epochs=1", "clean.oof.folds=2", "train.threads=1"])
    rng = np.random.default_rng(0)
    train = SimpleNamespace(images=rng.integers(0, 255, (200, 28, 28, 1), dtype=np.uint8),
                            labels=np.arange(200) % 10)
    stored = {"settings": ["symmetric_0.1"], "symmetric_0.1": {"acc_noisy": 0.9},
              "oof": params.clean.oof.model_dump(), "detectors": params.clean.model_dump(exclude={"oof"})}
    (tmp_path / "cleaning.json").write_text(json.dumps(stored))

    results = bench.add_noise_draws(["symmetric_0.1"], [0, 1], {"train": train}, params, 0.0)
    draws = results["symmetric_0.1"]["draws"]
    assert set(draws) == {"0", "1"} and results["symmetric_0.1"]["acc_noisy"] == 0.9
    assert all(d["noise_rate"] == pytest.approx(20 / 200) for d in draws.values())
    assert all(0 <= d[name]["precision"] <= 1 for d in draws.values() for name in bench.DETECTOR_ORDER)
    flips = [bench.noise_and_detections("symmetric_0.1", train, params, seed)["flipped"] for seed in (0, 1)]
    assert not np.array_equal(flips[0], flips[1])
    assert json.loads((tmp_path / "cleaning.json").read_text())["symmetric_0.1"]["draws"].keys() == {"0", "1"}
    other = load_params("params.yaml", ["clean.oof.train.epochs=1", "clean.oof.folds=3", "train.threads=1"])
    with pytest.raises(SystemExit, match="`oof` differs"):
        bench.add_noise_draws(["symmetric_0.1"], [2], {"train": train}, other, 0.0)


def _tta_run(recipe, seed, acc, seconds_to, cuda=None):
    return {"recipe": recipe, "seed": seed, "final_acc": acc, "train_s": 100.0 + seed, "seconds_to": seconds_to,
            "trace": [], "machine": {"cpu": "x86_64", "cuda": cuda}}


def test_time_to_accuracy_summary_is_a_mean_with_interval_and_old_runs_lack_new_thresholds():
    from benchmarks.time_to_accuracy import summarise

    old = {"0.940": 90.0}   # a run measured before 0.950 was a threshold
    new = {"0.940": 80.0, "0.950": 120.0}
    runs = [_tta_run("r", 0, 0.94, old), _tta_run("r", 1, 0.95, new), _tta_run("r", 2, 0.96, new)]
    s = summarise(runs, "r")
    assert s["acc"] == pytest.approx(0.95)
    assert s["acc_ci_low"] < 0.95 < s["acc_ci_high"]
    assert s["seconds_to"] == {"0.940": 80.0, "0.950": 120.0}
    assert s["reached_by_seeds"] == {"0.940": 3, "0.950": 2}


def test_the_best_cpu_recipe_skips_recipes_measured_on_a_gpu():
    from benchmarks.docs import best_cpu_recipe, time_to_accuracy_rows
    from benchmarks.time_to_accuracy import summarise

    runs = [_tta_run("cpu", s, 0.93 + s / 1000, {"0.930": 50.0}) for s in range(3)]
    runs += [_tta_run("gpu", s, 0.95, {"0.930": 5.0, "0.950": 9.0}, cuda="H100") for s in range(3)]
    f = {"runs": runs, "recipes": {name: summarise(runs, name) for name in ("cpu", "gpu")}}
    name, s = best_cpu_recipe(f)
    assert name == "cpu" and s["acc"] == pytest.approx(0.931)
    rows = time_to_accuracy_rows(f, ["0.930", "0.950"])
    assert rows[0].endswith("| 50 | not reached |")   # the cpu runs have no 0.950 key
