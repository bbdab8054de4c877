"""The claims table: one row per (claim, arm) from the ablation's comparisons, the static
checks (skillpack.evidence.static_checks) and the cleaning benchmark's results, each with a
verdict of skillpack.evidence.verdicts; skillpack.evidence.claims_report renders it.

What a claim says (direction, claimed value, metric, why it is not tested) is data in
claims.yaml; the results are passed in by the caller (the ablation's comparisons, the loaded
benchmark JSON): nothing here reads a results file or knows a figure.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from skillpack.config import read_yaml
from skillpack.evidence.static_checks import STATIC_CHECKS
from skillpack.evidence.verdicts import INCONCLUSIVE, NOT_TESTED, STATIC, VERDICTS, cost_verdict, direction_sign, verdict
from skillpack.stats import (
    ALPHA,
    binomial_test,
    family_interval,
    holm,
    minimum_detectable_effect,
    minimum_detectable_proportion_gap,
    paired_t_test,
)

if TYPE_CHECKING:
    from skillpack.evidence.ablation import Spec
    from skillpack.evidence.comparisons import Comparison

CLAIMS_FILE = Path("claims.yaml")
UNITS = {"test_accuracy": "points", "recall_at_1": "points", "tar_at_far": "points"}  # the rest: relative, percent
ACCURACY = "test_accuracy"


def load_claims(path: str | Path = CLAIMS_FILE) -> dict:
    """claims.yaml: {"defaults": ..., "claims": [...]}."""
    return read_yaml(path)


def claim_metric(claim: dict) -> str:
    return claim.get("metric", ACCURACY)


def unit(metric: str) -> str:
    return UNITS.get(metric, "%")


# ------------------------------------------------------------------ claimed values

def _figure_value(figure: dict, ref, sign: int) -> float:
    """A figure key (a [low, high] range gives its end nearer 0 in the claimed direction) or
    [control, treated] keys (their difference)."""
    if isinstance(ref, str):
        value = figure[ref]
        if isinstance(value, list):
            return float(min(value, key=lambda v: sign * v))
        return float(value)
    control, treated = ref
    return round(float(figure[treated]) - float(figure[control]), 9)  # 65.8 - 62.3 is 3.4999999999999964


def claimed_value(claim: dict, arm: str | None = None) -> float | None:
    """The claimed effect c for an arm, in the metric's unit, or None (direction only)."""
    ref = claim.get("claimed")
    if isinstance(ref, dict):
        ref = ref.get(arm)
    if ref is None:
        return None
    sign = direction_sign(claim["direction"])
    value = _figure_value(claim.get("figure") or {}, ref, sign)
    if sign * value <= 0:
        raise ValueError(f"claims.yaml: {claim['id']}: claimed {value:+g} for {arm} disagrees with "
                         f"direction {claim['direction']}")
    return value


def non_inferiority_margin(claim: dict) -> float | None:
    """The margin m of a "costs at most m" claim (claims.yaml `non_inferiority`: a figure key or
    a number, in the metric's unit), or None for a claim read by the usual rules."""
    ref = claim.get("non_inferiority")
    if ref is None:
        return None
    value = (claim.get("figure") or {}).get(ref) if isinstance(ref, str) else ref
    if not isinstance(value, (int, float)) or value == 0:
        raise ValueError(f"claims.yaml: {claim['id']}: non_inferiority {ref!r} names no non-zero figure")
    return abs(float(value))


def claim_marks(c: Comparison, claims_doc: dict) -> tuple[list[float], list[int]]:
    """The claimed values (points) and claimed directions (claims without a value) of the
    claims a comparison's arm tests on its metric."""
    by_id = {claim["id"]: claim for claim in claims_doc["claims"]}
    values, directions = [], []
    for cid in c.claims:
        claim = by_id[cid]
        if claim_metric(claim) != c.metric or not claim.get("direction"):
            continue
        value = claimed_value(claim, c.name)
        if value is None:
            directions.append(direction_sign(claim["direction"]))
        else:
            values.append(value)
    return values, directions


# ------------------------------------------------------------------ rows

ZERO_SIDE_ONLY = "zero side (no claimed value)"   # a row's correction when only its direction is claimed


def row(claim: dict, verdict_: str, statement: str, *, arm: str | None = None, measured=None,
        ci_low: float | None = None, ci_high: float | None = None, claimed=None, p: float | None = None,
        p_adjusted: float | None = None, mde: float | None = None, setup: str | None = None, **extra) -> dict:
    if verdict_ not in (*VERDICTS, STATIC):
        raise ValueError(f"unknown verdict {verdict_!r}")
    return {"claim": claim["id"], "arm": arm, "verdict": verdict_, "measured": measured, "ci_low": ci_low,
            "ci_high": ci_high, "claimed": claimed, "p": p, "p_adjusted": p_adjusted, "mde": mde, "setup": setup,
            "statement": statement, "tested_as": claim.get("tested_as"), **extra}


def fmt_p(p: float) -> str:
    if p == 0:
        return "0"  # an underflow, or differences without spread (skillpack.stats.paired_t_test)
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _judged_statement(verdict_: str, setup: str, what: str, measured: float, low: float, high: float,
                      unit_: str, claimed: float | None, direction: str, p: float, p_adjusted: float,
                      mde: tuple[float, float | None] | None, family: dict) -> str:
    claim_text = f"claimed {claimed:+.3g}" if claimed is not None else f"claimed direction: {direction}"
    text = (f"{verdict_} at {setup}: {what} {measured:+.2f} {unit_} [{low:+.2f}, {high:+.2f}], {claim_text}; "
            f"p {fmt_p(p)}, Holm-adjusted over {family['name']} {fmt_p(p_adjusted)}")
    if mde is not None:
        per_test, corrected = mde
        text += f"; this setup detects only effects of about {per_test:.2f} {unit_} or more"
        if corrected is not None:
            text += f" ({corrected:.2f} at the family's alpha/{family['size']})"
    return text


def comparison_row(claim: dict, comparison, setup: str, family: str) -> dict:
    """A claim judged on one arm-vs-baseline comparison of the ablation (values x 100: points
    for accuracy, percent for a relative change)."""
    c = comparison
    measured, low, high = 100 * c.delta, 100 * c.ci_low, 100 * c.ci_high
    claimed = claimed_value(claim, c.name)
    direction = claim["direction"]
    family_size = family.get("sizes", {}).get(getattr(c, "family", None), family["size"])
    family_low, family_high = family_interval(low, high, c.n_seeds, family_size)
    margin = non_inferiority_margin(claim)
    verdict_ = (cost_verdict(family_low, family_high, margin) if margin is not None
                else verdict(low, high, c.p_adjusted, claimed, direction, family=(family_low, family_high)))
    blind = verdict_ == INCONCLUSIVE and c.mde is not None
    mde = 100 * c.mde if blind else None
    mde_family = 100 * c.mde_family if blind and c.mde_family is not None else None
    statement = _judged_statement(verdict_, setup, f"{c.name} vs {c.baseline}", measured, low, high,
                                  unit(c.metric), claimed, direction, c.p_value, c.p_adjusted,
                                  (mde, mde_family) if blind else None, family)
    statement += f" ({claim['note']})" if claim.get("note") else ""
    return row(claim, verdict_, statement, arm=c.name, measured=measured, ci_low=low, ci_high=high, claimed=claimed,
               p=c.p_value, p_adjusted=c.p_adjusted, mde=mde, setup=setup, mde_family=mde_family,
               baseline=c.baseline, unit=unit(c.metric), metric=c.metric, direction=direction, family=family["name"],
               family_ci_low=family_low, family_ci_high=family_high, correction="both sides", margin=margin)


def ablation_rows(claim: dict, comparisons: list, setups: dict[str, str], family: dict,
                  curves: dict | None = None, transfer: list[dict] | None = None) -> list[dict]:
    """One row per arm that tests the claim on the claim's metric - never one arm for all -
    at the spec's budget (family main) and at every other budget of its curve (family curves).
    A main row's statement adds its budget curve and its result on the second dataset."""
    rows = []
    for c in comparisons:
        if claim["id"] not in c.claims or c.metric != claim_metric(claim):
            continue
        r = comparison_row(claim, c, setups[c.name], family)
        r["family"] = c.family
        r["n_seeds"] = c.n_seeds
        curve = (curves or {}).get((c.name, c.metric))
        if curve:
            r["curve"] = curve
            r["statement"] += f". Budget curve: {curve}"
        moved = next((t for t in transfer or [] if t["arm"] == c.name and t["metric"] == c.metric), None)
        if moved:
            away = moved["away"]
            r["transfer"] = {"arm": away.name, "effect": away.effect, "delta": 100 * away.delta,
                             "ci_low": 100 * away.ci_low, "ci_high": 100 * away.ci_high, "n_seeds": away.n_seeds,
                             "agree": moved["agree"]}
            r["statement"] += (f". On {away.regime}: {away.effect}, {100 * away.delta:+.2f} [{100 * away.ci_low:+.2f}, "
                               f"{100 * away.ci_high:+.2f}] ({away.n_seeds} seeds): "
                               + ("agrees" if moved["agree"] else "does not agree"))
        rows.append(r)
    return rows


def not_tested_row(claim: dict, because: dict, **context) -> dict:
    reason, would_take = because["reason"].format(**context), because["would_take"].format(**context)
    return row(claim, NOT_TESTED, f"not tested: {reason}; it would take {would_take}",
               not_tested={"reason": reason, "would_take": would_take})


# ------------------------------------------------------------------ static checks

def static_row(claim: dict, params_path: str | Path = "params.yaml", benchmarks: dict | None = None) -> dict:
    check = claim["static"]
    out = STATIC_CHECKS[check["check"]](claim, check, params_path=params_path, benchmarks=benchmarks)
    statement = out["statement"] + (f" ({claim['note']})" if claim.get("note") else "")
    return row(claim, STATIC, statement, measured=out["measured"], claimed=out["claimed"], setup=out["setup"])


# ------------------------------------------------------------------ cleaning benchmark

def _noise(setting: str) -> tuple[str, float]:
    """'symmetric_0.2' -> ('symmetric', 0.2)."""
    kind, rate = setting.rsplit("_", 1)
    return kind, float(rate)


def _precision_test(detected: dict, rate: float) -> dict:
    """Precision of a detector's flags against the noise rate, which is the precision of
    flagging at random, on one noise draw: exact binomial test and Clopper-Pearson interval
    (skillpack.stats.binomial_test), in points."""
    n = int(detected["flagged"])
    if n == 0:
        return {"measured": None, "ci_low": -100 * rate, "ci_high": 100 * (1 - rate), "p": 1.0, "n": 0, "draws": 1}
    hits = int(round(detected["precision"] * n))
    low, high, p = binomial_test(hits, n, rate)
    return {"measured": 100 * (hits / n - rate), "ci_low": 100 * (low - rate), "ci_high": 100 * (high - rate),
            "p": p, "n": n, "draws": 1}


def _draws_test(draws: dict, detector: str) -> dict:
    """The same figure over several noise draws (each its own label flips and out-of-fold
    models): the draw is the unit, so the t-interval of precision minus the draw's realised
    noise rate, paired by draw, covers the noise and the training, in points."""
    precision = [d[detector]["precision"] for d in draws.values()]
    rates = [d["noise_rate"] for d in draws.values()]
    t = paired_t_test(precision, rates)
    return {"measured": 100 * t["delta"], "ci_low": 100 * t["ci_low"], "ci_high": 100 * t["ci_high"],
            "p": t["p_value"], "n": int(statistics.median(d[detector]["flagged"] for d in draws.values())),
            "draws": len(draws), "differences": [100 * (p - r) for p, r in zip(precision, rates)]}


def cleaning_test(found: dict, detector: str, rate: float) -> dict:
    """A setting's test of one detector: over its noise draws where it has several, else the
    binomial test of its single draw."""
    draws = found.get("draws") or {}
    return _draws_test(draws, detector) if len(draws) >= 2 else _precision_test(found[detector], rate)


def _cleaning_setup(results: dict, setting: str, t: dict) -> str:
    kind, rate = _noise(setting)
    oof = results.get("oof", {})
    images = results[setting].get("cleaned", {}).get("input")
    size = f"{images:,} images, " if images else ""
    draws = "one noise draw" if t["draws"] == 1 else \
        f"{t['draws']} noise draws (label flips and out-of-fold seeds {', '.join(results[setting]['draws'])})"
    flagged = f"{t['n']:,} flagged" if t["draws"] == 1 else f"median {t['n']:,} flagged"
    return (f"{size}{kind} label noise at {rate:.0%}, {flagged}, out-of-fold {oof.get('model', '?')} "
            f"({oof.get('folds', '?')} folds x {oof.get('epochs', '?')} epochs), {draws}")


def _blind_spot(t: dict, rate: float, family_size: int) -> tuple[float | None, float | None]:
    """The minimum detectable effect at alpha and at the family's Bonferroni alpha, in points."""
    if t["draws"] > 1:
        gaps = [minimum_detectable_effect(t["differences"], a) for a in (ALPHA, ALPHA / family_size)]
        return tuple(g if g is None else float(g) for g in gaps)
    gaps = [minimum_detectable_proportion_gap(rate, t["n"], a) for a in (ALPHA, ALPHA / family_size)]
    return tuple(g if g is None else 100 * g for g in gaps)


def _detector_detail(found: dict, detector: str) -> dict:
    """Precision, recall, F1 (and cleanlab's F1 beside it): means over the noise draws where
    there are several."""
    draws = list((found.get("draws") or {}).values()) or [found]
    mean = lambda name, key: statistics.fmean(d[name][key] for d in draws)  # noqa: E731
    detail = {k: round(mean(detector, k), 3) for k in ("precision", "recall", "f1") if k in found[detector]}
    if "cleanlab" in found:
        detail["cleanlab_f1"] = round(mean("cleanlab", "f1"), 3)
    if detector == "gradient" and "gradient_norm" in found:
        g = found["gradient_norm"]
        detail["median_norm_flipped_vs_clean"] = [round(g["median_flipped"], 3), round(g["median_clean"], 3)]
    return detail


def cleaning_rows(claims: list[dict], results: dict) -> dict[str, list[dict]]:
    """Rows for the claims judged on the cleaning benchmark, one per (claim, noise setting),
    Holm-adjusted across all of them (the benchmark run's family of tests)."""
    judged = [c for c in claims if c.get("cleaning")]
    settings = [s for s in results.get("settings", []) if s in results]
    tests = [(claim, setting, cleaning_test(results[setting], claim["cleaning"]["detector"], _noise(setting)[1]))
             for claim in judged for setting in settings if claim["cleaning"]["detector"] in results[setting]]
    family = {"name": f"the {len(tests)} tests of the cleaning benchmark", "size": len(tests)}
    out: dict[str, list[dict]] = {}
    for (claim, setting, t), p_adjusted in zip(tests, holm([t["p"] for _, _, t in tests])):
        detector = claim["cleaning"]["detector"]
        verdict_ = verdict(t["ci_low"], t["ci_high"], p_adjusted, None, claim["direction"])
        mde, mde_family = _blind_spot(t, _noise(setting)[1], len(tests))
        blind = verdict_ == INCONCLUSIVE and mde is not None
        mde, mde_family = (mde, mde_family) if blind else (None, None)
        setup = _cleaning_setup(results, setting, t)
        statement = _judged_statement(verdict_, setup, f"{detector} precision minus noise rate",
                                      t["measured"] or 0.0, t["ci_low"], t["ci_high"], "points", None,
                                      claim["direction"], t["p"], p_adjusted, (mde, mde_family) if blind else None,
                                      family)
        out.setdefault(claim["id"], []).append(
            row(claim, verdict_, statement, arm=setting, measured=t["measured"], ci_low=t["ci_low"],
                ci_high=t["ci_high"], p=t["p"], p_adjusted=p_adjusted, mde=mde, setup=setup, mde_family=mde_family,
                baseline="random flags", unit="points", direction=claim["direction"], family=family["name"],
                detail=_detector_detail(results[setting], detector), correction=ZERO_SIDE_ONLY, margin=None,
                replicates={"count": t["draws"], "of": "noise draw"}))
    return out


# ------------------------------------------------------------------ label-efficiency benchmark

def label_efficiency_pool(budget: dict) -> tuple[str, str]:
    """The label-efficiency benchmark's labelled pool and SimCLR images in words (its results'
    `budget`); benchmarks/docs_search.py renders the same words."""
    pool = "the whole training split" if budget["max_train"] is None else f"a stratified {budget['max_train']:,}-image pool"
    images = "the pool's images" if budget.get("pretrain_images") is None \
        else f"{budget['pretrain_images']:,} of the pool's images"
    return pool, images


def _label_efficiency_setup(results: dict, difference: dict) -> str:
    b = results["budget"]
    pool, images = label_efficiency_pool(b)
    return (f"{results['model']} at {b['input_size']} px fine-tuned {b['epochs']} epochs on {100 * difference['fraction']:g}% "
            f"of {pool} of {difference['dataset']}, {len(b['seeds'])} seeds; SimCLR {b['pretrain_epochs']} epochs on "
            f"{images}, labels ignored")


def label_efficiency_rows(claims: list[dict], results: dict) -> dict[str, list[dict]]:
    """Rows for the claims judged on the label-efficiency benchmark (claims.yaml
    `label_efficiency: {init: ...}`): one per (dataset, fraction), that start minus scratch paired by
    seed, Holm-adjusted over every paired difference the benchmark reports (its family)."""
    differences = results["summary"]["paired_differences"]
    family = {"name": f"the {len(differences)} paired differences of the label-efficiency benchmark",
              "size": len(differences)}
    adjusted = holm([d["p_value"] for d in differences])
    out: dict[str, list[dict]] = {}
    for claim in (c for c in claims if c.get("label_efficiency")):
        init = claim["label_efficiency"]["init"]
        for d, p_adjusted in ((d, p) for d, p in zip(differences, adjusted) if d["init"] == init):
            measured, low, high = 100 * d["delta"], 100 * d["ci_low"], 100 * d["ci_high"]
            verdict_ = verdict(low, high, p_adjusted, None, claim["direction"])
            setup = _label_efficiency_setup(results, d)
            statement = _judged_statement(verdict_, setup, f"{init} minus scratch", measured, low, high, "points", None,
                                          claim["direction"], d["p_value"], p_adjusted, None, family)
            out.setdefault(claim["id"], []).append(
                row(claim, verdict_, statement, arm=f"{init}_{d['dataset']}_{d['fraction']:g}", measured=measured,
                    ci_low=low, ci_high=high, p=d["p_value"], p_adjusted=p_adjusted, setup=setup, baseline="scratch",
                    unit="points", metric="test_accuracy", direction=claim["direction"], family=family["name"],
                    correction=ZERO_SIDE_ONLY, margin=None,
                    replicates={"count": len(results["budget"]["seeds"]), "of": "seed"}))
    return out


# ------------------------------------------------------------------ related measurements

def cpu_bf16(spec: dict, benchmarks: dict[str, dict]) -> dict | None:
    """bf16 autocast on a CPU with bf16 units, from the train_speed and time_to_accuracy
    benchmarks' results (whichever were passed in)."""
    measured, texts = {}, []
    speed = benchmarks.get("train_speed")
    if speed:
        model = speed.get("models", {}).get(spec["model"], speed)
        step = model.get("engine_choices", {}).get("bf16_speedup")
        if step is not None:
            measured["step_speedup"] = step
            texts.append(f"bf16 autocast makes the {spec['model']} training step {step:.2f}x faster "
                         f"({speed.get('generated_by', 'train_speed')})")
    timing = benchmarks.get("time_to_accuracy")
    recipes = (timing or {}).get("recipes", {})
    control, treated = recipes.get(spec["control_recipe"]), recipes.get(spec["treated_recipe"])
    if control and treated:
        speedup = control["train_s"] / treated["train_s"]
        measured.update(recipe_speedup=round(speedup, 3), recipe_train_s=[treated["train_s"], control["train_s"]],
                        recipe_test_acc=[treated["acc"], control["acc"]])
        texts.append(f"recipe {spec['treated_recipe']} trains {speedup:.2f}x faster than recipe "
                     f"{spec['control_recipe']} (median {treated['train_s']:.0f} vs {control['train_s']:.0f} s, "
                     f"test acc {treated['acc']:.4f} vs {control['acc']:.4f}, {len(control.get('seeds', []))} seeds; "
                     f"{timing.get('generated_by', 'time_to_accuracy')})")
    if not texts:
        return None
    return {"measured": measured, "text": "related, bf16 on a CPU (not fp16 on a GPU): " + "; ".join(texts)}


RELATED = {"cpu_bf16": cpu_bf16}


def with_related(entry: dict, claim: dict, benchmarks: dict[str, dict]) -> dict:
    for name, spec in (claim.get("related") or {}).items():
        found = RELATED[name](spec, benchmarks)
        if found:
            entry.setdefault("related", {})[name] = found["measured"]
            entry["statement"] += f". {found['text']}"
    return entry


# ------------------------------------------------------------------ the table

def claims_table(claims_doc: dict, comparisons: list, setups: dict[str, str], family: dict, spec: Spec,
                 benchmarks: dict[str, dict] | None = None, curves: dict | None = None,
                 transfer: list[dict] | None = None) -> list[dict]:
    """Every claim of claims.yaml in order: its static row, one row per ablation arm and per
    cleaning setting that tests it, or a not-tested row with the reason of claims.yaml.
    `comparisons` are the ablation's, family-adjusted ({name, size} of that family in `family`);
    `setups` maps arm -> setup text; `spec` is the ablation's (its name, and the params file
    the static checks read); `benchmarks` maps a benchmark's name (cleaning, train_speed, ...) to its loaded results."""
    benchmarks = benchmarks or {}
    claims, defaults = claims_doc["claims"], claims_doc.get("defaults", {})
    cleaning = cleaning_rows(claims, benchmarks["cleaning"]) if benchmarks.get("cleaning") else {}
    labels = label_efficiency_rows(claims, benchmarks["label_efficiency"]) if benchmarks.get("label_efficiency") else {}
    table = []
    for claim in claims:
        rows = ([static_row(claim, spec.params_path, benchmarks)] if claim.get("static") else [])
        rows += ablation_rows(claim, comparisons, setups, family, curves, transfer) + cleaning.get(claim["id"], [])
        rows += labels.get(claim["id"], [])
        if claim.get("not_tested"):
            rows.append(with_related(not_tested_row(claim, claim["not_tested"], spec=spec.name), claim, benchmarks))
        elif not rows or (claim.get("direction") and not any(r["verdict"] != STATIC for r in rows)):
            because = (defaults["no_cleaning_results"] if claim.get("cleaning") else
                       defaults["no_label_efficiency_results"] if claim.get("label_efficiency") else
                       defaults["not_in_spec"])
            rows.append(not_tested_row(claim, because, spec=spec.name))
        table += rows
    return table
