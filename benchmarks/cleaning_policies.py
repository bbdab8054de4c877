"""What to do with the flagged samples: alternatives to `drop` at 20% symmetric noise.

    python -m benchmarks.cleaning_policies [--train-seeds 0 1]      # ~22 min on 2 cores

`python -m benchmarks.cleaning` found that dropping the ensemble's flags wins back only part of
the accuracy lost to noise, while dropping exactly the flipped samples (the oracle) wins back
most of it: the gap is the ~2,700 hard clean samples dropped with them. This probe trains
the benchmark's final model (sp_cnn_s, 8 epochs, as many steps as the noisy run) on views that
try to keep those samples, all from the same cached out-of-fold predictions:

- relabel: every flagged sample gets the fold models' label (the `relabel` policy);
- relabel_confident: relabel where the fold models' mean probability of their label reaches
  that class's threshold t_j (cleanlab's per-class mean self-confidence), drop the rest;
- drop_confident: drop only those confident flags, keep the others as given;
- drop_low_self: drop flags whose given label's probability is below t_j / 2;

and three diagnostic views read off the ground truth, which say what the dropped view's lost
accuracy is made of: drop only the flags that are flipped (the cost of the missed flips), drop
all flipped samples plus the flagged clean ones (the cost of those clean samples), and all
flipped samples plus as many clean ones drawn at random (the cost of their number alone).

Writes benchmarks/results/cleaning_policies.json (per policy: kept, noise_left, clean_dropped,
acc_by_seed, acc, recovered - against acc_clean / acc_noisy of the same seeds, read from
benchmarks/results/cleaning.json) and reports/cleaning/policies.png (`--plot-only` redraws it
from the JSON).
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks.cleaning import PLOTS, cached_oof, median, same_steps, train_and_score
from benchmarks.common import RESULTS, save
from skillpack.config import load_params
from skillpack.data import cleaning
from skillpack.data.store import prepare_splits

SETTING = "symmetric_0.2"


def class_thresholds(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """t_j: the mean probability of class j over the samples labelled j."""
    self_conf = probs[np.arange(len(labels)), labels]
    return np.array([self_conf[labels == c].mean() for c in range(num_classes)])


def views(flag: np.ndarray, probs: np.ndarray, noisy: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """policy -> (kept rows, their labels)"""
    n = len(noisy)
    suggested = probs.argmax(1)
    t = class_thresholds(probs, noisy, probs.shape[1])
    confident = probs[np.arange(n), suggested] >= t[suggested]
    low_self = probs[np.arange(n), noisy] < 0.5 * t[noisy]

    def relabel_where(change, drop):
        labels = np.where(change, suggested, noisy)
        kept = np.flatnonzero(~drop)
        return kept, labels[kept]

    return {
        "relabel": relabel_where(flag, np.zeros(n, bool)),
        "relabel_confident": relabel_where(flag & confident, flag & ~confident),
        "drop_confident": relabel_where(np.zeros(n, bool), flag & confident),
        "drop_low_self": relabel_where(np.zeros(n, bool), flag & low_self),
    }


def diagnostic_views(flag: np.ndarray, flipped: np.ndarray, noisy: np.ndarray,
                     seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What costs the dropped view its accuracy, read off the ground truth (so not policies):
    the flipped samples it misses, or the clean ones it drops - because of their number or
    because of which ones they are."""
    clean_flagged = flag & ~flipped
    rng = np.random.default_rng(seed)
    random_clean = np.zeros(len(noisy), bool)
    random_clean[rng.choice(np.flatnonzero(~flipped), int(clean_flagged.sum()), replace=False)] = True

    def dropping(drop):
        kept = np.flatnonzero(~drop)
        return kept, noisy[kept]

    return {
        "diag_drop_found_flips_only": dropping(flag & flipped),
        "diag_drop_all_flips_and_flagged_clean": dropping(flipped | clean_flagged),
        "diag_drop_all_flips_and_random_clean": dropping(flipped | random_clean),
    }


def plot_policies(figures: dict) -> None:
    """Test accuracy per policy, one dot per training seed, between the noisy and clean medians."""
    import matplotlib.pyplot as plt

    from skillpack.plots import _save

    base = figures["baseline"]
    rows = {f"drop ({base.get('use', 'ensemble')})": base["acc_cleaned_by_seed"],
            **{name: r["acc_by_seed"] for name, r in figures["policies"].items()},
            "oracle: drop exactly the flipped": base["acc_oracle_by_seed"]}
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for y, by_seed in enumerate(rows.values()):
        ax.scatter(list(by_seed.values()), [y] * len(by_seed), color="tab:blue", zorder=3)
        ax.scatter([median(by_seed)], [y], marker="|", s=400, color="black", zorder=4)
    for key, colour in (("acc_noisy_by_seed", "tab:red"), ("acc_clean_by_seed", "tab:green")):
        ax.axvline(median(base[key]), color=colour, linestyle="--",
                   label=f"{key.split('_')[1]} labels, median {median(base[key]):.4f}")
    half = (median(base["acc_noisy_by_seed"]) + median(base["acc_clean_by_seed"])) / 2
    ax.axvline(half, color="grey", linestyle=":", label=f"half of the loss recovered, {half:.4f}")
    ax.set_yticks(range(len(rows)), list(rows))
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy (dots: training seeds, bar: median)")
    ax.set_title(f"{figures['setting']}: training on the flagged data, by policy")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.45, -0.2), ncol=3)
    _save(fig, PLOTS / "policies.png")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--plot-only", action="store_true", help="redraw the chart from the results file")
    parser.add_argument("overrides", nargs="*", default=["train.model=sp_cnn_s", "train.epochs=8"])
    args = parser.parse_args(argv)
    if args.plot_only:
        figures = json.loads((RESULTS / "cleaning_policies.json").read_text())
        plot_policies(figures)
        return figures
    baseline = json.loads((RESULTS / "cleaning.json").read_text())[SETTING]
    params = load_params("params.yaml", ["seed=0", *args.overrides])
    splits = prepare_splits(params.data, 0)[1]
    train = splits["train"]
    noisy, flipped = cleaning.inject_label_noise(train.labels, 0.2, "symmetric", 10, 0, cleaning.FASHION_MNIST_PAIRS)
    oof, _ = cached_oof(SETTING, train.images, noisy, params, 0)
    flag = cleaning.run_detectors(oof, noisy, params.clean)["ensemble"].flag
    results = {}
    all_views = {**views(flag, oof.probs.mean(0), noisy), **diagnostic_views(flag, flipped, noisy)}
    for policy, (kept, labels) in all_views.items():
        by_seed = {}
        for seed in args.train_seeds:
            run = train_and_score(same_steps(params, len(noisy), len(kept)), seed, (train.images[kept], labels),
                                  splits)
            by_seed[str(seed)] = run["test_accuracy"]
        gained = [(by_seed[s] - baseline["acc_noisy_by_seed"][s])
                  / (baseline["acc_clean_by_seed"][s] - baseline["acc_noisy_by_seed"][s]) for s in by_seed]
        dropped = np.setdiff1d(np.arange(len(noisy)), kept)
        results[policy] = {"kept": int(len(kept)), "noise_left": float(np.mean(labels != train.labels[kept])),
                           "clean_dropped": int((~flipped[dropped]).sum()), "acc_by_seed": by_seed,
                           "acc": median(by_seed), "recovered": float(np.median(gained))}
        print(f"{policy}: kept {len(kept)}, noise left {results[policy]['noise_left']:.3f}, test acc {by_seed} "
              f"-> recovered {results[policy]['recovered']:.0%}", flush=True)
    figures = {"setting": SETTING, "train_seeds": args.train_seeds, "policies": results,
               "baseline": {"use": baseline["cleaned"]["use"],
                            **{k: baseline[k] for k in ("acc_clean_by_seed", "acc_noisy_by_seed", "acc_cleaned_by_seed",
                                                        "acc_oracle_by_seed")}}}
    print(f"wrote {save('cleaning_policies', figures)}")
    plot_policies(figures)
    return figures


if __name__ == "__main__":
    main()
