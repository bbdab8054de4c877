"""The ablation engine: spec, statistics, verdicts, resumable results, and the quick flow."""
import json
import sys

import numpy as np
import pytest

from skillpack import ablation as ab
from skillpack.verdicts import VERDICTS

from conftest import make_project_repo, project_env, run

SPEC = "ablations/default.yaml"


def test_default_spec_has_the_required_arms_and_claims():
    spec = ab.load_spec(SPEC)
    arms = {a.name for a in spec.arms if not a.name.startswith("baseline")}
    assert len(arms) >= 14
    for needed in ("aug_basic_small_data", "cutmix", "mixup", "autoaugment", "label_smoothing", "focal_longtail",
                   "center_loss", "cosine_vs_step", "onecycle", "warmup", "adamw_vs_sgd", "lookahead",
                   "lars_large_batch", "ema", "distillation"):
        assert needed in arms, needed
    assert spec.seeds == [0, 1, 2]
    assert [a.name for a in spec.cumulative][0] == "chain_baseline"
    # the chain accumulates: the last step carries every earlier override
    last = spec.cumulative[-1]
    assert last.overrides["train.augment.hflip"] is True and last.overrides["train.loss.label_smoothing"] == 0.1
    assert last.baseline == spec.cumulative[-2].name
    for arm in spec.arms + spec.cumulative:  # every configuration is valid params
        ab.run_params(spec, arm, 0)


def test_quick_profile_shrinks_the_runs():
    spec = ab.load_spec(SPEC, quick=True)
    assert spec.seeds == [0, 1]
    assert spec.regimes["standard"]["max_train"] == 600
    assert ab.run_params(spec, spec.arm("cutmix"), 0).train.epochs == 1


def test_paired_ci_and_p_value_match_scipy_by_hand():
    from scipy import stats

    arm, base = [0.91, 0.92, 0.925], [0.90, 0.905, 0.91]
    out = ab.paired_comparison(arm, base)
    d = np.subtract(arm, base)
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert out["delta"] == pytest.approx(d.mean())
    assert out["ci_low"] == pytest.approx(d.mean() - half) and out["ci_high"] == pytest.approx(d.mean() + half)
    assert out["p_value"] == pytest.approx(stats.ttest_rel(arm, base).pvalue)


@pytest.mark.parametrize("delta, p_adjusted, metric, expected", [
    (0.01, 0.01, "test_accuracy", "improves"), (-0.01, 0.01, "test_accuracy", "hurts"),
    (0.01, 0.06, "test_accuracy", "no detectable effect"),   # significant alone, not after the correction
    (-0.01, 0.05, "test_accuracy", "no detectable effect"),  # the threshold itself is not significant
    (-0.02, 0.001, "intra_class_distance", "lower")])
def test_effects_are_judged_on_the_adjusted_p_value(delta, p_adjusted, metric, expected):
    assert ab.effect(delta, p_adjusted, metric) == expected


def test_long_tailed_subset_has_the_imbalance_ratio():
    labels = np.repeat(np.arange(10), 500)
    idx = ab.long_tailed_indices(labels, imbalance_ratio=100, max_per_class=400, seed=0)
    counts = np.bincount(labels[idx])
    assert counts[0] == 400 and counts[-1] == 4
    assert counts[0] / counts[-1] == pytest.approx(100)
    assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_result_store_key_changes_with_config_seed_and_data(tmp_path):
    spec = ab.load_spec(SPEC, quick=True)
    arm = spec.arm("cutmix")
    p0, p1 = ab.run_params(spec, arm, 0), ab.run_params(spec, arm, 1)
    k = ab.run_key(0, p0, "data1", {"max_train": 600})
    assert k == ab.run_key(0, ab.run_params(spec, arm, 0), "data1", {"max_train": 600})
    assert k != ab.run_key(1, p1, "data1", {"max_train": 600})
    assert k != ab.run_key(0, p0, "data2", {"max_train": 600})
    assert k != ab.run_key(0, p0, "data1", {"max_train": 700})
    assert k != ab.run_key(0, ab.run_params(spec, spec.arm("label_smoothing"), 0), "data1", {"max_train": 600})
    # what a run does not read does not invalidate its stored result
    unrelated = p0.model_copy(update={"serve": p0.serve.model_copy(update={"port": 9999}),
                                      "clean": p0.clean.model_copy(update={"policy": "drop"})})
    assert k == ab.run_key(0, unrelated, "data1", {"max_train": 600})
    store = ab.ResultStore(tmp_path)
    assert store.get(k) is None
    store.put(k, {"test_accuracy": 0.5})
    assert store.get(k) == {"test_accuracy": 0.5}


def test_static_claims_are_computed():
    from skillpack.claims import load_claims, static_row

    claims = {c["id"]: c for c in load_claims()["claims"]}
    static = {cid: static_row(claims[cid]) for cid in ("arch.efficientnet_b4.params", "light.mobilenetv3.params",
                                                        "sched.onecycle", "loss.focal.weight", "viz.overfit_gap")}
    assert {r["verdict"] for r in static.values()} == {"static"}
    assert static["arch.efficientnet_b4.params"]["measured"] == pytest.approx(19.3, abs=0.3)
    assert static["light.mobilenetv3.params"]["measured"] == pytest.approx(5.48, abs=0.1)
    shape = static["sched.onecycle"]["measured"]
    assert shape["max_lr"] == pytest.approx(3e-3) and shape["peak_step"] < shape["steps"] / 2
    assert shape["final_lr"] == pytest.approx(1e-6, rel=0.05)
    ratios = static["loss.focal.weight"]["measured"]
    assert ratios["p_easy=0.9,p_hard=0.8"] == pytest.approx(4.0) and ratios["p_easy=0.9,p_hard=0.5"] == pytest.approx(25.0)
    assert static["viz.overfit_gap"]["measured"] == static["viz.overfit_gap"]["claimed"] == 0.5


def test_quick_ablation_flow_runs_resumes_and_reports(tmp_path):
    """The Prefect flow on a small real subset: reports + json twins, child runs in MLflow,
    and a second run that recomputes nothing."""
    from mlflow import MlflowClient

    repo = make_project_repo(tmp_path / "abl", {"data.max_train": 6000, "data.max_test": 1000})
    env = project_env(repo)
    run([sys.executable, "-m", "dvc", "repro", "validate"], repo, env=env)
    run([sys.executable, "-m", "flows.ablation", SPEC, "--quick"], repo, env=env)
    report = json.loads((repo / "reports" / "ablation_quick.json").read_text())
    arms = {a["name"]: a for a in report["arms"]}
    assert {"aug_flip_crop", "cutmix", "label_smoothing", "focal_longtail", "lars_large_batch", "distillation"} <= set(arms)
    for a in arms.values():
        assert {"name", "claims", "n_seeds", "mean", "delta", "ci_low", "ci_high", "p_value", "p_adjusted", "effect",
                "mde", "extra_seconds"} <= set(a)
        assert a["n_seeds"] == 2 and a["effect"] in ab.EFFECTS
        assert (a["effect"] == "no detectable effect") == (a["p_adjusted"] >= 0.05)
    assert report["family"]["tests"] == len(report["arms"]) + len(report["cumulative"]) + len(report["secondary"])
    rows = json.loads((repo / "reports" / "claims_quick.json").read_text())
    keys = {"claim", "arm", "verdict", "measured", "ci_low", "ci_high", "claimed", "p", "p_adjusted", "mde", "setup"}
    assert all(keys <= set(r) for r in rows)
    assert all(r["p_adjusted"] < 0.05 for r in rows if r["verdict"] in ("reproduced", "contradicted"))
    (cutmix,) = [r for r in rows if r["claim"] == "aug.cutmix"]
    assert cutmix["arm"] == "cutmix" and cutmix["verdict"] in VERDICTS and "2 seeds" in cutmix["setup"]
    (vit,) = [r for r in rows if r["claim"] == "arch.vit_base.jft"]
    assert vit["verdict"] == "not tested" and vit["not_tested"]["reason"]
    for name in ("ablation_quick.md", "claims_quick.md", "ablation_deltas_quick.png", "ablation_waterfall_quick.png"):
        assert (repo / "reports" / name).exists(), name
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("skillpack")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.stage = 'ablation' and tags.spec = 'default'")
    parent = [p for p in parents if "mlflow.parentRunId" not in p.data.tags][0]
    children = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    n_runs = len(report["runs"])
    assert len(children) == n_runs
    assert {c.data.tags["arm"] for c in children} >= {"cutmix", "baseline"}
    assert all(c.data.tags["seed"] in ("0", "1") for c in children)

    second = run([sys.executable, "-m", "flows.ablation", SPEC, "--quick"], repo, env=env)
    assert f"{n_runs} runs, {n_runs} from the result store" in second.stdout + second.stderr
