"""What each topic of claims shows: one section per topic of claims.yaml (the prefix of a claim's
id: aug, clean, loss, ...), rendered from the claims table's rows - how many claims got each
verdict, the strongest measured effect with its interval and setup, and how blind the
inconclusive rows were - so that it stays true when the results change. The only fixed words
are claims.yaml's `topics:` (what a topic's claims are about) and what a verdict means.
"""
from __future__ import annotations

from collections import Counter

from skillpack.evidence.verdicts import INCONCLUSIVE, NOT_TESTED, STATIC, VERDICTS

MIXED = "mixed"  # a claim whose arms got different verdicts


def topic_of(claim_id: str) -> str:
    return claim_id.split(".", 1)[0]


def claims_by_topic(claims_doc: dict) -> dict[str, list[dict]]:
    """Topic -> its claims, in the order of claims.yaml; every topic must be described in its
    `topics:`."""
    described = claims_doc.get("topics") or {}
    out: dict[str, list[dict]] = {}
    for claim in claims_doc["claims"]:
        topic = topic_of(claim["id"])
        if topic not in described:
            raise ValueError(f"claims.yaml: topics: no entry for {topic!r} (claim {claim['id']})")
        out.setdefault(topic, []).append(claim)
    return out


def headline_rows(claim_id: str, table: list[dict]) -> list[dict]:
    """The rows a claim's one line speaks for: its main-family rows (one per arm), else its first row."""
    rows = [r for r in table if r["claim"] == claim_id]
    return [r for r in rows if r.get("family") == "main"] or rows[:1]


def claim_outcome(claim_id: str, table: list[dict]) -> str:
    """The claim's verdict: that of its headline rows where they agree, else MIXED; a claim
    without rows is not tested."""
    verdicts = {r["verdict"] for r in headline_rows(claim_id, table)}
    if not verdicts:
        return NOT_TESTED
    return verdicts.pop() if len(verdicts) == 1 else MIXED


def has_interval(r: dict) -> bool:
    return (r["verdict"] not in (STATIC, NOT_TESTED) and r.get("measured") is not None
            and r.get("ci_low") is not None and r.get("ci_high") is not None)


def strength(r: dict) -> float:
    """How clearly a row's effect stands out: its mean in half-widths of its 95% interval
    (unit-free, so that points and percent compare)."""
    half = (r["ci_high"] - r["ci_low"]) / 2
    if half > 0:
        return abs(r["measured"]) / half
    return float("inf") if r["measured"] else 0.0


def strongest_row(rows: list[dict]) -> dict | None:
    measured = [r for r in rows if has_interval(r)]
    return max(measured, key=strength, default=None)


def _counted(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def outcome_text(claims: list[dict], table: list[dict]) -> str:
    """'3 claims: 2 contradicted (aug.overall, aug.cutmix); 1 mixed over its arms (aug.params:
    3 contradicted, 1 inconclusive)'."""
    by_outcome: dict[str, list[str]] = {}
    for claim in claims:
        by_outcome.setdefault(claim_outcome(claim["id"], table), []).append(claim["id"])
    parts = []
    for outcome in (*VERDICTS, STATIC, MIXED):
        ids = by_outcome.get(outcome)
        if not ids:
            continue
        if outcome == MIXED:
            detail = "; ".join(f"{i}: " + ", ".join(f"{n} {v}" for v, n in _verdict_counts(
                headline_rows(i, table)).items()) for i in ids)
            parts.append(f"{len(ids)} mixed over {'its' if len(ids) == 1 else 'their'} arms ({detail})")
        else:
            parts.append(f"{len(ids)} {outcome} ({', '.join(ids)})")
    return f"{_counted(len(claims), 'claim')}: " + "; ".join(parts)


def _verdict_counts(rows: list[dict]) -> dict[str, int]:
    counts = Counter(r["verdict"] for r in rows)
    return {v: counts[v] for v in (*VERDICTS, STATIC) if counts[v]}


def rows_text(rows: list[dict]) -> str | None:
    """The verdicts of every row with an interval (every arm, budget and noise setting)."""
    measured = [r for r in rows if has_interval(r)]
    if not measured:
        return None
    counts = ", ".join(f"{n} {v}" for v, n in _verdict_counts(measured).items())
    return f"{_counted(len(measured), 'row')} with an interval (every arm, budget and setting): {counts}"


def effect_text(r: dict) -> str:
    arm = f"{r['arm']} vs {r['baseline']}: " if r.get("arm") and r.get("baseline") else ""
    metric = f" on {r['metric']}" if r.get("metric") else ""
    return (f"{r['claim']}, {arm}{r['measured']:+.2f} {r.get('unit', '')} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
            f" (95% CI){metric}, **{r['verdict']}**, at {r['setup']}")


def inconclusive_text(rows: list[dict]) -> str | None:
    """What inconclusive means here: the experiment could not decide at its budget and seed
    count; the smallest effects those rows could have detected (their MDE)."""
    blind = [r for r in rows if r["verdict"] == INCONCLUSIVE]
    if not blind:
        return None
    text = (f"{_counted(len(blind), 'row')} inconclusive: at that budget and seed count the interval, corrected for its "
            "family of tests, cannot tell the claim from no effect - the experiment could not decide, which is not "
            "evidence that the technique does nothing")
    by_metric: dict[tuple, list[float]] = {}
    for r in blind:
        if r.get("mde") is not None:
            by_metric.setdefault((r.get("metric", ""), r.get("unit", "")), []).append(r["mde"])
    if by_metric:
        spans = [f"{min(v):.2f}" + (f" to {max(v):.2f}" if len(v) > 1 else "") + f" {unit_}" + (f" on {m}" if m else "")
                 for (m, unit_), v in by_metric.items()]
        text += f"; the smallest effect {'it' if len(blind) == 1 else 'they'} could detect (MDE): {'; '.join(spans)}"
    return text


def topic_section(topic: str, about: dict, claims: list[dict], table: list[dict]) -> list[str]:
    rows = [r for r in table if topic_of(r["claim"]) == topic]
    lines = [f"### {topic}: {about['title']}", "", f"What it tests: {about['about']}.", "",
             f"- {outcome_text(claims, table)}."]
    for extra in (rows_text(rows), inconclusive_text(rows)):
        if extra:
            lines.append(f"- {extra}.")
    strongest = strongest_row(rows)
    lines.append(f"- Strongest measured effect (largest mean in half-widths of its interval): {effect_text(strongest)}."
                 if strongest else "- No row of this topic has a measured interval.")
    return [*lines, ""]


def topic_sections(claims_doc: dict, table: list[dict]) -> list[str]:
    """## What each topic shows: one section per topic of claims.yaml, rendered from the rows."""
    described = claims_doc.get("topics") or {}
    lines = ["## What each topic shows", "",
             "Rendered from the rows below. A claim's verdict is that of its rows at the spec's setup (one per arm); "
             "a claim whose arms disagree is counted as mixed.", ""]
    for topic, claims in claims_by_topic(claims_doc).items():
        lines += topic_section(topic, described[topic], claims, table)
    return lines
