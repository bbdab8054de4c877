"""The claims report, reports/claims.{md,json}: the claims table (skillpack.evidence.claims) with
its verdict counts and a summary of how much of the article it judges, on how many seeds.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from skillpack.evidence.budget_caveat import caveat_lines
from skillpack.evidence.claim_topics import headline_rows, topic_sections
from skillpack.evidence.claims import ACCURACY, fmt_p
from skillpack.evidence.verdicts import NOT_TESTED, STATIC, VERDICTS
from skillpack.io import write_json, write_text


def verdict_counts(table: list[dict]) -> dict[str, int]:
    return {v: n for v in (*VERDICTS, STATIC) if (n := sum(r["verdict"] == v for r in table))}


def _measured_cell(r: dict) -> str:
    if r["verdict"] == STATIC or r["verdict"] == NOT_TESTED:
        return r["statement"].removeprefix("not tested: ")
    if r["measured"] is None:
        return "-"
    detail = ", ".join(f"{k} {v}" for k, v in (r.get("detail") or {}).items())
    interval = f"{r['measured']:+.2f} {r['unit']} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
    return interval + (f" ({detail})" if detail else "")


def _claimed_cell(r: dict) -> str:
    if r["claimed"] is None:
        return f"direction: {r['direction']}" if r.get("direction") and r["verdict"] != NOT_TESTED else "-"
    if isinstance(r["claimed"], (int, float)):
        return f"{r['claimed']:+.3g}" if r["verdict"] != STATIC else f"{r['claimed']:g}"
    return ", ".join(f"{k} {v:g}" for k, v in r["claimed"].items())


def _verdict_cell(r: dict) -> str:
    if r["verdict"] == NOT_TESTED:
        return "**not tested**"
    return f"**{r['verdict']}**" + (f" at {r['setup']}" if r["verdict"] != STATIC else f" ({r['setup']})")


def _arm_cell(r: dict) -> str:
    return f"{r['arm']} vs {r['baseline']}" if r["arm"] else "-"


def _more_cell(r: dict) -> str:
    parts = [r["curve"]] if r.get("curve") else []
    if r.get("transfer"):
        t = r["transfer"]
        parts.append(f"{t['arm']}: {t['effect']}, {t['delta']:+.2f} [{t['ci_low']:+.2f}, {t['ci_high']:+.2f}] "
                     f"({t['n_seeds']} seeds), {'agrees' if t['agree'] else 'does not agree'}")
    return "; ".join(parts) or "-"


def evidence_summary(claims_doc: dict, table: list[dict]) -> dict:
    """How much of the article the table judges, and on how many seeds: claims with a measured
    verdict and an interval, the seeds of the ablation's rows, their interval half-widths, and
    the replicates (seeds, noise draws) of the rows judged on benchmarks."""
    measured = [r for r in table if r["verdict"] in VERDICTS and r["verdict"] != NOT_TESTED]
    ablation = [r for r in measured if r.get("n_seeds")]
    accuracy = [r for r in ablation if r.get("family") == "main" and r.get("metric") == ACCURACY]
    claims = list(dict.fromkeys(r["claim"] for r in measured))
    benchmark = {}
    for r in measured:
        if not r.get("n_seeds"):
            counts = benchmark.setdefault(r["claim"], {})
            unit_ = (r.get("replicates") or {}).get("of", "sample")
            counts.setdefault(unit_, []).append((r.get("replicates") or {}).get("count", 1))
    return {"claims": len(claims_doc["claims"]), "measured_claims": len(claims),
            "ablation_claims": len({r["claim"] for r in ablation}),
            "seeds_min": min((r["n_seeds"] for r in ablation), default=None),
            "seeds_median": statistics.median([r["n_seeds"] for r in ablation]) if ablation else None,
            "halfwidth_median_points": statistics.median([(r["ci_high"] - r["ci_low"]) / 2 for r in accuracy])
            if accuracy else None,
            "benchmark_claims": {claim: {unit_: {"rows": len(n), "max": max(n), "min": min(n),
                                                 "at_max": n.count(max(n))}
                                         for unit_, n in counts.items()} for claim, counts in benchmark.items()},
            "below_five": sorted(c for c, counts in benchmark.items() if all(max(n) < 5 for n in counts.values()))}


def _counted(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _benchmark_text(claim: str, counts: dict) -> str:
    """'clean.dbscan (5 noise draws in 2 of 6 rows, 1 in the others)'"""
    parts = []
    for unit_, n in counts.items():
        if n["min"] == n["max"]:
            parts.append(_counted(n["max"], unit_) + ("" if n["rows"] == 1 else " in each row"))
        else:
            parts.append(f"{_counted(n['max'], unit_)} in {n['at_max']} of {n['rows']} rows, {n['min']} in the others")
    return f"{claim} ({'; '.join(parts)})"


def _summary_lines(summary: dict) -> list[str]:
    if not summary["measured_claims"]:
        return []
    line = (f"{summary['measured_claims']} of {summary['claims']} claims have a measured verdict with an interval; "
            f"{summary['ablation_claims']} of them from the ablation")
    if summary["seeds_median"] is not None:
        line += f" (seeds per row: at least {summary['seeds_min']}, median {summary['seeds_median']:g})"
    if summary["halfwidth_median_points"] is not None:
        line += f"; accuracy intervals at the spec's budget: half-width median {summary['halfwidth_median_points']:.2f} points"
    if summary["benchmark_claims"]:
        line += (". Judged on benchmarks, with their own replicates: "
                 + ", ".join(_benchmark_text(c, n) for c, n in summary["benchmark_claims"].items()))
    if summary["below_five"]:
        line += f". Fewer than 5 replicates in every row: {', '.join(summary['below_five'])}"
    return [line + ".", ""]


def _figure_text(claim: dict) -> str:
    figure = claim.get("figure") or {}
    return ", ".join(f"{k} {v}" for k, v in figure.items()) or "-"


def one_line_per_claim(claims_doc: dict, table: list[dict]) -> list[str]:
    """What became of each claim of claims.yaml, one line each: the article's statement and
    figure, what was measured at the main setup, the verdict, the setup; the detailed rows below."""
    lines = ["## Every claim in one line", "",
             "| claim | the article says | figure | measured [95% CI] | verdict | setup | details |",
             "|---|---|---|---|---|---|---|"]
    for claim in claims_doc["claims"]:
        rows = headline_rows(claim["id"], table)
        if not rows:
            lines.append(f"| {claim['id']} | {claim['claim']} | {_figure_text(claim)} | - | **not tested** | - | - |")
            continue
        measured = "; ".join((f"{r['arm']}: " if len(rows) > 1 and r.get("arm") else "") + _measured_cell(r) for r in rows)
        verdicts = "; ".join((f"{r['arm']}: " if len(rows) > 1 and r.get("arm") else "") + f"**{r['verdict']}**"
                             for r in rows)
        setup = rows[0]["setup"] if rows[0]["verdict"] != NOT_TESTED else "-"
        lines.append(f"| {claim['id']} | {claim['claim']} | {_figure_text(claim)} | {measured} | {verdicts} | {setup} | "
                     f"[rows](#{claim['id'].replace('.', '')}) |")
    return [*lines, ""]


def claims_markdown(claims_doc: dict, table: list[dict], header: list[str], caveat: dict | None = None) -> str:
    """The report: the header's first line, one line per claim, the budget caveat
    (skillpack.evidence.budget_caveat), what each topic shows, then every row."""
    articles = {c["id"]: c for c in claims_doc["claims"]}
    counts = verdict_counts(table)
    lines = ["# Claims of the article, verified", "", *header[:1], "", *one_line_per_claim(claims_doc, table),
             *caveat_lines(caveat), *topic_sections(claims_doc, table),
             "## Every row", "", *header[1:], "", *_summary_lines(evidence_summary(claims_doc, table)),
             "| verdict | rows |", "|---|---|", *[f"| {v} | {n} |" for v, n in counts.items()], "",
             "| claim | article | arm | verdict, at its setup | measured [95% CI] | claimed | p / Holm-adjusted p | "
             "MDE (at alpha/m) | budget curve; second dataset |",
             "|---|---|---|---|---|---|---|---|---|"]
    previous = None
    for r in table:
        claim = articles[r["claim"]]
        first = r["claim"] != previous
        previous = r["claim"]
        article = claim["claim"] + (f" *(tested as: {claim['tested_as']})*" if claim.get("tested_as") else "")
        p = f"{fmt_p(r['p'])} / {fmt_p(r['p_adjusted'])}" if r["p"] is not None else "-"
        mde = f"{r['mde']:.2f} ({r['mde_family']:.2f}) {r['unit']}" if r["mde"] is not None else "-"
        anchor = f'<a id="{r["claim"].replace(".", "")}"></a>{r["claim"]}' if first else ""
        lines.append(f"| {anchor} | {article if first else ''} | {_arm_cell(r)} | "
                     f"{_verdict_cell(r)} | {_measured_cell(r)} | {_claimed_cell(r)} | {p} | {mde} | {_more_cell(r)} |")
    return "\n".join(lines) + "\n"


def write_claims(claims_doc: dict, table: list[dict], header: list[str], md_path: Path, json_path: Path,
                 caveat: dict | None = None) -> None:
    write_json(json_path, table)
    write_text(md_path, claims_markdown(claims_doc, table, header, caveat))
