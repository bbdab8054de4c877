"""The claims report's reading aids, rendered from the rows: a section per topic of claims, the
caveat on budget and model size, and the charts' claimed values (each claim's own)."""
from pathlib import Path

import pytest

from skillpack.evidence import ablation as ab
from skillpack.evidence import budget_caveat as bc
from skillpack.evidence import charts, claims_report
from skillpack.evidence import claims as cl
from skillpack.evidence import comparisons as cmp
from skillpack.evidence.claim_topics import claims_by_topic

ROOT = Path(__file__).resolve().parent.parent
HEADER = ["Rendered by a test.", "The rules."]


@pytest.fixture(scope="module")
def spec() -> ab.Spec:
    return ab.load_spec(ROOT / "ablations" / "default.yaml")


def _comparison(name: str, claims: list[str], delta: float = -0.02, metric: str = cl.ACCURACY) -> cmp.Comparison:
    return cmp.Comparison(name, list(claims), "standard", "baseline", 5, 0.8, 0.01, 0.8 - delta, delta,
                          delta - 0.01, delta + 0.01, 0.01, 0.0, None, metric=metric, effect="hurts")


# ------------------------------------------------------------------ topic sections

DOC = {"topics": {"aug": {"title": "data augmentation", "about": "augmentations against none"},
                  "eng": {"title": "engineering", "about": "speed-ups"}},
       "claims": [{"id": "aug.one", "claim": "augmentation helps", "direction": "increase"},
                  {"id": "aug.two", "claim": "cutmix helps", "direction": "increase"},
                  {"id": "eng.fast", "claim": "fp16 is fast", "not_tested": {"reason": "no GPU", "would_take": "a GPU"}}]}


def _row(claim_id: str, verdict: str, measured: float, low: float, high: float, setup: str, **extra) -> dict:
    return cl.row({"id": claim_id}, verdict, f"{verdict} at {setup}", arm=f"arm_{claim_id}", measured=measured,
                  ci_low=low, ci_high=high, setup=setup, baseline="baseline", unit="points", metric="test_accuracy",
                  family="main", **extra)


def _topics_text(table: list[dict]) -> str:
    text = claims_report.claims_markdown(DOC, table, HEADER)
    return text.split("## What each topic shows")[1].split("## Every row")[0]


def test_each_topic_gets_a_section_with_its_counts_and_strongest_effect_from_the_rows():
    table = [_row("aug.one", "contradicted", -3.17, -4.02, -2.32, "500 images x 60 epochs"),
             _row("aug.two", "inconclusive", 0.41, -0.52, 1.34, "2k images x 9 epochs", mde=1.23, mde_family=2.04),
             cl.not_tested_row(DOC["claims"][2], DOC["claims"][2]["not_tested"])]
    text = _topics_text(table)
    aug, eng = text.split("### aug: data augmentation")[1].split("### eng: engineering")
    assert "What it tests: augmentations against none." in aug
    assert "2 claims: 1 contradicted (aug.one); 1 inconclusive (aug.two)" in aug
    assert "the smallest effect it could detect (MDE): 1.23 points on test_accuracy" in aug
    assert ("aug.one, arm_aug.one vs baseline: -3.17 points [-4.02, -2.32] (95% CI) on test_accuracy, "
            "**contradicted**, at 500 images x 60 epochs") in aug
    assert "1 claim: 1 not tested (eng.fast)" in eng and "No row of this topic has a measured interval" in eng


def test_the_sections_follow_the_rows_when_the_results_change():
    # the same claims, other results: every figure and verdict of the sections moves with them
    table = [_row("aug.one", "reproduced", 9.46, 8.81, 10.11, "8k images x 12 epochs"),
             _row("aug.two", "reproduced", 2.2, 1.1, 3.3, "2k images x 9 epochs")]
    aug = _topics_text(table).split("### aug: data augmentation")[1].split("### eng")[0]
    assert "2 claims: 2 reproduced (aug.one, aug.two)" in aug and "contradicted" not in aug
    assert "+9.46 points [+8.81, +10.11]" in aug and "at 8k images x 12 epochs" in aug
    assert "inconclusive" not in aug


def test_a_claim_whose_arms_disagree_is_counted_as_mixed():
    table = [_row("aug.one", "contradicted", -3.0, -4.0, -2.0, "s"),
             {**_row("aug.one", "inconclusive", 0.2, -0.5, 0.9, "s"), "arm": "other"}]
    assert "1 mixed over its arms (aug.one: 1 contradicted, 1 inconclusive)" in _topics_text(table)


def test_every_claim_of_claims_yaml_has_a_described_topic_and_a_missing_one_is_named():
    doc = cl.load_claims(ROOT / "claims.yaml")
    assert sum(len(c) for c in claims_by_topic(doc).values()) == len(doc["claims"])
    with pytest.raises(ValueError, match="claims.yaml: topics: no entry for 'eng' \\(claim eng.fast\\)"):
        claims_by_topic({**DOC, "topics": {"aug": DOC["topics"]["aug"]}})


# ------------------------------------------------------------------ budget caveat

def _run(arm: str, n_train: int, params: int, seed: int = 0) -> dict:
    return {"arm": arm, "seed": seed, "n_train": n_train, "params": params}


def test_the_caveat_compares_the_longest_budget_and_the_models_with_the_reference(spec):
    epochs = {name: ab.run_params(spec, spec.arm(name), 0).train.epochs
              for name in ("baseline", "baseline_small_batch_8k", "baseline_resnet", "pruned_80")}
    runs = [_run("baseline", 2000, 70_330), _run("baseline_small_batch_8k", 7000, 70_330),
            _run("baseline_resnet", 2000, 11_175_370), _run("pruned_80", 2000, 45_000)]
    caveat = bc.budget_caveat(spec, runs)
    longest = epochs["baseline_small_batch_8k"] * 7000
    assert caveat["longest"]["arm"] == "baseline_small_batch_8k" and caveat["longest"]["samples"] == longest
    pruned = next(b for b in bc.run_budgets(spec, runs) if b["arm"] == "pruned_80")
    assert pruned["samples"] == (epochs["pruned_80"] + epochs["baseline"]) * 2000  # its start's training counts
    text = "\n".join(claims_report.claims_markdown(DOC, [], HEADER, caveat).split("## Budget and model size")[1:])
    assert f"= {longest:,} samples seen) is {bc.REFERENCE_SAMPLES / longest:,.0f}x below" in text
    assert f"{bc.REFERENCE_PARAMS / 70_330:,.0f}x smaller than ResNet-18's 11.2 M" in text
    assert "resnet18, 11,175,370 parameters, about the same as ResNet-18's" in text
    assert "small models and short budgets on 28-px grayscale images (fashion_mnist)" in text
    assert text.index("samples seen") < claims_report.claims_markdown(DOC, [], HEADER, caveat).index("## Every row")


def test_the_caveat_words_follow_the_numbers(spec):
    caveat = bc.budget_caveat(spec, [_run("baseline_small_batch_8k", 1_000_000, 25_000_000)])
    text = "\n".join(bc.caveat_lines(caveat))
    assert "short budgets" not in text and "small models" not in text
    assert "above" in text and "larger than ResNet-18's" in text
    assert bc.budget_caveat(spec, [{"arm": "baseline", "seed": 0}]) is None  # no run records its size


# ------------------------------------------------------------------ the charts' claimed values

def test_a_claims_budget_chart_draws_its_own_claimed_value_not_another_claim_of_the_arm(spec):
    doc = cl.load_claims(ROOT / "claims.yaml")
    by_id = {c["id"]: c for c in doc["claims"]}
    tests = [_comparison(a.name, a.claims) for a in spec.arms]
    # aug_basic_small_data tests aug.overall (claimed +8) and aug.params (direction only)
    assert {"aug.overall", "aug.params"} <= set(spec.arm("aug_basic_small_data").claims)
    params_panels = charts.claim_curve_panels(spec, tests, by_id["aug.params"])
    assert params_panels and all(panel["claimed"] == [] for panel in params_panels)
    overall = charts.claim_curve_panels(spec, tests, by_id["aug.overall"])
    assert [panel["claimed"] for panel in overall] == [[cl.claimed_value(by_id["aug.overall"])]]
    colours = [{line["label"]: line["colour"] for line in panel["lines"]} for panel in params_panels]
    assert all(c[arm] == colours[0][arm] for c in colours for arm in c if arm in colours[0])


def test_the_waterfall_draws_the_total_from_the_start_with_the_chains_claimed_values():
    doc = cl.load_claims(ROOT / "claims.yaml")
    chain = [_comparison("chain_augmentation", ["ablation.cumulative"]),
             _comparison("chain_label_smoothing", ["loss.label_smoothing", "ablation.cumulative"]),
             _comparison("chain_total", ["ablation.cumulative"], delta=-0.03)]
    doc["claims"] = [{**c, "claimed": "epsilon"} if c["id"] == "loss.label_smoothing" else c for c in doc["claims"]]
    steps, total = charts.chain_bars(chain, doc, "chain_total")
    figure = next(c for c in doc["claims"] if c["id"] == "ablation.cumulative")["figure"]
    assert [s["label"] for s in steps] == ["+augmentation", "+label_smoothing"]  # the total is no step
    assert [s["claimed"] for s in steps] == [figure["aug"], figure["label_smoothing"]]  # not label smoothing's 0.1
    assert total["label"] == "+total" and total["claimed"] == figure["total"] and total["delta"] == pytest.approx(-3)
