"""Claim verdicts: the rule set, Holm's correction, the minimum detectable effect, and the
claims table built from them (one row per arm, significance from the adjusted p-value)."""
import ast
import itertools
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from skillpack import stats as st
from skillpack.evidence import ablation as ab
from skillpack.evidence import claims as cl
from skillpack.evidence import claims_report
from skillpack.evidence import comparisons as cmp
from skillpack.evidence import verdicts as vd
from skillpack.evidence.static_checks import STATIC_CHECKS

ROOT = Path(__file__).resolve().parent.parent
SIGNIFICANT, NOT_SIGNIFICANT = 0.01, 0.30
ROW_KEYS = {"claim", "arm", "verdict", "measured", "ci_low", "ci_high", "claimed", "p", "p_adjusted", "mde", "setup"}


# ------------------------------------------------------------------ the rules, intervals built by hand

# claimed c = +2 points, direction increase: intervals on every side of 0 and c
INCREASE_CASES = [
    ((1.0, 3.0), SIGNIFICANT, vd.REPRODUCED),          # excludes 0 on the claimed side, covers c
    ((2.5, 4.0), SIGNIFICANT, vd.REPRODUCED),          # lies beyond c
    ((0.5, 1.5), SIGNIFICANT, vd.SMALLER),             # excludes 0, falls short of c
    ((-0.5, 1.5), NOT_SIGNIFICANT, vd.NOT_REPRODUCED),  # includes 0, falls short of c
    ((-3.0, -1.0), SIGNIFICANT, vd.CONTRADICTED),      # excludes 0 on the opposite side
    ((-1.0, 3.0), NOT_SIGNIFICANT, vd.INCONCLUSIVE),   # includes 0 and c
    ((2.5, 4.0), NOT_SIGNIFICANT, vd.INCONCLUSIVE),    # clear of 0 and beyond c, but not after the correction
    ((0.5, 1.5), NOT_SIGNIFICANT, vd.NOT_REPRODUCED),  # short of c, and 0 not excluded once corrected
    ((-3.0, -1.0), NOT_SIGNIFICANT, vd.NOT_REPRODUCED),  # the opposite side needs the adjusted test too
]


@pytest.mark.parametrize("interval, p_adjusted, expected", INCREASE_CASES)
def test_each_rule_for_a_claimed_increase(interval, p_adjusted, expected):
    assert vd.verdict(*interval, p_adjusted, claimed=2.0, direction="increase") == expected


@pytest.mark.parametrize("interval, p_adjusted, expected", INCREASE_CASES)
def test_each_rule_for_a_claimed_decrease_is_the_mirror_image(interval, p_adjusted, expected):
    low, high = interval
    assert vd.verdict(-high, -low, p_adjusted, claimed=-2.0, direction="decrease") == expected


@pytest.mark.parametrize("interval, p_adjusted, direction, expected", [
    ((0.5, 1.5), SIGNIFICANT, "increase", vd.REPRODUCED),
    ((-1.5, -0.5), SIGNIFICANT, "increase", vd.CONTRADICTED),
    ((-1.0, 1.0), NOT_SIGNIFICANT, "increase", vd.INCONCLUSIVE),
    ((0.5, 1.5), NOT_SIGNIFICANT, "increase", vd.INCONCLUSIVE),
    ((-1.5, -0.5), SIGNIFICANT, "decrease", vd.REPRODUCED),
    ((0.5, 1.5), SIGNIFICANT, "decrease", vd.CONTRADICTED),
])
def test_claims_without_a_value_use_the_direction_only(interval, p_adjusted, direction, expected):
    assert vd.verdict(*interval, p_adjusted, claimed=None, direction=direction) == expected


def test_the_rule_table_covers_every_case_with_the_six_verdicts():
    zero_sides = (vd.CLAIMED_SIDE, vd.OPPOSITE_SIDE, vd.INCLUDES_ZERO)
    claim_sides = (vd.COVERS_C, vd.SHORT_OF_C, vd.BEYOND_C, vd.NO_C)
    assert set(vd.VERDICT_RULES) == set(itertools.product(zero_sides, claim_sides))
    assert set(vd.VERDICT_RULES.values()) <= set(vd.VERDICTS)


def test_no_reproduced_or_contradicted_without_a_significant_adjusted_p():
    bounds = [-5.0, -2.0, -0.5, 0.5, 2.0, 5.0]
    for (low, high), claimed, direction in itertools.product(
            [(a, b) for a in bounds for b in bounds if a < b], [None, 1.0, 3.0], ["increase", "decrease"]):
        c = None if claimed is None else claimed * vd.direction_sign(direction)
        for p_adjusted in (0.05, 0.2, 1.0):
            assert vd.verdict(low, high, p_adjusted, c, direction) not in (
                vd.REPRODUCED, vd.CONTRADICTED, vd.SMALLER), (low, high, c, direction, p_adjusted)


def test_an_unknown_direction_is_an_error():
    with pytest.raises(ValueError, match="increase or decrease"):
        vd.verdict(0.5, 1.5, SIGNIFICANT, direction="up")


# ------------------------------------------------------------------ Holm

def test_holm_matches_the_textbook_example():
    # by hand: sorted 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> max(0.06, 0.04)
    assert st.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_keeps_order_of_ties():
    assert st.holm([0.5, 0.6, 0.001]) == pytest.approx([1.0, 1.0, 0.003])
    assert st.holm([0.02, 0.02]) == pytest.approx([0.04, 0.04])
    assert st.holm([]) == []


def test_adjust_for_family_bases_the_effect_on_the_adjusted_p():
    comps = [_comparison(f"arm{i}", delta=0.02, p=p) for i, p in enumerate([0.001, 0.02, 0.04])]
    cmp.adjust_for_family(comps)
    assert [c.p_adjusted for c in comps] == pytest.approx([0.003, 0.04, 0.04])
    assert [c.effect for c in comps] == ["improves", "improves", "improves"]
    comps = [_comparison(f"arm{i}", delta=0.02, p=0.03) for i in range(3)]  # each significant alone
    cmp.adjust_for_family(comps)
    assert {c.effect for c in comps} == {"no detectable effect"}


# ------------------------------------------------------------------ minimum detectable effect

def test_mde_matches_a_computation_by_hand():
    # differences 1, 2, 3 points: sd 1, n 3; t(0.975, 2) = 4.3027 and t(0.80, 2) = 1.0607 (t tables)
    expected = (4.3027 + 1.0607) * 1.0 / math.sqrt(3)
    assert st.minimum_detectable_effect([1.0, 2.0, 3.0]) == pytest.approx(expected, rel=1e-3)
    assert st.minimum_detectable_effect([1.0]) is None
    # a stricter alpha is blinder
    assert st.minimum_detectable_effect([1.0, 2.0, 3.0], alpha=0.05 / 20) > 2 * expected


def test_proportion_mde_matches_a_computation_by_hand():
    # (z 0.975 + z 0.80) * sqrt(0.2 * 0.8 / 400) = (1.95996 + 0.84162) * 0.02
    assert st.minimum_detectable_proportion_gap(0.2, 400) == pytest.approx(2.80158 * 0.02, rel=1e-4)


# ------------------------------------------------------------------ claims table

def _comparison(name, delta, p, low=None, high=None, claims=(), metric="test_accuracy", baseline="baseline"):
    low = delta - 0.01 if low is None else low
    high = delta + 0.01 if high is None else high
    return cmp.Comparison(name, list(claims), "standard", baseline, 3, 0.9, 0.01, 0.9 - delta, delta, low, high, p,
                         0.0, None, metric=metric, differences=[delta - 0.01, delta, delta + 0.01],
                         mde=st.minimum_detectable_effect([delta - 0.01, delta, delta + 0.01]))


TWO_ARM_CLAIM = {"id": "loss.longtail", "claim": "focal +3.5, center +1.8", "direction": "increase",
                 "figure": {"ce": 62.3, "focal": 65.8, "ce_center": 64.1},
                 "claimed": {"focal_longtail": ["ce", "focal"], "center_longtail": ["ce", "ce_center"]}}
FAMILY = {"name": "the 2 tests of ablation test", "size": 2}
SETUPS = {"focal_longtail": "5k images × 8 epochs, 3 seeds, sp_cnn_m",
          "center_longtail": "5k images × 8 epochs, 3 seeds, sp_cnn_m"}


def test_a_claim_with_several_arms_gets_one_row_per_arm():
    comps = [_comparison("focal_longtail", 0.0467, 0.006, 0.0314, 0.0621, claims=["loss.longtail"]),
             _comparison("center_longtail", -0.0422, 0.005, -0.0555, -0.0289, claims=["loss.longtail"])]
    cmp.adjust_for_family(comps)
    rows = cl.ablation_rows(TWO_ARM_CLAIM, comps, SETUPS, FAMILY)
    assert [r["arm"] for r in rows] == ["focal_longtail", "center_longtail"]
    assert [r["claimed"] for r in rows] == pytest.approx([3.5, 1.8])
    assert [r["verdict"] for r in rows] == [vd.REPRODUCED, vd.CONTRADICTED]  # not the worst of the two for both
    for r in rows:
        assert ROW_KEYS <= set(r)
        assert r["setup"] in r["statement"] and "3 seeds" in r["statement"]


def test_rows_report_raw_and_adjusted_p_and_mde_only_when_inconclusive():
    comps = [_comparison("focal_longtail", 0.02, 0.04, -0.01, 0.05, claims=["loss.longtail"]),
             _comparison("center_longtail", 0.02, 0.001, 0.01, 0.03, claims=["loss.longtail"])]
    cmp.adjust_for_family(comps)
    inconclusive, reproduced = cl.ablation_rows(TWO_ARM_CLAIM, comps, SETUPS, FAMILY)
    assert (inconclusive["p"], inconclusive["p_adjusted"]) == pytest.approx((0.04, 0.04))
    assert inconclusive["verdict"] == vd.INCONCLUSIVE
    assert inconclusive["mde"] == pytest.approx(100 * st.minimum_detectable_effect([0.01, 0.02, 0.03]))
    assert reproduced["verdict"] == vd.REPRODUCED and reproduced["mde"] is None
    assert reproduced["p_adjusted"] == pytest.approx(0.002)


def test_a_significant_raw_p_that_does_not_survive_holm_is_not_reproduced():
    # alone, p = 0.03 and an interval clear of 0 would be "reproduced"; in a family of 5 it is not
    comps = [_comparison("focal_longtail", 0.04, 0.03, 0.03, 0.05, claims=["loss.longtail"])]
    comps += [_comparison(f"other{i}", 0.0, 0.5) for i in range(4)]
    cmp.adjust_for_family(comps)
    (r,) = cl.ablation_rows(TWO_ARM_CLAIM, comps, {**SETUPS}, FAMILY)
    assert r["p"] < 0.05 <= r["p_adjusted"]
    assert r["verdict"] == vd.INCONCLUSIVE


@pytest.mark.parametrize("claim, arm, expected", [
    ({"id": "a", "direction": "increase", "figure": {"d": [8, 15]}, "claimed": "d"}, "x", 8.0),
    ({"id": "a", "direction": "decrease", "figure": {"d": [-15, -8]}, "claimed": "d"}, "x", -8.0),
    ({"id": "a", "direction": "decrease", "figure": {"d": -37}, "claimed": "d"}, "x", -37.0),
    ({"id": "a", "direction": "increase", "figure": {"ce": 62.3, "focal": 65.8}, "claimed": ["ce", "focal"]}, "x", 3.5),
    ({"id": "a", "direction": "increase", "figure": {"s": 1.8}, "claimed": {"chain_s": "s"}}, "chain_full", None),
    ({"id": "a", "direction": "increase"}, "x", None),
])
def test_claimed_values_come_from_the_figures(claim, arm, expected):
    value = cl.claimed_value(claim, arm)
    assert value == (pytest.approx(expected) if expected is not None else None)


def test_a_claimed_value_against_the_claimed_direction_is_an_error():
    with pytest.raises(ValueError, match="disagrees with direction"):
        cl.claimed_value({"id": "a", "direction": "increase", "figure": {"d": -1.2}, "claimed": "d"}, "x")


def test_every_claim_of_claims_yaml_can_be_judged_or_says_why_not():
    doc = cl.load_claims(ROOT / "claims.yaml")
    for key in ("not_in_spec", "no_cleaning_results", "no_label_efficiency_results"):
        assert {"reason", "would_take"} <= set(doc["defaults"][key])
    for claim in doc["claims"]:
        if claim.get("not_tested"):
            assert claim["not_tested"]["reason"] and claim["not_tested"]["would_take"], claim["id"]
        elif claim.get("static"):
            assert claim["static"]["check"] in STATIC_CHECKS, claim["id"]
        else:
            assert vd.direction_sign(claim["direction"]), claim["id"]
            for arm in (claim.get("claimed") or {}) if isinstance(claim.get("claimed"), dict) else [None]:
                cl.claimed_value(claim, arm)  # parses, with the claimed direction's sign


def test_the_default_spec_names_only_known_claims():
    from skillpack.evidence.report import check_claim_ids

    check_claim_ids(ab.load_spec(ROOT / "ablations" / "default.yaml"), cl.load_claims(ROOT / "claims.yaml"))
    with pytest.raises(ValueError, match="does not have: ablation.cumulative, arch.compare.flowers, aug.cutmix"):
        check_claim_ids(ab.load_spec(ROOT / "ablations" / "default.yaml"), {"claims": [{"id": "no.such"}]})


# ------------------------------------------------------------------ cleaning and related measurements

def test_cleaning_rows_test_precision_against_the_noise_rate():
    claims = [{"id": "clean.x", "direction": "increase", "cleaning": {"detector": "det"}}]
    results = {"settings": ["symmetric_0.2", "pair_0.2"],
               "symmetric_0.2": {"det": {"precision": 0.6, "recall": 0.5, "f1": 0.55, "flagged": 2000}},
               "pair_0.2": {"det": {"precision": 0.2, "recall": 0.1, "f1": 0.13, "flagged": 500}}}
    better, at_chance = cl.cleaning_rows(claims, results)["clean.x"]
    assert better["verdict"] == vd.REPRODUCED and better["measured"] == pytest.approx(40.0)
    assert at_chance["verdict"] == vd.INCONCLUSIVE and at_chance["measured"] == pytest.approx(0.0)
    assert at_chance["mde"] == pytest.approx(100 * st.minimum_detectable_proportion_gap(0.2, 500))
    assert better["p_adjusted"] == pytest.approx(min(1.0, 2 * better["p"]))  # Holm over the benchmark's 2 tests
    assert "the 2 tests of the cleaning benchmark" in better["statement"]
    assert "500 flagged" in at_chance["setup"]


def test_cleaning_rows_over_noise_draws_use_the_draw_as_the_unit():
    claims = [{"id": "clean.x", "direction": "increase", "cleaning": {"detector": "det"}}]
    precision, rates = [0.60, 0.64, 0.58, 0.66, 0.62], [0.100, 0.101, 0.099, 0.100, 0.102]
    draws = {str(seed): {"det": {"precision": p, "recall": 0.5, "f1": 0.5, "flagged": 1000 + seed}, "noise_rate": r}
             for seed, (p, r) in enumerate(zip(precision, rates))}
    results = {"settings": ["symmetric_0.1", "pair_0.1"],
               "symmetric_0.1": {"det": draws["0"]["det"], "draws": draws},
               "pair_0.1": {"det": {"precision": 0.3, "recall": 0.1, "f1": 0.15, "flagged": 800}}}
    over_draws, single = cl.cleaning_rows(claims, results)["clean.x"]
    differences = [100 * (p - r) for p, r in zip(precision, rates)]
    half = stats.t.ppf(0.975, 4) * np.std(differences, ddof=1) / np.sqrt(5)
    assert over_draws["measured"] == pytest.approx(np.mean(differences))
    assert over_draws["ci_high"] - over_draws["ci_low"] == pytest.approx(2 * half)
    assert over_draws["replicates"] == {"count": 5, "of": "noise draw"} and single["replicates"]["count"] == 1
    assert "5 noise draws (label flips and out-of-fold seeds 0, 1, 2, 3, 4)" in over_draws["setup"]
    assert "median 1,002 flagged" in over_draws["setup"] and "one noise draw" in single["setup"]
    assert over_draws["detail"]["precision"] == pytest.approx(np.mean(precision), abs=1e-3)
    # the claims summary counts replicates per claim and names those with fewer than 5 in every row
    doc = {"claims": [{"id": "clean.x"}, {"id": "clean.y"}]}
    few = dict(over_draws, claim="clean.y", replicates={"count": 3, "of": "seed"})
    summary = claims_report.evidence_summary(doc, [over_draws, single, few])
    assert summary["below_five"] == ["clean.y"]
    line = claims_report._summary_lines(summary)[0]
    assert "clean.x (5 noise draws in 1 of 2 rows, 1 in the others)" in line and "clean.y (3 seeds)" in line


def test_label_efficiency_rows_judge_each_start_against_scratch_paired_by_seed():
    from benchmarks import label_efficiency as le

    budget = le.Budget(datasets=("fashion_mnist",), fractions=(0.01, 1.0), inits=("scratch", "simclr", "lite0"),
                       seeds=(0, 1, 2))
    scratch = {0.01: [0.50, 0.55, 0.52], 1.0: [0.80, 0.81, 0.79]}
    gain = {"simclr": {0.01: [0.01, 0.02, 0.015], 1.0: [0.01, -0.01, 0.0]}, "lite0": {0.01: [0.20, 0.21, 0.19],
                                                                                  1.0: [0.02, 0.03, 0.01]}}
    runs = [{"dataset": "fashion_mnist", "fraction": f, "init": "scratch", "seed": s, "test_accuracy": scratch[f][s],
             "cpu_seconds": 1.0} for f in scratch for s in range(3)]
    runs += [{"dataset": "fashion_mnist", "fraction": f, "init": i, "seed": s,
              "test_accuracy": scratch[f][s] + gain[i][f][s], "cpu_seconds": 1.0}
             for i in gain for f in scratch for s in range(3)]
    results = {"budget": asdict(budget), "model": le.MODEL, "summary": le.summarise(runs, budget)}
    claims = [{"id": "frontier.x", "direction": "increase", "label_efficiency": {"init": "simclr"}}]
    one_percent, full = cl.label_efficiency_rows(claims, results)["frontier.x"]
    assert one_percent["measured"] == pytest.approx(1.5) and full["measured"] == pytest.approx(0.0, abs=1e-9)
    assert one_percent["baseline"] == "scratch" and one_percent["arm"] == "simclr_fashion_mnist_0.01"
    assert one_percent["p_adjusted"] >= one_percent["p"], "Holm over the benchmark's 4 paired differences"
    assert "the 4 paired differences of the label-efficiency benchmark" in one_percent["statement"]
    assert full["verdict"] == vd.INCONCLUSIVE and one_percent["correction"] == cl.ZERO_SIDE_ONLY
    assert results["summary"]["pretrained_vs_scratch_at_1pct"]["delta"] == pytest.approx(0.20)
    assert results["summary"]["simclr_vs_scratch_at_1pct"]["delta"] == pytest.approx(0.015)


def test_the_amp_row_is_rendered_from_the_benchmark_results_passed_in():
    claim = {"id": "eng.amp", "not_tested": {"reason": "needs CUDA", "would_take": "a GPU"},
             "related": {"cpu_bf16": {"model": "m", "control_recipe": "default", "treated_recipe": "bf16"}}}
    benchmarks = {"train_speed": {"models": {"m": {"engine_choices": {"bf16_speedup": 3.25}}}},
                  "time_to_accuracy": {"recipes": {"default": {"acc": 0.91, "train_s": 300.0, "seeds": [0, 1]},
                                                   "bf16": {"acc": 0.905, "train_s": 200.0, "seeds": [0, 1]}}}}
    r = cl.with_related(cl.not_tested_row(claim, claim["not_tested"]), claim, benchmarks)
    assert r["verdict"] == vd.NOT_TESTED and r["not_tested"] == {"reason": "needs CUDA", "would_take": "a GPU"}
    assert "3.25x" in r["statement"] and "1.50x" in r["statement"] and "200 vs 300 s" in r["statement"]
    assert r["related"]["cpu_bf16"]["recipe_speedup"] == pytest.approx(1.5)
    bare = cl.with_related(cl.not_tested_row(claim, claim["not_tested"]), claim, {})
    assert "related" not in bare and "x faster" not in bare["statement"]


# ------------------------------------------------------------------ the whole report, from synthetic runs

def _synthetic_runs(spec):
    """Every (arm, seed) of the spec: accuracy = 0.85 + an arm offset + a seed wobble."""
    runs = []
    index = {a.name: i for i, a in enumerate(spec.arms + spec.cumulative)}
    by_name = {a.name: a for a in spec.arms + spec.cumulative}
    for name, seed in spec.planned_runs():
        i, arm = index[name], by_name[name]
        runs.append({"arm": arm.name, "seed": seed, "regime": arm.regime, "claims": arm.claims,
                     "final_val_acc": 0.84 + 0.003 * (i % 7),
                     "test_accuracy": 0.85 + 0.004 * (i % 5) + 0.001 * seed * (i % 3),
                     "train_seconds": 30.0 + i, "intra_class_distance": 0.35 + 0.01 * seed * (i % 2),
                     "recall_at_1": 0.8 + 0.002 * seed * (i % 3), "tar_at_far": 0.3 + 0.003 * seed * (i % 2),
                     "loss_oscillation": 0.05 + 0.001 * seed * (i % 3),
                     "val_acc_by_epoch": [0.7, 0.78 + 0.01 * (i % 4), 0.82], "n_train": 8000})
    return runs


def test_the_claims_table_from_stored_runs_has_the_schema(tmp_path, monkeypatch):
    from skillpack.evidence.report import write_ablation_reports

    monkeypatch.chdir(ROOT)  # params.yaml and claims.yaml
    spec = ab.load_spec("ablations/default.yaml")
    doc = cl.load_claims()
    # the static checks build timm models: left out here (test_ablation checks them)
    doc["claims"] = [{k: v for k, v in c.items() if k != "static"} for c in doc["claims"]]
    out = write_ablation_reports(spec, _synthetic_runs(spec), tmp_path, command="python -m flows.ablation x",
                                 claims_doc=doc)
    table = out["claims"]
    assert {r["claim"] for r in table} == {c["id"] for c in doc["claims"]}
    for r in table:
        assert ROW_KEYS <= set(r)
        assert r["verdict"] in vd.VERDICTS
        if r["verdict"] in (vd.REPRODUCED, vd.CONTRADICTED, vd.SMALLER):
            assert r["p_adjusted"] < st.ALPHA
        if r["verdict"] == vd.INCONCLUSIVE:
            assert r["mde"] is not None
        if r["arm"] and r.get("n_seeds"):
            assert f"{r['n_seeds']} seeds" in r["setup"] and "epochs" in r["setup"]
    # one row per arm that tests a claim
    by_claim = {}
    for r in table:
        by_claim.setdefault(r["claim"], []).append(r["arm"])
    main_rows = [r["arm"] for r in table if r["claim"] == "aug.params" and r.get("family") == "main"]
    assert main_rows == ["aug_basic_small_data", "aug_flip_crop", "mixup", "autoaugment", "mixup_small",
                         "autoaugment_small"]
    assert "aug_flip_crop@27ep" in by_claim["aug.params"]  # the budget curve's points are rows too
    assert by_claim["loss.longtail"] == ["focal_longtail", "center_longtail"]
    assert {"clean.dbscan"} <= {r["claim"] for r in table if r["verdict"] == vd.NOT_TESTED}  # no results passed
    for name in ("ablation.md", "ablation.json", "claims.md", "claims.json", "ablation_deltas.png",
                 "ablation_waterfall.png"):
        assert (tmp_path / name).is_file(), name


def test_rendering_without_a_run_of_every_arm_says_so(tmp_path, monkeypatch):
    from skillpack.evidence.report import write_ablation_reports

    monkeypatch.chdir(ROOT)
    spec = ab.load_spec("ablations/default.yaml")
    runs = [r for r in _synthetic_runs(spec) if r["arm"] != "cutmix"]
    with pytest.raises(ValueError, match="cutmix/seed0"):
        write_ablation_reports(spec, runs, tmp_path, command="x")


def test_skillpack_imports_neither_flows_nor_benchmarks_nor_reads_their_results():
    for path in (ROOT / "skillpack").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in ("flows", "benchmarks") for n in names), path
        assert "benchmarks/results" not in path.read_text(), path


# ------------------------------------------------------------------ both sides corrected, non-inferiority

def test_the_family_interval_is_the_bonferroni_t_interval_of_the_same_differences():
    diffs = np.array([0.8, 1.4, 0.3, 1.1, 0.9])
    t = st.paired_t_test(diffs, np.zeros(5))
    low, high = st.family_interval(t["ci_low"], t["ci_high"], 5, family_size=8)
    sem = diffs.std(ddof=1) / math.sqrt(5)
    q = stats.t.ppf(1 - 0.05 / (2 * 8), 4)
    assert (low, high) == pytest.approx((diffs.mean() - q * sem, diffs.mean() + q * sem))
    assert st.family_interval(t["ci_low"], t["ci_high"], 5, family_size=1) == (t["ci_low"], t["ci_high"])


def test_the_claimed_value_is_compared_with_the_family_interval():
    # short of c = +1.0 at the 95% level ([-0.5, 0.8]), but the family-level interval reaches c:
    # with the zero side not significant that is "inconclusive", no longer "not reproduced"
    assert vd.verdict(-0.5, 0.8, 0.4, claimed=1.0) == vd.NOT_REPRODUCED
    assert vd.verdict(-0.5, 0.8, 0.4, claimed=1.0, family=(-1.1, 1.4)) == vd.INCONCLUSIVE
    # a clear effect whose family interval falls short of c stays "smaller than claimed"
    assert vd.verdict(0.2, 0.4, 0.001, claimed=1.0, family=(0.1, 0.5)) == vd.SMALLER


@pytest.mark.parametrize("interval, expected", [
    ((-0.9, -0.1), vd.REPRODUCED),      # surely costs less than 1.2 points
    ((-2.0, -1.5), vd.CONTRADICTED),    # surely costs more
    ((-1.6, -0.4), vd.INCONCLUSIVE),    # straddles the margin
])
def test_a_cost_claim_is_read_as_non_inferiority_at_its_margin(interval, expected):
    assert vd.cost_verdict(*interval, margin=1.2) == expected


def test_the_pruning_claim_is_judged_by_non_inferiority_and_records_its_margin_and_correction():
    claim = next(c for c in cl.load_claims()["claims"] if c["id"] == "light.pruning")
    assert cl.non_inferiority_margin(claim) == pytest.approx(1.2)
    comps = [_comparison("pruned_80", -0.005, 0.2, -0.008, -0.002, claims=["light.pruning"],
                         baseline="baseline_finetuned")]
    cmp.adjust_for_family(comps)
    (judged,) = cl.ablation_rows(claim, comps, {"pruned_80": "pruned"}, FAMILY)
    assert judged["verdict"] == vd.REPRODUCED and judged["margin"] == pytest.approx(1.2)
    assert judged["correction"] == "both sides"
    assert judged["family_ci_low"] < judged["ci_low"] <= judged["ci_high"] < judged["family_ci_high"]


def test_claims_md_opens_with_one_line_per_claim_of_claims_yaml():
    claims_doc = cl.load_claims()
    comps = [_comparison("pruned_80", -0.005, 0.2, -0.008, -0.002, claims=["light.pruning"], baseline="baseline_finetuned")]
    cmp.adjust_for_family(comps)
    pruning = next(c for c in claims_doc["claims"] if c["id"] == "light.pruning")
    table = cl.ablation_rows(pruning, comps, {"pruned_80": "pruned"}, FAMILY)
    text = claims_report.claims_markdown(claims_doc, table, ["Rendered by a test.", "The rules."])
    summary = text.split("## Every claim in one line")[1].split("## Every row")[0]
    rows = [line for line in summary.splitlines() if line.startswith("| ") and not line.startswith("| claim |")]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == [c["id"] for c in claims_doc["claims"]]
    (line,) = [row for row in rows if row.startswith("| light.pruning ")]
    assert f"**{table[0]['verdict']}**" in line and "[rows](#lightpruning)" in line
    assert '<a id="lightpruning"></a>light.pruning' in text.split("## Every row")[1]
    assert text.index("## Every claim in one line") < text.index("The rules.")
