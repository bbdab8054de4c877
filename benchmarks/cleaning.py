"""Label-noise benchmark of the cleaning detectors (claims clean.*).

    python -m benchmarks.cleaning                                  # 6 settings, ~40 min on 2 cores
    python -m benchmarks.cleaning --settings symmetric_0.2         # the acceptance setting alone
    python -m benchmarks.cleaning --settings symmetric_0.1 --noise-draws 0 1 2 3 4   # detectors only,
                                                  # on 5 noise draws: the clean.* claims' intervals

For each setting (symmetric or class-pair noise at 10/20/40%, seeded) the Fashion-MNIST train
split gets noisy labels; the out-of-fold predictions of `clean.oof` are computed on the noisy
labels; every detector (and cleanlab, on the same out-of-fold probabilities) is scored
against the set of flipped samples; then a model is trained on the noisy labels and on the
cleaned data (policy --policy, detector clean.use; epochs scaled so that it gets as many
optimizer steps as the noisy run), on the noisy data less exactly the flipped samples (the
oracle: the ceiling of any drop policy), and once on the clean labels - for each training seed
of --train-seeds (accuracies are medians over them; the acceptance run uses 3:
`--settings symmetric_0.2 --train-seeds 0 1 2`, ~25 min).

Writes benchmarks/results/cleaning.json (per setting: precision/recall/f1 per detector,
acc_clean, acc_noisy, acc_cleaned), reports/cleaning/*.png, and the clean.* rows of
reports/claims.md|json. Out-of-fold predictions are cached in benchmarks/cache/ (keyed by
setting, params and data), so re-scoring the detectors after a params change is cheap.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from benchmarks.common import RESULTS, save
from skillpack.config import load_params
from skillpack.data import cleaning
from skillpack.data.store import prepare_splits
from skillpack.train import oof as oof_module

SETTINGS = ("symmetric_0.1", "symmetric_0.2", "symmetric_0.4", "pair_0.1", "pair_0.2", "pair_0.4")
CACHE = RESULTS.parent / "cache"
PLOTS = Path("reports/cleaning")
DETECTOR_ORDER = ("dbscan", "vote", "gradient", "cleanlab", "ensemble", "implausible")


def parse_setting(setting: str) -> tuple[str, float]:
    kind, rate = setting.rsplit("_", 1)
    return kind, float(rate)


def cached_oof(setting: str, images, noisy, params, seed: int) -> tuple[cleaning.OutOfFold, float | None]:
    """(out-of-fold predictions, seconds to compute them; None when read from the cache)"""
    key = hashlib.sha256(json.dumps([setting, seed, params.clean.oof.model_dump(),
                                     hashlib.sha256(noisy.tobytes()).hexdigest(),
                                     hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()]).encode()
                         ).hexdigest()[:16]
    path = CACHE / f"oof_{setting}_{key}.npz"
    if path.is_file():
        return cleaning.OutOfFold.load(path), None
    t0 = time.perf_counter()
    oof = oof_module.out_of_fold(images, noisy, 10, params.clean.oof.train_params(params.train.threads, params.runtime.device),
                               params.clean.oof.folds, seed,
                               on_fold=lambda k, f: print(f"    fold {k}: held-out acc {f['held_out_acc']:.4f} "
                                                          f"({f['train_seconds']:.0f}s)", flush=True))
    seconds = time.perf_counter() - t0
    CACHE.mkdir(parents=True, exist_ok=True)
    oof.save(path)
    return oof, seconds


def score_detectors(detections: dict, flipped: np.ndarray) -> dict:
    return {name: cleaning.precision_recall_f1(det.flag, flipped) for name, det in detections.items()}


def gradient_figures(oof: cleaning.OutOfFold, flipped: np.ndarray) -> dict:
    g = oof.grad_norm
    return {"median_flipped": float(np.median(g[flipped])), "median_clean": float(np.median(g[~flipped])),
            "mean_flipped": float(g[flipped].mean()), "mean_clean": float(g[~flipped].mean())}


def noise_and_detections(setting: str, train, params, seed: int) -> dict:
    """One noise draw: `seed` flips the labels and seeds the out-of-fold models; every detector
    runs on those predictions."""
    kind, rate = parse_setting(setting)
    noisy, flipped = cleaning.inject_label_noise(train.labels, rate, kind, 10, seed, cleaning.FASHION_MNIST_PAIRS)
    print(f"[{setting}, noise draw {seed}] {int(flipped.sum())} of {len(noisy)} labels flipped", flush=True)
    oof, oof_seconds = cached_oof(setting, train.images, noisy, params, seed)
    t0 = time.perf_counter()
    detections = cleaning.run_detectors(oof, noisy, params.clean)
    return {"noisy": noisy, "flipped": flipped, "oof": oof, "detections": detections,
            "figures": score_detectors(detections, flipped), "oof_seconds": oof_seconds,
            "detect_seconds": time.perf_counter() - t0}


def noise_draws(setting: str, train, params, seeds: list[int]) -> dict[str, dict]:
    """Per noise draw: each detector's precision / recall / F1 and the draw's realised noise rate
    (the precision of flagging at random), so that the claims get an interval over draws."""
    draws = {}
    for seed in tqdm(seeds, desc=f"{setting}: noise draws", mininterval=1.0):
        draw = noise_and_detections(setting, train, params, seed)
        draws[str(seed)] = {**draw["figures"], "noise_rate": float(draw["flipped"].mean()),
                            "oof_seconds": draw["oof_seconds"]}
    return draws


def run_setting(setting: str, splits, params, policy: str, seeds: list[int]) -> dict:
    train = splits["train"]
    draw = noise_and_detections(setting, train, params, params.seed)
    noisy, flipped, oof, detections = draw["noisy"], draw["flipped"], draw["oof"], draw["detections"]
    oof_seconds, detect_seconds, figures = draw["oof_seconds"], draw["detect_seconds"], draw["figures"]
    for name in DETECTOR_ORDER:
        f = figures[name]
        print(f"  {name:9s} precision {f['precision']:.3f} recall {f['recall']:.3f} f1 {f['f1']:.3f} "
              f"(flagged {f['flagged']})", flush=True)
    chosen = detections[params.clean.use]
    view = cleaning.apply_policy(np.arange(len(noisy)).astype(str), noisy, chosen, policy)
    oracle = np.flatnonzero(~flipped)
    datasets = {"noisy": (np.arange(len(noisy)), noisy), "cleaned": (view.index, view.labels),
                "oracle": (oracle, noisy[oracle])}
    accuracy, seconds = {name: {} for name in datasets}, {f"train_{name}": [] for name in datasets}
    for seed in seeds:
        for name, (index, labels) in datasets.items():
            run = train_and_score(same_steps(params, len(noisy), len(index)), seed, (train.images[index], labels),
                                  splits)
            accuracy[name][str(seed)] = run["test_accuracy"]
            seconds[f"train_{name}"].append(run["train_seconds"])
        print(f"  seed {seed}: test acc noisy {accuracy['noisy'][str(seed)]:.4f}, cleaned ({policy} by "
              f"{params.clean.use}: {view.counts}) {accuracy['cleaned'][str(seed)]:.4f}, oracle drop "
              f"{accuracy['oracle'][str(seed)]:.4f}", flush=True)
    remaining_noise = float(np.mean(view.labels != train.labels[view.index]))
    plot_gradient(setting, oof, flipped, detections["gradient"].info["threshold"])
    return {**figures, **{f"acc_{name}": median(by_seed) for name, by_seed in accuracy.items()},
            **{f"acc_{name}_by_seed": by_seed for name, by_seed in accuracy.items()},
            "cleaned": {**view.counts, "policy": policy, "use": params.clean.use, "noise_left": remaining_noise,
                        "clean_dropped": int((~flipped[np.setdiff1d(np.arange(len(noisy)), view.index)]).sum()),
                        "epochs": same_steps(params, len(noisy), len(view.index)).train.epochs},
            "gradient_norm": gradient_figures(oof, flipped),
            "detector_info": {n: d.info for n, d in detections.items()},
            "seconds": {"oof": oof_seconds, "detect": detect_seconds, **{k: median(v) for k, v in seconds.items()}}}


def train_and_score(params, seed: int, train: tuple, splits) -> dict:
    """One training of `params.train` with `seed` on `train` = (images, labels), scored on the test split."""
    from skillpack.train.runs import RunData, train_and_evaluate

    data = RunData(train, (splits["val"].images, splits["val"].labels), 10)
    return train_and_evaluate(params.train, seed, data, (splits["test"].images, splits["test"].labels))


def median(values) -> float:
    values = list(values.values()) if isinstance(values, dict) else list(values)
    return float(np.median(values))


def recovered(r: dict, seed: str | None = None) -> float:
    """Share of the accuracy lost to noise that training on the cleaned data wins back."""
    pick = (lambda key: r[f"{key}_by_seed"][seed]) if seed is not None else (lambda key: r[key])
    lost = pick("acc_clean") - pick("acc_noisy")
    return (pick("acc_cleaned") - pick("acc_noisy")) / lost if lost > 0 else float("nan")


def same_steps(params, n_all: int, n_kept: int):
    """The cleaned run gets the noisy run's number of optimizer steps: with a fixed epoch count,
    dropping a quarter of the data would also cut a quarter of the training."""
    epochs = max(1, round(params.train.epochs * n_all / n_kept))
    return params.model_copy(update={"train": params.train.model_copy(update={"epochs": epochs})})


def plot_gradient(setting: str, oof: cleaning.OutOfFold, flipped: np.ndarray, threshold: float) -> None:
    from skillpack.plots import plot_score_histogram

    plot_score_histogram({"clean label": oof.grad_norm[~flipped], "flipped label": oof.grad_norm[flipped]},
                         threshold, PLOTS / f"gradient_{setting}.png",
                         f"{setting}: |d loss / d logits| under the held-out model")


def plot_f1(results: dict, settings: list[str]) -> None:
    import matplotlib.pyplot as plt

    from skillpack.plots import _save

    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(DETECTOR_ORDER)
    for i, name in enumerate(DETECTOR_ORDER):
        ax.bar(np.arange(len(settings)) + i * width, [results[s][name]["f1"] for s in settings], width, label=name)
    ax.set_xticks(np.arange(len(settings)) + 0.4 - width / 2, settings)
    ax.set_ylabel("F1 of the flagged set vs the flipped labels")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=5)
    ax.set_title("Label-noise detectors on identical out-of-fold predictions")
    _save(fig, PLOTS / "f1.png")


def markdown(results: dict, settings: list[str]) -> str:
    lines = ["| setting | " + " | ".join(f"{d} P / R / F1" for d in DETECTOR_ORDER)
             + " | training seeds | acc clean | acc noisy | acc cleaned | recovered | acc oracle drop |",
             "|---|" + "---|" * (len(DETECTOR_ORDER) + 6)]
    for s in settings:
        r = results[s]
        cells = [f"{r[d]['precision']:.3f} / {r[d]['recall']:.3f} / **{r[d]['f1']:.3f}**" for d in DETECTOR_ORDER]
        seeds = ", ".join(r.get("acc_noisy_by_seed", {"0": None}))
        oracle = f"{r['acc_oracle']:.4f}" if "acc_oracle" in r else "-"
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {seeds} | {r['acc_clean']:.4f} | {r['acc_noisy']:.4f} | "
                     f"{r['acc_cleaned']:.4f} | {recovered(r):.0%} | {oracle} |")
    return "\n".join(lines)


def merge_previous(results: dict, measured: list[str]) -> list[str]:
    """Settings measured by an earlier run with the same final model and data (the same seed-0
    clean-label accuracy) and the same detectors are kept, so one setting can be re-measured alone."""
    path = RESULTS / "cleaning.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    seed0 = previous.get("acc_clean_by_seed", {"0": previous.get("acc_clean")}).get("0")
    if seed0 is not None and seed0 == results["acc_clean_by_seed"].get("0"):
        for setting in previous.get("settings", []):
            if all(name in previous[setting] for name in DETECTOR_ORDER):
                results.setdefault(setting, previous[setting])
    return [s for s in SETTINGS if s in results] + [s for s in measured if s not in SETTINGS]


def add_noise_draws(settings: list[str], seeds: list[int], splits, params, t_start: float) -> dict:
    """benchmarks/results/cleaning.json with `draws` added to each of `settings`; the detectors
    and out-of-fold models must be those of the stored results, which are otherwise kept."""
    path = RESULTS / "cleaning.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no results to add noise draws to; run `python -m benchmarks.cleaning` first")
    results = json.loads(path.read_text())
    detectors = params.clean.model_dump(include=set(DETECTOR_ORDER) & set(type(params.clean).model_fields))
    stored = {name: (results.get("detectors") or {}).get(name) for name in detectors}
    for key, now, before in (("oof", params.clean.oof.model_dump(), results.get("oof")),
                             ("detectors", detectors, stored)):
        if json.loads(json.dumps(now)) != before:
            raise SystemExit(f"{path}: `{key}` differs from params.yaml's clean.{key if key == 'oof' else '<detector>'}; "
                             "re-run the whole benchmark rather than mixing detectors")
    missing = [s for s in settings if s not in results]
    if missing:
        raise SystemExit(f"{path}: no results for settings {missing}; it has {results.get('settings')}")
    for setting in settings:
        draws = noise_draws(setting, splits["train"], params, seeds)
        results[setting]["draws"] = draws
        from skillpack.evidence.claims import cleaning_test

        for name in DETECTOR_ORDER:  # the claims' own test of the figure
            t = cleaning_test(results[setting], name, parse_setting(setting)[1])
            print(f"  {setting} {name:9s} precision - noise rate over {t['draws']} draws: {t['measured']:+.2f} "
                  f"[{t['ci_low']:+.2f}, {t['ci_high']:+.2f}] points", flush=True)
    results["noise_draws_seconds"] = time.perf_counter() - t_start
    results.setdefault("full_run_machine", results.get("machine"))  # `machine` becomes this run's
    print(f"wrote {save('cleaning', results)}")
    render_claims()
    return results


def render_claims() -> None:
    """reports/claims.md|json re-rendered from the ablation's stored runs and the benchmark
    results; when the ablation's runs do not cover its spec yet, say so (`make ablate` renders them)."""
    from flows.ablation import render_reports

    try:
        render_reports()
    except (FileNotFoundError, ValueError) as err:
        print(f"reports/claims.md not re-rendered ({err}); `make ablate` renders it with these results")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--policy", default="drop", choices=["drop", "relabel"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise and of the out-of-fold models")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0],
                        help="seeds of the final trainings (clean, noisy, cleaned, oracle); accuracies are medians")
    parser.add_argument("overrides", nargs="*", help="params overrides, e.g. train.epochs=8",
                        default=["train.model=sp_cnn_s", "train.epochs=8"])
    parser.add_argument("--noise-draws", type=int, nargs="+", metavar="SEED",
                        help="only score the detectors on these noise draws (noise and out-of-fold seeds) of "
                             "--settings, added to the existing results: the clean.* claims then get an interval "
                             "over draws (`--settings symmetric_0.1 --noise-draws 0 1 2 3 4`, ~2.6 min per new draw on 2 cores)")
    args = parser.parse_args(argv)
    params = load_params("params.yaml", [f"seed={args.seed}", *args.overrides])
    t_start = time.perf_counter()
    splits = prepare_splits(params.data, args.seed)[1]
    if args.noise_draws:
        return add_noise_draws(args.settings, args.noise_draws, splits, params, t_start)
    train = splits["train"]
    clean_runs = {str(seed): train_and_score(params, seed, (train.images, train.labels), splits)
                  for seed in args.train_seeds}
    for seed, run in clean_runs.items():
        print(f"[clean labels, seed {seed}] test acc {run['test_accuracy']:.4f} ({run['train_seconds']:.0f}s)", flush=True)
    acc_clean_by_seed = {seed: run["test_accuracy"] for seed, run in clean_runs.items()}
    results = {"acc_clean": median(acc_clean_by_seed), "acc_clean_by_seed": acc_clean_by_seed}
    for setting in args.settings:
        t0 = time.perf_counter()
        r = run_setting(setting, splits, params, args.policy, args.train_seeds)
        r.update(acc_clean=results["acc_clean"], acc_clean_by_seed=acc_clean_by_seed)
        r["recovered"] = recovered(r)
        r["recovered_by_seed"] = {seed: recovered(r, seed) for seed in acc_clean_by_seed}
        r["seconds"]["setting_total"] = time.perf_counter() - t0
        print(f"  recovered {r['recovered']:.0%} of the accuracy lost to noise (by seed: "
              f"{ {k: round(v, 2) for k, v in r['recovered_by_seed'].items()} })", flush=True)
        results[setting] = r
    settings = merge_previous(results, args.settings)
    plot_f1(results, settings)
    table = markdown(results, settings)
    print(table)
    figures = {**results, "settings": settings, "policy": args.policy, "seed": args.seed,
               "train_seeds": args.train_seeds,
               "final_model": {"overrides": args.overrides,
                               "train_seconds_clean": median([r["train_seconds"] for r in clean_runs.values()])},
               "oof": params.clean.oof.model_dump(), "detectors": params.clean.model_dump(exclude={"oof"}),
               "total_seconds": time.perf_counter() - t_start, "table": table}
    print(f"wrote {save('cleaning', figures)}")
    render_claims()  # reports/claims.md|json from reports/ablation.json's runs + benchmarks/results/*.json
    return figures


if __name__ == "__main__":
    main()
