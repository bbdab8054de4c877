"""The report of one ablation run, rendered from its stored runs: the family of paired tests
(Holm-adjusted together), reports/ablation.{md,json}, the charts (skillpack.evidence.charts),
and the claims table (skillpack.evidence.claims).

The caller passes the runs and any benchmark results it has loaded (flows/ablation.py);
every figure in the reports is computed from them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from skillpack.evidence import ablation as ab
from skillpack.evidence import claims as cl
from skillpack.evidence.budget_caveat import budget_caveat
from skillpack.evidence.charts import plot_chain, plot_claim_curves, plot_effects
from skillpack.evidence.claims_report import write_claims
from skillpack.evidence.comparisons import Comparison, adjust_for_family, compare, results_by_key
from skillpack.evidence.curves import curve_summaries
from skillpack.evidence.setups import arm_setups, comparison_setups, setup_text
from skillpack.evidence.verdicts import RULES_TEXT
from skillpack.io import write_json, write_text
from skillpack.stats import ALPHA, POWER

SEED_NOISE = ("Each seed draws its own training subset (regimes with a size or an imbalance ratio) and an arm "
              "shares it with its baseline, so the intervals cover the model's seed and the draw of the training "
              "data; the test set is fixed (the dataset's own). An arm that starts from another arm's model starts "
              "from that arm's run of the same seed, and a per-seed distillation teacher is trained with the run's "
              "seed on its draw, so their seeds vary too; a teacher without per_seed is trained once.")


# ------------------------------------------------------------------ checks

def check_runs_cover_spec(spec: ab.Spec, runs: list[dict]) -> None:
    """Every run the spec plans (each arm on its declared seeds) is there."""
    results = results_by_key(runs)
    missing = [f"{name}/seed{s}" for name, s in spec.planned_runs() if (name, s) not in results]
    if missing:
        raise ValueError(f"no stored run for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}: "
                         f"run the ablation (python -m flows.ablation) before rendering its report")


def check_claim_ids(spec: ab.Spec, claims_doc: dict) -> None:
    known = {c["id"] for c in claims_doc["claims"]}
    unknown = sorted({cid for a in spec.arms + spec.cumulative for cid in a.claims} - known)
    if unknown:
        raise ValueError(f"spec {spec.name} names claims that claims.yaml does not have: {', '.join(unknown)}")


# ------------------------------------------------------------------ the families of tests

FAMILIES = {None: "main", "epochs": "curves", "images": "curves", "dataset": "transfer"}


CHAIN_TOTAL = "chain_total"  # the chain's last step vs its first: the article's "in total"


def tests_of(spec: ab.Spec, claims_doc: dict) -> list[tuple[ab.Arm, str, str]]:
    """(arm, metric, name) for every paired test of the spec: each arm and chain step on test
    accuracy, the chain's total, plus the metric of every claim an arm tests that is judged on
    another metric."""
    metrics = {c["id"]: cl.claim_metric(c) for c in claims_doc["claims"]}
    compared = [(a, a.name) for a in spec.arms if not a.name.startswith("baseline")]
    compared += [(a, a.name) for a in spec.cumulative[1:]]
    if len(spec.cumulative) > 2:
        last = spec.cumulative[-1]
        # the total tests the claims every step tests (the chain's), not one step's own
        shared = [c for c in last.claims if all(c in step.claims for step in spec.cumulative[1:])]
        compared.append((ab.Arm(last.name, last.overrides, shared, last.regime, spec.cumulative[0].name),
                         CHAIN_TOTAL))
    accuracy = [(a, cl.ACCURACY, name) for a, name in compared]
    secondary = [(a, m, name) for a, name in compared
                 for m in dict.fromkeys(metrics.get(cid, cl.ACCURACY) for cid in a.claims) if m != cl.ACCURACY]
    return accuracy + secondary


def comparisons(spec: ab.Spec, runs: list[dict], claims_doc: dict) -> list[Comparison]:
    """Every test of tests_of on the seeds each pair has, Holm-adjusted within its family:
    main (the arms at the spec's own budget, the chain, their secondary metrics), curves (the
    budget-curve points), transfer (the second dataset)."""
    results = results_by_key(runs)
    pool = sorted({seed for _, seed in results})
    found = []
    for arm, metric, name in tests_of(spec, claims_doc):
        c = compare(arm, results, pool, metric)
        c.name = name
        c.family = arm.family or FAMILIES[arm.variant["axis"] if arm.variant else None]
        found.append(c)
    return adjust_for_family(found + priority_tests(spec, found, results) + tuned_tests(spec, results, claims_doc))


TUNING_METRIC = "final_val_acc"  # a tuned comparison picks each side's arm on validation, then judges on test


def best_by_validation(names: list[str], results: dict) -> tuple[str, dict[str, float]]:
    """The arm of `names` with the highest mean validation accuracy over its seeds, and every
    candidate's mean (the test set plays no part in the choice)."""
    means = {n: float(np.mean([r[TUNING_METRIC] for (arm, _), r in results.items() if arm == n])) for n in names}
    return max(means, key=means.get), means


def tuned_tests(spec: ab.Spec, results: dict, claims_doc: dict) -> list[Comparison]:
    """The spec's `tuned:` comparisons ({name, claims, arms, baseline}): each side's best
    configuration by validation accuracy (a learning-rate x weight-decay grid, a learning rate per
    batch size) against the other's, paired by seed on test accuracy and on each claim's own
    metric - a fair arm for claims about optimisers, which each need their own tuning."""
    metrics = {c["id"]: cl.claim_metric(c) for c in claims_doc["claims"]}
    found = []
    for entry in spec.tuned:
        best, arm_means = best_by_validation(entry["arms"], results)
        rival, base_means = best_by_validation(entry["baseline"], results)
        arm = ab.Arm(best, {}, list(entry.get("claims", [])), spec.arm(best).regime, rival)
        for metric in dict.fromkeys([cl.ACCURACY] + [metrics.get(cid, cl.ACCURACY) for cid in arm.claims]):
            c = compare(arm, results, sorted({s for _, s in results}), metric)
            c.name, c.family = entry["name"], "main"
            c.selected = {"by": TUNING_METRIC, "arm": best, "baseline": rival, "arms": arm_means,
                          "baselines": base_means}
            found.append(c)
    return found


PRIORITY = "augmentation_first"  # advice.priorities: the best augmentation arm against the best other technique


def priority_tests(spec: ab.Spec, tests: list[Comparison], results: dict) -> list[Comparison]:
    """advice.priorities at the spec's budget and at the largest epoch budget of the curves:
    the augmentation arm with the largest mean effect against the other technique with the
    largest (spec `priorities: {first, others}`, arms against the same baseline), paired by seed
    arm against arm. Picking the best of each group on these runs makes it an in-sample test,
    and the report says so."""
    groups = spec.priorities
    if not groups:
        return []
    by_name = {c.name: c for c in tests if c.metric == cl.ACCURACY}
    budgets = {""}
    budgets |= {f"@{a.variant['value']}ep" for a in spec.arms if a.variant and a.variant["axis"] == "epochs"}
    found = []
    for suffix in sorted(budgets, key=lambda b: int(b[1:-2]) if b else 0)[::max(1, len(budgets) - 1)]:
        first = [by_name[n + suffix] for n in groups["first"] if n + suffix in by_name]
        others = [by_name[n + suffix] for n in groups["others"] if n + suffix in by_name]
        if not first or not others:
            continue
        best, rival = max(first, key=lambda c: c.delta), max(others, key=lambda c: c.delta)
        if best.baseline != rival.baseline:
            continue
        arm = ab.Arm(best.name, {}, ["advice.priorities"], best.regime, rival.name)
        c = compare(arm, results, sorted({s for _, s in results}))
        c.name, c.family = PRIORITY + suffix, "priorities"
        found.append(c)
    return found


def split_tests(spec: ab.Spec, tests: list[Comparison]) -> dict[str, list[Comparison]]:
    """The tests as the report shows them: single (arm vs baseline, accuracy), chain, secondary
    (other metrics), curves and transfer."""
    chain = {a.name for a in spec.cumulative} | {CHAIN_TOTAL}
    main = [c for c in tests if c.family == "main"]
    return {"single": [c for c in main if c.metric == cl.ACCURACY and c.name not in chain],
            "chain": [c for c in main if c.metric == cl.ACCURACY and c.name in chain],
            "secondary": [c for c in main if c.metric != cl.ACCURACY],
            "curves": [c for c in tests if c.family == "curves"],
            "priorities": [c for c in tests if c.family == "priorities"],
            "transfer": [c for c in tests if c.family == "transfer"],
            "own": [c for c in tests if c.family not in ("main", "curves", "priorities", "transfer")]}


def family_of(tests: list[Comparison], spec: ab.Spec) -> dict:
    sizes = {name: sum(c.family == name for c in tests) for name in dict.fromkeys(c.family for c in tests)}
    parts = ", ".join(f"{n} {name}" for name, n in sizes.items())
    return {"name": f"the tests of ablation {spec.name}, Holm-adjusted per family ({parts})", "size": len(tests),
            "sizes": sizes}


# ------------------------------------------------------------------ markdown

def _fmt_gain(c: Comparison) -> str:
    return "-" if c.gain_per_extra_minute is None else f"{c.gain_per_extra_minute:+.2f}"


def _fmt_mde(c: Comparison) -> str:
    if c.mde is None:
        return "-"
    return f"{100 * c.mde:.2f}" + (f" ({100 * c.mde_family:.2f})" if c.mde_family is not None else "")


def comparison_line(c: Comparison) -> str:
    return (f"| {c.name} | {', '.join(c.claims) or '-'} | {c.regime} | {c.baseline} | {c.n_seeds} | {c.mean:.4f} | "
            f"{100 * c.delta:+.2f} | [{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}] | {cl.fmt_p(c.p_value)} | "
            f"{cl.fmt_p(c.p_adjusted)} | {c.effect} | {_fmt_mde(c)} | {c.extra_seconds:+.0f} | {_fmt_gain(c)} |")


COMPARISON_HEADER = ["| arm | claims | regime | vs | seeds | mean | delta (points) | 95% CI | p | Holm p | effect | "
                     "MDE, points (at alpha/m) | extra s | gain/extra min |", "|---" * 14 + "|"]


def baselines_table(spec: ab.Spec, results: dict, setups: dict) -> list[str]:
    lines = ["| baseline | regime | setup | mean acc | std | train s |", "|---|---|---|---|---|---|"]
    for b in [a for a in spec.arms if a.name.startswith("baseline")] + spec.cumulative[:1]:
        seeds = sorted(s for (name, s) in results if name == b.name)
        accs = [results[(b.name, s)]["test_accuracy"] for s in seeds]
        secs = [results[(b.name, s)]["train_seconds"] for s in seeds]
        std = np.std(accs, ddof=1) if len(accs) > 1 else 0.0
        lines.append(f"| {b.name} | {b.regime} | {setup_text(setups[b.name], len(seeds))} | {np.mean(accs):.4f} | "
                     f"{std:.4f} | {np.mean(secs):.0f} |")
    return lines


def gain_ranking(single: list[Comparison]) -> list[str]:
    improving = [c for c in single if c.effect == "improves"]
    ranked = sorted([c for c in improving if c.gain_per_extra_minute is not None],
                    key=lambda c: -c.gain_per_extra_minute)
    lines = [f"{i + 1}. **{c.name}**: {100 * c.delta:+.2f} points for {c.extra_seconds:+.0f} s "
             f"({c.gain_per_extra_minute:+.2f} points per extra minute)" for i, c in enumerate(ranked)] or ["(none)"]
    free = [c for c in improving if c.gain_per_extra_minute is None]
    if free:
        lines += ["", "Improve at no measurable extra time: " + ", ".join(f"**{c.name}** ({100 * c.delta:+.2f})"
                                                                        for c in free)]
    return lines


def transfer_rows(spec: ab.Spec, tests: list[Comparison]) -> list[dict]:
    """Each transferred arm on both datasets: do the two agree (the same Holm-judged effect)?"""
    by_name = {(c.name, c.metric): c for c in tests}
    rows = []
    for c in tests:
        if c.family != "transfer":
            continue
        origin = spec.arm(c.name).variant["of"]
        home = by_name.get((origin, c.metric))
        if home is not None:
            rows.append({"arm": origin, "metric": c.metric, "claims": c.claims, "home": home, "away": c,
                         "agree": home.effect == c.effect})
    return rows


def budget_notes(spec: ab.Spec, tests: list[Comparison], setups: dict, runs: list[dict]) -> list[str]:
    """How the budget and the seeds may bias the effects - every figure from the spec and the runs."""
    main = [c for c in tests if c.family == "main"]
    epochs = [s["epochs"] for s in setups.values()]
    images = [s["n_train"] for s in setups.values()]
    seeds = [c.n_seeds for c in main] or [0]
    halfwidths = [50 * (c.ci_high - c.ci_low) for c in main if c.metric == cl.ACCURACY]
    lines = [f"- Runs train {min(epochs)}-{max(epochs)} epochs on {min(images):,}-{max(images):,} images. "
             "Regularisers - augmentation, Mixup, CutMix, label smoothing, EMA - are known to pay off late in long "
             "trainings: the budget curves show each at several epoch budgets and training-set sizes.",
             f"- Seeds fixed before any run (no seeds added on the results, so no alpha spending is needed): "
             f"{len(spec.seeds)} per main comparison, {spec.variant_seeds or len(spec.seeds)} per budget-curve point "
             f"and transfer copy, an arm's own count where the spec gives one. Seeds per test: median "
             f"{np.median(seeds):g}, {min(seeds)}-{max(seeds)}."]
    if halfwidths:
        lines.append(f"- Accuracy intervals (main family): half-width median {np.median(halfwidths):.2f} points, "
                     f"{min(halfwidths):.2f}-{max(halfwidths):.2f}.")
    gaps = overfit_gaps(spec, runs)
    if gaps:
        flag = ab.run_params(spec, spec.arms[0], spec.seeds[0]).evaluate.overfit_gap
        lines.append(f"- Overfitting (val - train loss at the end, median over seeds; evaluate.overfit_gap flags "
                     f"above {flag:g}): " + "; ".join(f"{name} {gap:.2f}" + (" (overfits)" if gap > flag else "")
                                                      for name, gap in gaps.items()) + ".")
    return lines


def overfit_gaps(spec: ab.Spec, runs: list[dict]) -> dict[str, float]:
    """Each baseline's median val - train loss gap at the end of training (the runs that record it)."""
    out = {}
    for arm in spec.arms:
        if arm.name.startswith("baseline") and not arm.variant:
            gaps = [r["overfit_gap"] for r in runs if r["arm"] == arm.name and "overfit_gap" in r]
            if gaps:
                out[arm.name] = float(np.median(gaps))
    return out


def _secondary_lines(tests: list[Comparison]) -> list[str]:
    return ["| arm | metric | vs | seeds | mean | baseline mean | change | 95% CI | p | Holm p | effect | "
            "MDE (at alpha/m) |", "|---" * 12 + "|"] + [
        f"| {c.name} | {c.metric} | {c.baseline} | {c.n_seeds} | {c.mean:.4f} | {c.baseline_mean:.4f} | "
        f"{100 * c.delta:+.2f} {cl.unit(c.metric)} | [{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}] | "
        f"{cl.fmt_p(c.p_value)} | {cl.fmt_p(c.p_adjusted)} | {c.effect} | {_fmt_mde(c)} |" for c in tests]


def _transfer_lines(spec: ab.Spec, tests: list[Comparison]) -> list[str]:
    rows = transfer_rows(spec, tests)
    if not rows:
        return []

    def cell(c: Comparison) -> str:
        return f"{c.effect}, {100 * c.delta:+.2f} [{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}] | {c.n_seeds}"

    regime = spec.transfer.get("regime")
    return ["", f"## Transfer to `{regime}` (a dataset the recipes were not tuned on)", "",
            f"{sum(r['agree'] for r in rows)} of {len(rows)} tests agree (the same Holm-judged effect on both).", "",
            "| arm | metric | home dataset | seeds | " + f"{regime} | seeds | agree |", "|---" * 7 + "|",
            *[f"| {r['arm']} | {r['metric']} | {cell(r['home'])} | {cell(r['away'])} | "
              f"{'yes' if r['agree'] else 'no'} |" for r in rows]]


def ablation_markdown(spec: ab.Spec, tests: list[Comparison], runs: list[dict], setups: dict, command: str,
                      rendered_by: str, data_source: str, curves: dict, charts: dict) -> str:
    results = results_by_key(runs)
    parts = split_tests(spec, tests)
    family = family_of(tests, spec)
    sizes = ", ".join(f"{n} {k}" for k, n in family["sizes"].items())
    lines = [f"# Ablation `{spec.name}` (profile {spec.profile})", "",
             f"Runs made by `{command}`, this report rendered by `{rendered_by}` from the stored runs: "
             f"{len(runs)} runs, test accuracy on the {data_source} test set unless a regime names another dataset, "
             f"differences paired by seed, 95% t-intervals, two-sided paired t-test (scipy). {SEED_NOISE}", "",
             f"p-values are Holm-adjusted within each family ({sizes} tests): Holm controls the family-wise error "
             f"rate whatever the dependence between the tests. Effect: *improves* / *hurts* when the Holm-adjusted p "
             f"is below {ALPHA}, else *no detectable effect*. MDE: the smallest effect a paired t-test at alpha "
             f"{ALPHA} would detect with power {POWER}; in brackets the same at alpha/m. The claims' verdicts are in "
             "the claims report.", "",
             "## Baselines", "", *baselines_table(spec, results, setups), "",
             "## One at a time (each arm vs its baseline, at the spec's budget)", "", *COMPARISON_HEADER,
             *map(comparison_line, parts["single"]), "",
             "## Cumulative (the article's 5.1 chain; each step vs the step before)", "",
             *COMPARISON_HEADER, *map(comparison_line, parts["chain"])]
    if parts["secondary"]:
        lines += ["", "## Other metrics (accuracy-like in points, the rest as a relative change in percent)", "",
                  *_secondary_lines(parts["secondary"])]
    if curves:
        lines += ["", "## Budget curves", "",
                  "Each arm against its baseline at several epoch budgets (step schedules stretched alike) and "
                  "training-set sizes; one chart per claim in reports/curves/.", ""]
        lines += [f"- **{arm}** ({metric}): {text}" for (arm, metric), text in curves.items()]
        lines += ["", *[f"![{claim}](curves/{Path(path).name})" for claim, path in charts.items()]]
    if parts["priorities"]:
        lines += ["", "## Augmentation first? (advice.priorities; in-sample: the best arm of each group is picked "
                  "on these runs)", "", *COMPARISON_HEADER, *map(comparison_line, parts["priorities"])]
    lines += _transfer_lines(spec, tests)
    lines += ["", "## Gain per extra minute of training (arms that improve)", "", *gain_ranking(parts["single"]),
              "", "## How the budget and the seeds may bias the effects", "", *budget_notes(spec, tests, setups, runs)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ entry point

def report_paths(reports: Path, spec: ab.Spec, command: str) -> dict[str, Path]:
    suffix = "" if spec.profile == "cpu" else f"_{spec.profile}"
    names = {"markdown": "ablation", "json": "ablation", "deltas": "ablation_deltas", "waterfall": "ablation_waterfall",
             "claims_markdown": "claims", "claims_json": "claims"}
    exts = {"markdown": "md", "json": "json", "deltas": "png", "waterfall": "png", "claims_markdown": "md",
            "claims_json": "json"}
    return {key: Path(reports) / f"{name}{suffix}.{exts[key]}" for key, name in names.items()}


def claims_header(spec: ab.Spec, command: str, rendered_by: str, paths: dict, family: dict,
                  benchmarks: dict[str, dict]) -> list[str]:
    sources = f"the stored runs of `{command}` ({paths['json'].name})"
    if benchmarks:
        sources += " and the results of the benchmarks " + ", ".join(
            f"`{results.get('generated_by', name)}`" for name, results in benchmarks.items())
    return [f"Rendered by `{rendered_by}` from {sources}, static checks, and `claims.yaml` (the article's figures, "
            "the claimed direction and value per arm, the reasons a claim is not tested). The article's text is "
            "`shared/seed/skill-pack-article.zh.txt`.", "",
            RULES_TEXT, "",
            f"Families for the correction: {family['name']} (reports/{paths['markdown'].name}); the cleaning rows, "
            f"the tests of the cleaning benchmark run. Accuracy effects are in test-accuracy points. {SEED_NOISE} "
            "The cleaning intervals cover the sampling of the flagged set only (one noise draw, one set of "
            "out-of-fold models).", "",
            f"MDE, for every inconclusive row: the smallest effect the setup would detect (alpha {ALPHA} two-sided, "
            f"power {POWER}; paired t-test from the per-seed spread of the differences, or the binomial test of the "
            "cleaning rows): how blind the test was. In brackets the same at alpha/m, the strictest step of Holm's "
            "correction over a family of m tests: an effect between the two can stay inconclusive."]


def write_ablation_reports(spec: ab.Spec, runs: list[dict], reports: Path, command: str,
                           benchmarks: dict[str, dict] | None = None, claims_doc: dict | None = None,
                           rendered_by: str | None = None) -> dict:
    """Render every report of an ablation run from its runs. `benchmarks` maps a benchmark's
    name (cleaning, train_speed, time_to_accuracy) to its loaded results; `command` is what
    made the runs, `rendered_by` what renders the report (default: the same)."""
    benchmarks = benchmarks or {}
    claims_doc = claims_doc or cl.load_claims()
    rendered_by = rendered_by or command
    check_claim_ids(spec, claims_doc)
    check_runs_cover_spec(spec, runs)
    tests = comparisons(spec, runs, claims_doc)
    parts = split_tests(spec, tests)
    family = family_of(tests, spec)
    setups = arm_setups(spec, runs)
    paths = report_paths(reports, spec, command)
    data_source = ab.run_params(spec, spec.arms[0], spec.seeds[0]).data.source
    curves = curve_summaries(spec, tests)
    charts = plot_claim_curves(spec, tests, claims_doc, paths["markdown"].parent / "curves")
    write_text(paths["markdown"], ablation_markdown(spec, tests, runs, setups, command, rendered_by, data_source,
                                                    curves, charts))
    write_json(paths["json"], {"spec": spec.name, "profile": spec.profile, "command": command, "seeds": spec.seeds,
                               "seed_design": {"kind": "fixed", "main": len(spec.seeds),
                                               "variants": spec.variant_seeds or len(spec.seeds)},
                               "family": {"correction": "holm", "alpha": ALPHA, "tests": family["size"],
                                          "sizes": family["sizes"]},
                               "arms": [c.as_dict() for c in parts["single"]],
                               "cumulative": [c.as_dict() for c in parts["chain"]],
                               "secondary": [c.as_dict() for c in parts["secondary"]],
                               "curves": [c.as_dict() for c in parts["curves"]],
                               "transfer": [c.as_dict() for c in parts["transfer"]],
                               "priorities": [c.as_dict() for c in parts["priorities"]],
                               "own_families": [c.as_dict() for c in parts["own"]],
                               "curve_text": {f"{a}|{m}": t for (a, m), t in curves.items()},
                               "setups": setups, "runs": runs})
    plot_effects(parts["single"], claims_doc, paths["deltas"])
    plot_chain(spec, parts["chain"], runs, claims_doc, paths["waterfall"], CHAIN_TOTAL)
    table = cl.claims_table(claims_doc, [c for c in tests if c.family != "transfer"],
                            comparison_setups(tests, setups), family, spec, benchmarks,
                            curves=curves, transfer=transfer_rows(spec, tests))
    write_claims(claims_doc, table, claims_header(spec, command, rendered_by, paths, family, benchmarks),
                 paths["claims_markdown"], paths["claims_json"], budget_caveat(spec, runs))
    summary = [{"name": c.name, "metric": c.metric, "family": c.family, "n_seeds": c.n_seeds,
                "halfwidth_points": 50 * (c.ci_high - c.ci_low)} for c in tests if c.metric == cl.ACCURACY]
    return {"markdown": str(paths["markdown"]), "files": list(paths.values()) + list(charts.values()),
            "claims": table, "tests": summary}
