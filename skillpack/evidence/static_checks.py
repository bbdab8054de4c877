"""The static checks of claims.yaml (`static: {check: <name>, ...}`): properties of the article's
claims measured without an experiment - a parameter count, a schedule's shape, a weight ratio,
a value of params.yaml, the alerting of the serve_load benchmark. Each returns what it measured,
what the article claims, a statement and its setup; skillpack.evidence.claims.static_row makes
the row, reported and not judged.
"""
from __future__ import annotations

from pathlib import Path


def parameter_count(claim: dict, check: dict, **_) -> dict:
    import timm

    def millions(name: str) -> float:
        return sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters()) / 1e6

    measured = round(millions(check["model"]), 2)
    claimed = float(claim["figure"][check["figure"]])
    also = {name: round(millions(name), 2) for name in check.get("also", [])}
    text = (f"{measured:.2f}M parameters (timm {check['model']}, 1000 classes), claimed {claimed:g}M "
            f"({measured / claimed - 1:+.1%})" + "".join(f"; {n}: {m:.2f}M" for n, m in also.items()))
    return {"measured": measured, "claimed": claimed, "statement": text,
            "setup": f"timm {check['model']}, 1000-class head, parameters in millions"}


def focal_weight_ratio(claim: dict, check: dict, **_) -> dict:
    """The focal factor (1 - p)^gamma of a hard sample (p_hard) over an easy one (p_easy)."""
    gamma, claimed = float(claim["figure"]["gamma"]), float(claim["figure"]["weight_ratio"])
    ratios = {f"p_easy={e},p_hard={h}": round(((1 - h) / (1 - e)) ** gamma, 2) for e, h in check["probability_pairs"]}
    needed = claimed ** (1 / gamma)
    text = (f"weight ratio ((1-p_hard)/(1-p_easy))^{gamma:g}: "
            + ", ".join(f"{r:g} for {k.replace(',', ' vs ')}" for k, r in ratios.items())
            + f"; it is {claimed:g} only when 1-p_hard = {needed:g} x (1-p_easy), so '{claimed:g}-fold' is not a "
              f"property of gamma={gamma:g} alone")
    return {"measured": ratios, "claimed": claimed, "statement": text,
            "setup": f"the focal factor (1-p)^gamma, gamma={gamma:g}, at the probability pairs of claims.yaml"}


def onecycle_shape(claim: dict, check: dict, **_) -> dict:
    """The learning rate of skillpack's onecycle schedule, step by step."""
    import numpy as np
    import torch

    from skillpack.config import OptimizerParams, ScheduleParams
    from skillpack.train.optim import build_optimizer, build_scheduler

    max_lr, final_lr = float(claim["figure"]["max_lr"]), float(claim["figure"]["final_lr"])
    div = 25.0
    cfg = ScheduleParams(name="onecycle", warmup_epochs=0, onecycle_pct_start=check["pct_start"],
                         onecycle_div_factor=div, onecycle_final_div_factor=max_lr / div / final_lr)
    opt = build_optimizer(torch.nn.Linear(1, 1), OptimizerParams(lr=max_lr))
    steps = check["epochs"] * check["steps_per_epoch"]
    sched = build_scheduler(opt, cfg, max_lr, epochs=check["epochs"], steps_per_epoch=check["steps_per_epoch"])
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    peak = int(np.argmax(lrs))
    measured = {"max_lr": max(lrs), "peak_step": peak, "final_lr": lrs[-1], "steps": steps}
    text = (f"peaks at {max(lrs):.3g} at step {peak} of {steps} ({peak / steps:.0%} of the run) and ends at "
            f"{lrs[-1]:.3g}; claimed a peak of {max_lr:g} in the first half and an end at {final_lr:g}")
    return {"measured": measured, "claimed": {"max_lr": max_lr, "final_lr": final_lr}, "statement": text,
            "setup": f"torch OneCycleLR through skillpack's schedule factory (pct_start {check['pct_start']}, "
                     f"{check['epochs']} epochs x {check['steps_per_epoch']} steps); shape only"}


def params_value(claim: dict, check: dict, params_path: str | Path = "params.yaml", **_) -> dict:
    from skillpack.config import load_params

    value = load_params(params_path)
    for part in check["key"].split("."):
        value = getattr(value, part)
    claimed = claim["figure"][check["figure"]]
    return {"measured": value, "claimed": claimed,
            "statement": f"{check['key']} = {value:g} in {Path(params_path).name}, claimed {claimed:g}",
            "setup": f"{check['key']} of {Path(params_path).name}"}


def alerting(claim: dict, check: dict, benchmarks: dict | None = None, **_) -> dict:
    """The alert check of the serve_load benchmark: a real Prometheus scraping the service with
    the rules generated from params monitor:, one threshold set to be breached."""
    found = ((benchmarks or {}).get(check["benchmark"]) or {}).get("alerting")
    setup = (f"`python -m benchmarks.{check['benchmark']}`: Prometheus scraping the service every second, the rules "
             f"of params monitor: with the p95 latency threshold set below reach")
    if not found:
        return {"measured": None, "claimed": None, "setup": setup,
                "statement": f"not measured yet: run `python -m benchmarks.{check['benchmark']}`"}
    fired = found["fired_after_s"]
    text = (f"metrics for accuracy (from /feedback), p95 latency, memory, 5xx rate and drift, with one alert rule "
            f"each: the breached {found['breached_rule']} "
            + (f"fired after {fired:.1f} s" if fired is not None else "did NOT fire")
            + f"; {len(found['quiet_rules'])} rules stayed inactive ({', '.join(found['quiet_rules'])}); promtool: "
            f"{found['promtool_tests']} unit tests (a breach fires, a near miss stays quiet) "
            + ("passed" if found["promtool_passed"] else "FAILED"))
    return {"measured": {k: found[k] for k in ("fired_after_s", "quiet_rules", "promtool_tests", "promtool_passed")},
            "claimed": None, "statement": text, "setup": setup}


STATIC_CHECKS = {"parameter_count": parameter_count, "focal_weight_ratio": focal_weight_ratio,
                 "onecycle_shape": onecycle_shape, "params_value": params_value, "alerting": alerting}
