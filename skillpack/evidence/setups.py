"""What each arm of an ablation trained on - images, epochs, seeds, model, regime, the model it
starts from and the teacher it distils from - as the reports show it beside every comparison.
"""
from __future__ import annotations

import numpy as np

from skillpack.evidence import ablation as ab
from skillpack.evidence.comparisons import Comparison, results_by_key


def images_text(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else f"{n:,}"


def arm_setup(spec: ab.Spec, arm: ab.Arm, runs: dict) -> dict:
    params = ab.run_params(spec, arm, spec.seeds[0])
    train = params.train
    regime = spec.regimes[arm.regime]
    setup = {"n_train": runs[(arm.name, spec.seeds[0])]["n_train"], "epochs": train.epochs,
             "seeds": sum(1 for (name, _) in runs if name == arm.name),
             "model": train.model, "batch_size": train.batch_size, "regime": arm.regime,
             "imbalance_ratio": regime.get("imbalance_ratio"), "regime_sets_batch": "train.batch_size" in regime,
             "dataset": regime.get("dataset"), "resampled": spec.resample and bool(regime.get("max_train")
                                                                                   or regime.get("imbalance_ratio"))}
    if arm.start:
        origin = spec.arm(arm.start["from"])
        setup["start"] = {**arm.start, "epochs": ab.run_params(spec, origin, spec.seeds[0]).train.epochs}
    teacher = ab.teacher_name(params)
    if teacher:
        accuracies = [r["teacher_test_accuracy"] for (name, _), r in runs.items()
                      if name == arm.name and "teacher_test_accuracy" in r]
        body = spec.seed_teachers.get(teacher) or spec.teachers[teacher]
        setup["teacher"] = {"name": teacher, "per_seed": teacher in spec.seed_teachers,
                            "model": ab.run_params(spec, ab.Arm(teacher, body.get("overrides", {}),
                                                                regime=body.get("regime", arm.regime)),
                                                   spec.seeds[0]).train.model,
                            "test_accuracy_mean": float(np.mean(accuracies)) if accuracies else None}
    return setup


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def setup_text(setup: dict, seeds: int | None = None) -> str:
    """'8k images × 6 epochs, 5 seeds, sp_cnn_m', with what the regime changes; `seeds`: the
    comparison's own count (arms and their budget copies run on their own fixed counts)."""
    tail = f"long-tailed {setup['imbalance_ratio']:g}:1 " if setup["imbalance_ratio"] else ""
    where = f" of {setup['dataset']}" if setup.get("dataset") else ""
    batch = f", batch {setup['batch_size']}" if setup["regime_sets_batch"] else ""
    drawn = " (drawn per seed)" if setup.get("resampled") else ""
    training = _count(setup["epochs"], "epoch")
    start = setup.get("start")
    if start:
        pruned = (f", pruned to {1 - start['prune_ratio']:.0%} of its channels ({start['prune_importance']})"
                  if start.get("prune_ratio") is not None else "")
        training = f"{_count(start['epochs'], 'epoch')} ({start['from']}'s run){pruned}, + {training} of fine-tuning"
    teacher = setup.get("teacher")
    taught = ""
    if teacher:
        taught = f", distilled from {teacher['model']} trained {'per seed' if teacher['per_seed'] else 'once'}"
        if teacher.get("test_accuracy_mean") is not None:
            taught += f" (its test accuracy {teacher['test_accuracy_mean']:.4f}, mean)"
    return (f"{images_text(setup['n_train'])} {tail}images{where}{drawn} × {training}{batch}, "
            f"{_count(seeds or setup['seeds'], 'seed')}, {setup['model']}{taught}")


def arm_setups(spec: ab.Spec, runs: list[dict]) -> dict[str, dict]:
    results = results_by_key(runs)
    return {a.name: arm_setup(spec, a, results) for a in spec.arms + spec.cumulative}


def comparison_setups(tests: list[Comparison], setups: dict[str, dict]) -> dict[str, str]:
    """Arm name -> its setup text, with the seeds of its comparison."""
    return {c.name: setup_text(setups.get(c.name) or setups[c.baseline], c.n_seeds) for c in tests}
