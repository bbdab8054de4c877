"""The ablation engine: the spec of arms x seeds of train + evaluate, each run's params, and the
store of their results (runs execute in skillpack.evidence.runs; statistics in .comparisons).

A spec (ablations/*.yaml) names a baseline, data regimes, arms (params overrides + the claim
ids they test + a regime) and a cumulative chain. Each (arm, seed) run is a pure function of
(config, seed, data), stored as JSON under a key of those hashes: an interrupted ablation
resumes and a finished run is never recomputed. An arm may start from another arm's model of
the same seed (`start:`, pruned or not) and distil from a teacher trained per seed: those runs'
keys are part of its own, their models cached beside the results (ResultStore.model_path).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from skillpack import config
from skillpack.config import Params, read_yaml
from skillpack.evidence.spec_options import StartOption, TeacherOption, parse_option
from skillpack.io import write_json

# ------------------------------------------------------------------ spec

@dataclass
class Arm:
    name: str
    overrides: dict
    claims: list[str] = field(default_factory=list)
    regime: str = "standard"
    baseline: str = "baseline"  # the arm it is compared with (same regime)
    variant: dict | None = None  # a budget-curve or transfer copy: {"of": arm, "axis": epochs|images|dataset, "value"}
    start: dict | None = None    # StartOption.as_dict(): trained further from another arm's model of the same seed
    family: str | None = None    # its tests' family (Holm): main, curves, transfer by default; an arm may name its own
    seeds: int | None = None     # how many seeds it runs: the spec's (or variant_seeds for a copy) unless given


@dataclass
class Spec:
    name: str
    seeds: list[int]      # every comparison runs on these, fixed before any run (no seeds are added later)
    regimes: dict[str, dict]
    base: dict            # overrides every run shares (budget, recipe)
    arms: list[Arm]       # baselines first (one per regime), then the arms, then their budget / transfer copies
    cumulative: list[Arm]
    teachers: dict[str, dict]  # trained once (the flow's train-teacher task); a run names one as "teacher:<name>"
    profile: str = "cpu"
    variant_seeds: int | None = None  # budget-curve and transfer copies run on the first this-many seeds
    max_seeds: int | None = None      # a cap on every arm's count (a profile's: quick runs 2 seeds an arm)
    tuned: list[dict] = field(default_factory=list)  # comparisons of each side's best arm by validation accuracy
    resample: bool = True  # each seed draws its own training subset (the intervals cover the data draw too)
    curves: dict = field(default_factory=dict)
    transfer: dict = field(default_factory=dict)
    priorities: dict = field(default_factory=dict)  # {first: [augmentation arms], others: [other techniques]}
    seed_teachers: dict[str, dict] = field(default_factory=dict)  # per_seed: true - trained within each run
    params_path: str | Path = "params.yaml"  # the params file every run's params start from (run_params)

    def arm(self, name: str) -> Arm:
        for arm in self.arms + self.cumulative:
            if arm.name == name:
                return arm
        raise KeyError(f"no arm {name!r} in spec {self.name}")

    def arm_seeds(self, arm: Arm) -> list[int]:
        """The seeds `arm` is compared on: its own count, else variant_seeds for a budget-curve
        or transfer copy, else the spec's seeds; a count above the spec's continues its integers."""
        count = arm.seeds or (self.variant_seeds if arm.variant else None) or len(self.seeds)
        count = min(count, self.max_seeds or count)
        extra = [max(self.seeds) + 1 + i for i in range(max(0, count - len(self.seeds)))]
        return (list(self.seeds) + extra)[:count]

    def planned_runs(self) -> list[tuple[str, int]]:
        """Every (arm, seed): each arm on its seeds, its baseline and start on those too."""
        needed: dict[str, set[int]] = {}
        by_name = {a.name: a for a in self.arms + self.cumulative}
        for arm in self.arms + self.cumulative:
            seeds = set(self.arm_seeds(arm))
            for name in (arm.name, arm.baseline, (arm.start or {}).get("from")):
                if name in by_name and not (name == arm.name and name.startswith("baseline")):
                    needed.setdefault(name, set()).update(seeds)
        # a baseline runs the seeds of the arms compared with it (its own where none is)
        return [(name, s) for name, arm in by_name.items()
                for s in sorted(needed.get(name) or self.arm_seeds(arm))]


PROFILES = ("quick", "cpu", "gpu")  # cpu: the spec's own body; quick / gpu: its `profiles:` overlays


def _profile_overlay(raw: dict, profile: str) -> dict:
    if profile not in PROFILES:
        raise config.ParamsError(f"profile {profile!r}: expected one of {', '.join(PROFILES)}")
    if profile == "cpu":
        return {}
    profiles = raw.get("profiles", {}) or {}
    if profile == "quick" and "quick" in raw:  # a spec written before profiles: (tests' tiny specs)
        return raw["quick"] or {}
    return profiles.get(profile, {}) or {}


def load_spec(path: str | Path, quick: bool = False, profile: str | None = None,
              params_path: str | Path = "params.yaml") -> Spec:
    """The spec at `path` under `profile` (quick: CI, minutes; cpu: the default ablation; gpu:
    full data and article-length budgets), its runs' params read from `params_path`. A profile
    overlays seeds, variant_seeds, base, regimes, curves, transfer and may keep only some arms."""
    raw = read_yaml(path)
    _check_keys(raw, path)
    profile = profile or ("quick" if quick else "cpu")
    overlay = _profile_overlay(raw, profile)

    def arms(items, default_baseline):
        return [Arm(name=a["name"], overrides=a.get("overrides", {}) or {}, claims=a.get("claims", []) or [],
                    regime=a.get("regime", "standard"), baseline=a.get("baseline", default_baseline),
                    family=a.get("family"), seeds=a.get("seeds"),
                    start=parse_option(StartOption, a["start"], f"{path}: arm {a['name']}: start").as_dict()
                    if a.get("start") is not None else None) for a in items]

    teachers = {name: parse_option(TeacherOption, body or {}, f"{path}: teachers.{name}")
                for name, body in (raw.get("teachers") or {}).items()}

    regimes = {name: {**(body or {}), **(overlay.get("regimes", {}).get(name, {}) or {})}
               for name, body in raw["regimes"].items()}
    chain = arms(raw.get("cumulative", []), "")
    for previous, arm in zip(chain, chain[1:]):  # each step of the chain is compared with the one before
        arm.baseline = arm.baseline or previous.name
        arm.overrides = {**previous.overrides, **arm.overrides}
    spec = Spec(name=raw["name"], seeds=overlay.get("seeds", raw["seeds"]), regimes=regimes,
                base={**raw.get("base", {}), **overlay.get("base", {})},
                arms=arms(raw["arms"], "baseline"), cumulative=chain,
                teachers={n: raw["teachers"][n] for n, t in teachers.items() if not t.per_seed},
                seed_teachers={n: {"overrides": t.overrides} for n, t in teachers.items() if t.per_seed},
                profile=profile,
                variant_seeds=overlay.get("variant_seeds", raw.get("variant_seeds")),
                max_seeds=overlay.get("max_seeds", raw.get("max_seeds")),
                tuned=raw.get("tuned") or [],
                resample=bool(raw.get("resample", True)),
                curves=overlay.get("curves", raw.get("curves")) or {},
                transfer=overlay.get("transfer", raw.get("transfer")) or {},
                priorities=raw.get("priorities") or {}, params_path=params_path)
    if overlay.get("arms"):
        _keep_arms(spec, overlay["arms"])
    try:
        add_variants(spec)
    except config.ParamsError as err:
        raise config.ParamsError(f"{path}: {err}") from None
    validate_spec(spec, path)
    return spec


SPEC_KEYS = {"name", "seeds", "variant_seeds", "max_seeds", "resample", "base", "regimes", "teachers", "arms", "tuned",
             "cumulative", "curves", "transfer", "priorities", "profiles", "quick"}


def _check_keys(raw: dict, path: str | Path) -> None:
    for key in sorted(set(raw) - SPEC_KEYS):
        raise config.ParamsError(f"{path}: {key}: unknown key (a spec has {', '.join(sorted(SPEC_KEYS))})")


def _keep_arms(spec: Spec, names: list[str]) -> None:
    """Keep the listed arms, the arms they are compared with and the arms they start from (and
    the baseline); in place."""
    keep = set(names)
    by_name = {a.name: a for a in spec.arms}
    todo = list(keep)
    while todo:
        arm = by_name.get(todo.pop())
        needed = [arm.baseline] + ([arm.start["from"]] if arm.start else []) if arm else []
        todo += [name for name in needed if name not in keep]
        keep.update(needed)
    spec.arms = [a for a in spec.arms if a.name in keep or a.name == "baseline"]
    spec.cumulative = [a for a in spec.cumulative if a.name in keep]
    spec.tuned = [t for t in spec.tuned if set(t["arms"]) | set(t["baseline"]) <= keep]


# ------------------------------------------------------------------ budget curves and transfer

EPOCH_VALUED = ("step_epochs", "milestones")  # schedule keys that scale with the epoch budget


def _epoch_budget(spec: Spec, arm: Arm, epochs: int) -> dict:
    """Overrides that train `arm` for `epochs` epochs, its step schedule stretched alike (a
    step at 3 of 6 epochs is a step at 9 of 18); warm-up stays as many epochs (the claim's)."""
    train = run_params(spec, arm, spec.seeds[0]).train
    factor = epochs / train.epochs
    return {"train.epochs": epochs,
            "train.schedule.step_epochs": max(1, round(train.schedule.step_epochs * factor)),
            "train.schedule.milestones": [max(1, round(m * factor)) for m in train.schedule.milestones]}


def _variant(spec: Spec, arm: Arm, axis: str, value) -> Arm:
    """A copy of `arm` (and, recursively, of its baseline) at another budget or dataset."""
    if arm.start:
        raise config.ParamsError(f"arm {arm.name} starts from another arm's model: it has no budget curve or "
                                 f"transfer copy (leave it out of curves.arms and transfer.arms)")
    suffix = {"epochs": f"@{value}ep", "images": f"@{value}img", "dataset": f"@{value}"}[axis]
    name = arm.name + suffix
    known = {a.name: a for a in spec.arms}
    if name in known:
        return known[name]
    regime = arm.regime
    overrides = dict(arm.overrides)
    if axis == "epochs":
        overrides.update(_epoch_budget(spec, arm, value))
    elif axis == "images":
        regime = f"{arm.regime}@{value}img"
        spec.regimes.setdefault(regime, {**spec.regimes[arm.regime], "max_train": value})
    else:
        regime = value
        overrides.update(spec.transfer.get("overrides") or {})  # the dataset's own policy (no flip on digits)
    baseline = arm.baseline
    if not arm.name.startswith("baseline"):
        baseline = _variant(spec, spec.arm(arm.baseline), axis, value).name
    copy = Arm(name=name, overrides=overrides, claims=list(arm.claims), regime=regime, baseline=baseline,
               variant={"of": arm.name, "axis": axis, "value": value})
    spec.arms.append(copy)
    return copy


def curve_budgets(spec: Spec, name: str) -> dict[str, list]:
    """An arm's curve axes: the spec's shared `epochs` factors and `images` sizes, or the arm's
    own under `curves.axes: {arm: {epochs: [...], images: [...]}}` where the shared ones would
    show nothing or not fit the budget (an empty list: no curve on that axis)."""
    own = (spec.curves.get("axes") or {}).get(name) or {}
    return {axis: list(own.get(axis, spec.curves.get(axis, [])) or []) for axis in ("epochs", "images")}


def add_variants(spec: Spec) -> None:
    """The budget curves (`curves: {arms, epochs: [factors], images: [sizes], axes}`: each arm
    and its baseline at every epoch budget and training-set size) and the transfer copies
    (`transfer: {regime, arms}`: the same arms on another dataset), appended to spec.arms."""
    unknown = set(spec.curves.get("axes") or {}) - set(spec.curves.get("arms", []))
    if unknown:
        raise config.ParamsError(f"curves.axes: {', '.join(sorted(unknown))} not in curves.arms")
    for name in spec.curves.get("arms", []):
        arm = spec.arm(name)
        budgets = curve_budgets(spec, name)
        base_epochs = run_params(spec, arm, spec.seeds[0]).train.epochs
        for factor in budgets["epochs"]:
            if factor != 1:
                _variant(spec, arm, "epochs", int(round(base_epochs * factor)))
        for size in budgets["images"]:
            if size != spec.regimes[arm.regime].get("max_train"):
                _variant(spec, arm, "images", int(size))
    for name in spec.transfer.get("arms", []):
        _variant(spec, spec.arm(name), "dataset", spec.transfer["regime"])


def curve_points(spec: Spec, arm_name: str, axis: str) -> list[tuple]:
    """(budget, arm name) along one axis of an arm's curve, its own budget included, sorted."""
    own = spec.arm(arm_name)
    if axis == "epochs":
        here = run_params(spec, own, spec.seeds[0]).train.epochs
    else:
        here = spec.regimes[own.regime].get("max_train")
    points = [(here, arm_name)] + [(a.variant["value"], a.name) for a in spec.arms
                                   if a.variant and a.variant["of"] == arm_name and a.variant["axis"] == axis]
    return sorted(points)


def validate_spec(spec: Spec, path: str | Path) -> None:
    """Every regime's data options and every arm's params, before any run starts: one
    ParamsError naming the spec file and the regime or arm."""
    for name, body in spec.regimes.items():
        config.regime_options(f"{path}: regimes.{name}", body)
    for arm in spec.arms + spec.cumulative:
        if arm.regime not in spec.regimes:
            raise config.ParamsError(f"{path}: arm {arm.name}: unknown regime {arm.regime!r}; "
                                     f"the spec has {', '.join(spec.regimes)}")
        try:
            params = run_params(spec, arm, spec.seeds[0])
        except config.ParamsError as err:
            raise config.ParamsError(f"{path}: arm {arm.name}: {err}") from None
        known = [*spec.teachers, *spec.seed_teachers]
        if teacher_name(params) and teacher_name(params) not in known:
            raise config.ParamsError(f"{path}: arm {arm.name}: train.loss.distill.teacher "
                                     f"{params.train.loss.distill.teacher!r}: no such teacher under teachers: "
                                     f"({', '.join(known) or 'none'})")
        if arm.start:
            _check_start(spec, arm, path)


def _check_start(spec: Spec, arm: Arm, path: str | Path) -> None:
    """A start names an arm of the spec, on the same dataset, and no chain of starts loops."""
    seen = [arm.name]
    here = arm
    while here.start:
        name = here.start["from"]
        where = f"{path}: arm {here.name}: start.from"
        try:
            origin = spec.arm(name)
        except KeyError:
            raise config.ParamsError(f"{where}: no arm {name!r} in the spec") from None
        if name in seen:
            raise config.ParamsError(f"{where}: {' -> '.join(seen + [name])} starts from itself")
        if spec.regimes[origin.regime].get("dataset") != spec.regimes[here.regime].get("dataset"):
            raise config.ParamsError(f"{where}: {name} trains on another dataset (regime {origin.regime}, not "
                                     f"{here.regime}'s)")
        seen.append(name)
        here = origin


def run_params(spec: Spec, arm: Arm, seed: int, extra: dict | None = None) -> Params:
    """The spec's params file (Spec.params_path) + its base + the regime's + the arm's overrides
    (+ `extra`, dotted overrides of every run: benchmarks/gpu.py's train.amp) + the seed, read by
    the stages' own loader."""
    items = {**spec.base, **{k: v for k, v in spec.regimes[arm.regime].items() if "." in k}, **arm.overrides,
             **(extra or {})}
    return config.load_params(spec.params_path, [f"{k}={json.dumps(v)}" for k, v in items.items()] + [f"seed={seed}"])


def regime_options(spec: Spec, regime: str) -> dict:
    """Non-params keys of a regime as the spec gives them (max_train, imbalance_ratio, ...),
    validated; the run keys hash exactly these."""
    config.regime_options(f"regimes.{regime}", spec.regimes[regime])
    return {k: v for k, v in spec.regimes[regime].items() if "." not in k}


# ------------------------------------------------------------------ persisted results

class ResultStore:
    """One JSON per finished (arm, seed, config hash, data hash); written atomically."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self.path(key)
        return json.loads(path.read_text()) if path.is_file() else None

    def put(self, key: str, result: dict) -> None:
        write_json(self.path(key), result)

    def model_path(self, key: str) -> Path:
        """The model file of the run `key` trains, where a run that starts from it (an arm's
        start:, a per-seed teacher) finds it."""
        return self.root / "models" / f"{key}.pt"


def run_key(seed: int, params: Params, data_hash: str, options: dict, sources: dict | None = None) -> str:
    """Identical configurations share a result whatever the arm is called (the cumulative
    chain's first steps are one-at-a-time arms too). `sources` (run_sources): the keys of the
    runs whose models this run starts from or distils from; a run without any hashes exactly as
    before they existed."""
    from skillpack.train.engine import config_hash

    # a run reads train.* and the seed (skillpack.train.runs.train_and_evaluate) and the prepared data
    # (data_hash, options): other sections - cleaning, export, serving - never change its result.
    # RESULT_VERSION: what a run records and how it draws its data (bump when either changes).
    fixes = engine_fixes(params.train)
    parts = ((params.train.result_dump(), options, data_hash, RESULT_VERSION) + ((sources,) if sources else ())
             + ((fixes,) if fixes else ()))
    return f"s{seed}-{config_hash(*parts)}"


# Engine fixes that changed what some configurations train, each with the configurations it
# changed: a run's key names the fixes that apply to its config, so the store recomputes exactly
# the runs a fix made stale and keeps every other (bumping RESULT_VERSION would recompute all).
ENGINE_FIXES = {
    # a step decay after a linear warm-up came warmup_epochs late (SequentialLR restarted its count)
    "step_decay_after_warmup_on_time": lambda train: train.schedule.name == "step" and train.schedule.warmup_epochs > 0,
    # ArcFace's target logit cos(theta + m) rose again past theta = pi - m; now it falls on
    "arcface_margin_monotonic": lambda train: train.head.name == "arcface",
}


def engine_fixes(train) -> list[str]:
    """The ENGINE_FIXES that change a run of this train config (empty for most: their keys stay)."""
    return [name for name, applies in ENGINE_FIXES.items() if applies(train)]


TEACHER_PREFIX = "teacher:"  # train.loss.distill.teacher of an arm: "teacher:<name of the spec's teachers:>"


def teacher_name(params: Params) -> str | None:
    """The spec teacher a run distils from, or None."""
    reference = params.train.loss.distill.teacher
    return reference.removeprefix(TEACHER_PREFIX) if reference and reference.startswith(TEACHER_PREFIX) else None


def teacher_arm(spec: Spec, name: str, regime: str) -> Arm:
    """A per-seed teacher as the run it is: its overrides on the student's regime (its data draw)."""
    return Arm(name=f"{TEACHER_PREFIX}{name}", overrides=spec.seed_teachers[name]["overrides"], regime=regime)


def run_sources(spec: Spec, arm: Arm, seed: int, data_hash: str, extra: dict | None = None) -> dict:
    """The runs whose models `arm`'s run at `seed` starts from (start:) or distils from (a
    per-seed teacher), by their keys: a change to any of them changes this run's key. {} for an
    arm that trains from scratch with no teacher or a teacher trained once."""
    sources = {}
    if arm.start:
        origin = spec.arm(arm.start["from"])
        sources["start"] = {**arm.start, "from": arm_key(spec, origin, seed, data_hash, extra)}
    teacher = teacher_name(run_params(spec, arm, seed, extra))
    if teacher in spec.seed_teachers:
        sources["teacher"] = arm_key(spec, teacher_arm(spec, teacher, arm.regime), seed, data_hash, extra)
    return sources


def arm_key(spec: Spec, arm: Arm, seed: int, data_hash: str, extra: dict | None = None) -> str:
    """The result-store key of `arm`'s run at `seed` (run_key with the arm's params, regime and sources)."""
    return run_key(seed, run_params(spec, arm, seed, extra), data_hash, regime_options(spec, arm.regime),
                   run_sources(spec, arm, seed, data_hash, extra))


RESULT_VERSION = 2  # 2: the training subset drawn per seed; val curve, step losses, retrieval figures
