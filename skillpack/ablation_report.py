"""The report of one ablation run, rendered from its stored runs: the family of paired tests
(Holm-adjusted together), reports/ablation.{md,json}, the effect and waterfall charts, and the
claims table (skillpack.claims).

The caller passes the runs and any benchmark results it has loaded (flows/ablation.py);
every figure in the reports is computed from them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from skillpack import ablation as ab
from skillpack import claims as cl
from skillpack.io import write_json, write_text
from skillpack.verdicts import ALPHA, POWER, RULES_TEXT, direction_sign

EFFECT_COLOURS = {"improves": "tab:green", "hurts": "tab:red", "no detectable effect": "tab:gray"}
SEED_NOISE = ("The intervals cover seed noise only: every arm of a regime trains on one fixed subset of the "
              "training data and is scored on one fixed test set, so they say nothing about another draw of either.")


def results_by_key(runs: list[dict]) -> dict[tuple[str, int], dict]:
    return {(r["arm"], r["seed"]): r for r in runs}


# ------------------------------------------------------------------ checks

def check_runs_cover_spec(spec: ab.Spec, runs: list[dict]) -> None:
    results = results_by_key(runs)
    missing = [f"{a.name}/seed{s}" for a in spec.arms + spec.cumulative for s in spec.seeds
               if (a.name, s) not in results]
    if missing:
        raise ValueError(f"no stored run for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}: "
                         f"run the ablation (python -m flows.ablation) before rendering its report")


def check_claim_ids(spec: ab.Spec, claims_doc: dict) -> None:
    known = {c["id"] for c in claims_doc["claims"]}
    unknown = sorted({cid for a in spec.arms + spec.cumulative for cid in a.claims} - known)
    if unknown:
        raise ValueError(f"spec {spec.name} names claims that claims.yaml does not have: {', '.join(unknown)}")


# ------------------------------------------------------------------ the family of tests

def secondary_tests(spec: ab.Spec, claims_doc: dict) -> list[tuple[ab.Arm, str]]:
    """(arm, metric) for every claim judged on a metric other than test accuracy."""
    metrics = {c["id"]: cl.claim_metric(c) for c in claims_doc["claims"]}
    return [(arm, metrics[cid]) for arm in spec.arms + spec.cumulative for cid in arm.claims
            if metrics.get(cid, cl.ACCURACY) != cl.ACCURACY]


def family_comparisons(spec: ab.Spec, runs: list[dict], claims_doc: dict):
    """Every paired test of the run - each arm and chain step on test accuracy, plus the
    secondary metrics claims ask for - Holm-adjusted as one family."""
    results = results_by_key(runs)
    single = [ab.compare(a, results, spec.seeds) for a in spec.arms if not a.name.startswith("baseline")]
    chain = [ab.compare(a, results, spec.seeds) for a in spec.cumulative[1:]]
    secondary = [ab.compare(a, results, spec.seeds, metric) for a, metric in secondary_tests(spec, claims_doc)]
    ab.adjust_for_family(single + chain + secondary)
    return single, chain, secondary


def family_of(spec: ab.Spec, size: int) -> dict:
    return {"name": f"the {size} tests of ablation {spec.name}", "size": size}


# ------------------------------------------------------------------ setups

def images_text(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else f"{n:,}"


def arm_setup(spec: ab.Spec, arm: ab.Arm, runs: dict, params_path: str | Path = "params.yaml") -> dict:
    train = ab.run_params(spec, arm, spec.seeds[0], params_path).train
    regime = spec.regimes[arm.regime]
    return {"n_train": runs[(arm.name, spec.seeds[0])]["n_train"], "epochs": train.epochs, "seeds": len(spec.seeds),
            "model": train.model, "batch_size": train.batch_size, "regime": arm.regime,
            "imbalance_ratio": regime.get("imbalance_ratio"), "regime_sets_batch": "train.batch_size" in regime}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def setup_text(setup: dict) -> str:
    """'8k images × 6 epochs, 3 seeds, sp_cnn_m', with what the regime changes."""
    tail = f"long-tailed {setup['imbalance_ratio']:g}:1 " if setup["imbalance_ratio"] else ""
    batch = f", batch {setup['batch_size']}" if setup["regime_sets_batch"] else ""
    return (f"{images_text(setup['n_train'])} {tail}images × {_count(setup['epochs'], 'epoch')}{batch}, "
            f"{_count(setup['seeds'], 'seed')}, {setup['model']}")


def arm_setups(spec: ab.Spec, runs: list[dict], params_path: str | Path = "params.yaml") -> dict[str, dict]:
    results = results_by_key(runs)
    return {a.name: arm_setup(spec, a, results, params_path) for a in spec.arms + spec.cumulative}


# ------------------------------------------------------------------ markdown

def _fmt_gain(c: ab.Comparison) -> str:
    return "-" if c.gain_per_extra_minute is None else f"{c.gain_per_extra_minute:+.2f}"


def _fmt_mde(c: ab.Comparison) -> str:
    if c.mde is None:
        return "-"
    return f"{100 * c.mde:.2f}" + (f" ({100 * c.mde_family:.2f})" if c.mde_family is not None else "")


def comparison_line(c: ab.Comparison) -> str:
    return (f"| {c.name} | {', '.join(c.claims) or '-'} | {c.regime} | {c.baseline} | {c.mean:.4f} | "
            f"{100 * c.delta:+.2f} | [{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}] | {cl.fmt_p(c.p_value)} | "
            f"{cl.fmt_p(c.p_adjusted)} | {c.effect} | {_fmt_mde(c)} | {c.extra_seconds:+.0f} | {_fmt_gain(c)} |")


COMPARISON_HEADER = ["| arm | claims | regime | vs | mean acc | delta (points) | 95% CI | p | Holm p | effect | "
                     "MDE, points (at alpha/m) | extra s | gain/extra min |", "|---" * 13 + "|"]


def baselines_table(spec: ab.Spec, results: dict, setups: dict) -> list[str]:
    lines = ["| baseline | regime | setup | mean acc | std | train s |", "|---|---|---|---|---|---|"]
    for b in [a for a in spec.arms if a.name.startswith("baseline")] + spec.cumulative[:1]:
        accs = [results[(b.name, s)]["test_accuracy"] for s in spec.seeds]
        secs = [results[(b.name, s)]["train_seconds"] for s in spec.seeds]
        std = np.std(accs, ddof=1) if len(accs) > 1 else 0.0
        lines.append(f"| {b.name} | {b.regime} | {setup_text(setups[b.name])} | {np.mean(accs):.4f} | {std:.4f} | "
                     f"{np.mean(secs):.0f} |")
    return lines


def gain_ranking(single: list[ab.Comparison]) -> list[str]:
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


def budget_notes(spec: ab.Spec, single: list[ab.Comparison], setups: dict) -> list[str]:
    """How the budget may bias the effects - every figure from the spec and the runs."""
    epochs = [s["epochs"] for s in setups.values()]
    images = [s["n_train"] for s in setups.values()]
    mdes = [100 * c.mde for c in single if c.mde is not None]
    regimes = {}
    for arm in spec.arms:
        if arm.name.startswith("baseline") and arm.regime not in regimes:
            regimes[arm.regime] = setup_text(setups[arm.name])
    lines = [f"- Every run is short ({min(epochs)}-{max(epochs)} epochs on {min(images):,}-{max(images):,} images). "
             "Regularisers - augmentation, Mixup, CutMix, label smoothing, EMA - pay off late in long trainings; "
             "here a *no detectable effect* or *hurts* for them can be the budget talking, not the technique.",
             "- Schedules are compared at the same short budget; the gap between cosine and step depends on where "
             "the step milestones fall."]
    if mdes:
        lines.append(f"- {len(spec.seeds)} seeds give wide intervals: the minimum detectable effects of the arms "
                     f"(paired t-test, alpha {ALPHA}, power {POWER}) range from {min(mdes):.2f} to {max(mdes):.2f} "
                     "points, before the correction; a *no detectable effect* is not proof of no effect.")
    lines.append("- Regimes: " + "; ".join(f"{name}: {text}" for name, text in regimes.items()) + ".")
    return lines


def ablation_markdown(spec: ab.Spec, single, chain, secondary, runs: list[dict], setups: dict, command: str,
                      rendered_by: str, data_source: str) -> str:
    results = results_by_key(runs)
    m = len(single) + len(chain) + len(secondary)
    lines = [f"# Ablation `{spec.name}`", "",
             f"Runs made by `{command}`, this report rendered by `{rendered_by}` from the stored runs: "
             f"{len(spec.seeds)} seeds ({', '.join(map(str, spec.seeds))}), test accuracy on the {data_source} test "
             f"set, differences paired by seed, 95% t-intervals, two-sided paired t-test (scipy). {SEED_NOISE}", "",
             f"p-values are Holm-adjusted across the {m} paired tests of this run (the arms, the chain steps and "
             f"{len(secondary)} secondary-metric test(s) that claims ask for): Holm controls the family-wise error "
             f"rate whatever the dependence between the tests and is uniformly more powerful than Bonferroni. Effect: "
             f"*improves* / *hurts* when the Holm-adjusted p is below {ALPHA}, else *no detectable effect*. MDE: the "
             f"smallest effect a paired t-test at alpha {ALPHA} would detect with power {POWER}, given the spread of "
             f"the per-seed differences; in brackets the same at alpha/m, the strictest step of Holm's correction. The "
             f"claims' verdicts are in the claims report.", "",
             "## Baselines", "", *baselines_table(spec, results, setups), "",
             "## One at a time (each arm vs its baseline)", "", *COMPARISON_HEADER, *map(comparison_line, single), "",
             "## Cumulative (the article's 5.1 chain; each step vs the step before)", "", *COMPARISON_HEADER,
             *map(comparison_line, chain)]
    if secondary:
        lines += ["", "## Secondary metrics (relative change, percent)", "",
                  "| arm | metric | vs | mean | baseline mean | change (%) | 95% CI | p | Holm p | effect | "
                  "MDE, % (at alpha/m) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {c.name} | {c.metric} | {c.baseline} | {c.mean:.4f} | {c.baseline_mean:.4f} | "
                  f"{100 * c.delta:+.2f} | [{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}] | {cl.fmt_p(c.p_value)} | "
                  f"{cl.fmt_p(c.p_adjusted)} | {c.effect} | {_fmt_mde(c)} |" for c in secondary]
    lines += ["", "## Gain per extra minute of training (arms that improve)", "", *gain_ranking(single),
              "", "## How the budget may bias the effects", "", *budget_notes(spec, single, setups)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ charts

def claim_marks(c: ab.Comparison, claims_doc: dict) -> tuple[list[float], list[int]]:
    """The claimed values (points) and claimed directions (claims without a value) of an arm."""
    by_id = {claim["id"]: claim for claim in claims_doc["claims"]}
    values, directions = [], []
    for cid in c.claims:
        claim = by_id[cid]
        if cl.claim_metric(claim) != c.metric or not claim.get("direction"):
            continue
        value = cl.claimed_value(claim, c.name)
        if value is None:
            directions.append(direction_sign(claim["direction"]))
        else:
            values.append(value)
    return values, directions


def plot_effects(single: list[ab.Comparison], claims_doc: dict, path: Path) -> None:
    from skillpack.plots import plot_effects as draw

    items = []
    for c in single:
        values, directions = claim_marks(c, claims_doc)
        items.append({"label": f"{c.name} ({c.regime})", "delta": 100 * c.delta, "low": 100 * c.ci_low,
                      "high": 100 * c.ci_high, "colour": EFFECT_COLOURS[c.effect], "claimed": values,
                      "directions": directions})
    draw(items, path, title="One-at-a-time ablation: paired difference vs baseline, 95% CI; colour from the "
                            "Holm-adjusted test", xlabel="test accuracy difference vs baseline (points)")


def plot_chain(spec: ab.Spec, chain: list[ab.Comparison], runs: list[dict], claims_doc: dict, path: Path) -> None:
    from skillpack.plots import plot_waterfall

    results = results_by_key(runs)
    start = 100 * float(np.mean([results[(spec.cumulative[0].name, s)]["test_accuracy"] for s in spec.seeds]))
    steps = []
    for c in chain:
        values, _ = claim_marks(c, claims_doc)
        steps.append({"label": c.name.replace("chain_", "+"), "delta": 100 * c.delta, "low": 100 * c.ci_low,
                      "high": 100 * c.ci_high, "colour": EFFECT_COLOURS[c.effect],
                      "claimed": values[0] if values else None})
    plot_waterfall(start, steps, path, title="Cumulative ablation (the article's chain): mean of seeds, 95% CI per "
                                             "step; colour from the Holm-adjusted test", ylabel="test accuracy (%)")


# ------------------------------------------------------------------ entry point

def report_suffix(spec: ab.Spec, command: str) -> str:
    return "" if len(spec.seeds) >= 3 and "quick" not in command else "_quick"


def report_paths(reports: Path, spec: ab.Spec, command: str) -> dict[str, Path]:
    suffix = report_suffix(spec, command)
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
                           rendered_by: str | None = None, params_path: str | Path = "params.yaml") -> dict:
    """Render every report of an ablation run from its runs. `benchmarks` maps a benchmark's
    name (cleaning, train_speed, time_to_accuracy) to its loaded results; `command` is what
    made the runs, `rendered_by` what renders the report (default: the same)."""
    benchmarks = benchmarks or {}
    claims_doc = claims_doc or cl.load_claims()
    rendered_by = rendered_by or command
    check_claim_ids(spec, claims_doc)
    check_runs_cover_spec(spec, runs)
    single, chain, secondary = family_comparisons(spec, runs, claims_doc)
    family = family_of(spec, len(single) + len(chain) + len(secondary))
    setups = arm_setups(spec, runs, params_path)
    paths = report_paths(reports, spec, command)
    data_source = ab.run_params(spec, spec.arms[0], spec.seeds[0], params_path).data.source
    write_text(paths["markdown"], ablation_markdown(spec, single, chain, secondary, runs, setups, command, rendered_by,
                                                    data_source))
    write_json(paths["json"], {"spec": spec.name, "command": command, "seeds": spec.seeds,
                               "family": {"correction": "holm", "alpha": ALPHA, "tests": family["size"]},
                               "arms": [c.as_dict() for c in single], "cumulative": [c.as_dict() for c in chain],
                               "secondary": [c.as_dict() for c in secondary], "setups": setups, "runs": runs})
    plot_effects(single, claims_doc, paths["deltas"])
    plot_chain(spec, chain, runs, claims_doc, paths["waterfall"])
    table = cl.claims_table(claims_doc, single + chain + secondary, {n: setup_text(s) for n, s in setups.items()},
                            family, spec.name, benchmarks, params_path)
    cl.write_claims(claims_doc, table, claims_header(spec, command, rendered_by, paths, family, benchmarks),
                    paths["claims_markdown"], paths["claims_json"])
    return {"markdown": str(paths["markdown"]), "files": list(paths.values()), "claims": table}
