"""The calibration of the verdicts: null comparisons drawn from stored runs give a false-positive
rate near alpha when there is no effect, and the drawing is honest about its pool."""
import numpy as np
import pytest

from skillpack.evidence import calibration


def _runs(arms: int, seeds: int, shift: dict | None = None, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"arm": f"a{a}", "seed": s, "test_accuracy": 0.85 + 0.01 * rng.standard_normal() + (shift or {}).get(s, 0.0)}
            for a in range(arms) for s in range(seeds)]


def test_with_no_effect_the_false_positive_rate_is_near_alpha():
    figures = calibration.calibrate(_runs(arms=200, seeds=10), splits_per_arm=5)
    assert figures["n_null"] == 1000 and figures["pool_arms"] == 200 and figures["pool_trainings"] == 2000
    low, high = figures["null_fpr_ci"]
    assert low <= 0.05 <= high and figures["null_fpr"] < 0.08


def test_each_null_comparison_pairs_two_disjoint_halves_of_one_arms_seeds(monkeypatch):
    runs = [{"arm": arm, "seed": s, "test_accuracy": 100 * a + s} for a, arm in enumerate(("a", "b")) for s in range(10)]
    seen = []
    real = calibration.paired_t_test
    monkeypatch.setattr(calibration, "paired_t_test", lambda x, y: seen.append((list(x), list(y))) or real(x, y))
    calibration.null_p_values(runs, splits_per_arm=3)
    assert len(seen) == 6
    for first, second in seen:
        assert len(first) == len(second) == 5 and not set(first) & set(second)
        assert len({v // 100 for v in first + second}) == 1          # both halves from the same arm


def test_arms_with_too_few_seeds_are_left_out_and_none_at_all_is_an_error():
    runs = _runs(arms=3, seeds=10) + [{"arm": "few", "seed": s, "test_accuracy": 0.8} for s in range(6)]
    p_values, arms, trainings = calibration.null_p_values(runs, splits_per_arm=2)
    assert (len(p_values), arms, trainings) == (6, 3, 30)
    with pytest.raises(ValueError, match="no arm has 10 stored seeds"):
        calibration.calibrate(_runs(arms=2, seeds=6))


def test_power_finds_a_large_planted_effect_and_rarely_a_tiny_one():
    rng = np.random.default_rng(1)
    level = 0.85 + 0.01 * rng.standard_normal(40)
    runs = [{"arm": "baseline", "seed": s, "test_accuracy": level[s]} for s in range(40)]
    for arm, drop in (("planted_big", 0.03), ("planted_tiny", 0.0005)):
        runs += [{"arm": arm, "seed": s, "test_accuracy": level[s] - drop + 0.005 * rng.standard_normal()}
                 for s in range(40)]
    levels = {"alpha": 0.05, "family": 0.001}
    big = calibration.planted_power(runs, "planted_big", "baseline", [5, 15], levels)
    tiny = calibration.planted_power(runs, "planted_tiny", "baseline", [5, 15], levels)
    assert big["n_pool"] == 40 and -3.5 < big["effect_points"] < -2.5
    assert big["power"]["15"]["alpha"] == 1.0 and big["power"]["15"]["family"] >= big["power"]["5"]["family"]
    assert tiny["power"]["15"]["alpha"] < 0.5
    assert all(p["family"] <= p["alpha"] for p in big["power"].values())
    with pytest.raises(ValueError, match="needs at least 60"):
        calibration.planted_power(runs, "planted_big", "baseline", [30], levels)
