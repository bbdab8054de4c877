"""The search space of `skillpack tune`: a YAML file mapping dotted params keys (the keys of
recipes.yaml and `dvc exp run -S`) to distributions,

    train.optimizer.lr: {float: [0.02, 0.8], log: true}
    train.augment.crop_padding: {int: [0, 4]}
    train.batch_size: {choice: [128, 256]}

read and checked here (an unknown params key or a malformed distribution is a one-line error
naming the file and the key), and turned into Optuna suggestions and params overrides."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from skillpack.config import Params, ParamsError, load_params, read_yaml

KINDS = ("float", "int", "choice")


@dataclass(frozen=True)
class Distribution:
    kind: str                      # float | int | choice
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple = ()

    def holds(self, value) -> bool:
        if self.kind == "choice":
            return value in self.choices
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"{list(self.choices)}" if self.kind == "choice" else f"[{self.low}, {self.high}]"


def _number_pair(where: str, kind: str, bounds) -> tuple:
    number = int if kind == "int" else (int, float)
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, number) and not isinstance(b, bool)
                                                                  for b in bounds)):
        raise ParamsError(f"{where}: {kind} takes [low, high], two {'integers' if kind == 'int' else 'numbers'}; "
                          f"got {bounds!r}")
    if bounds[0] >= bounds[1]:
        raise ParamsError(f"{where}: low {bounds[0]} is not below high {bounds[1]}")
    return tuple(bounds)


def parse_distribution(where: str, raw) -> Distribution:
    """One key's distribution; `where` (file: key) starts every error."""
    if not isinstance(raw, dict) or len(set(raw) & set(KINDS)) != 1:
        raise ParamsError(f"{where}: expected one of {{float: [low, high]}}, {{int: [low, high]}}, "
                          f"{{choice: [...]}} (optionally log: true); got {raw!r}")
    (kind,) = set(raw) & set(KINDS)
    extra = set(raw) - {kind, "log"}
    if extra or ("log" in raw and (kind == "choice" or not isinstance(raw["log"], bool))):
        raise ParamsError(f"{where}: unexpected {sorted(extra) or ['log']} for a {kind} distribution "
                          f"(log: true|false goes with float and int only)")
    if kind == "choice":
        if not isinstance(raw[kind], list) or len(raw[kind]) < 2:
            raise ParamsError(f"{where}: choice takes a list of at least two values; got {raw[kind]!r}")
        return Distribution("choice", choices=tuple(raw[kind]))
    low, high = _number_pair(where, kind, raw[kind])
    log = raw.get("log", False)
    if log and low <= 0:
        raise ParamsError(f"{where}: log: true needs low > 0; got {low}")
    return Distribution(kind, float(low) if kind == "float" else low, float(high) if kind == "float" else high, log)


def load_space(path: str | Path, params: Params) -> dict[str, Distribution]:
    """The search space at `path`, each key checked against `params` (params.yaml as loaded)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: search-space file not found (params tune.space)")
    raw = read_yaml(path)
    if not isinstance(raw, dict) or not raw:
        raise ParamsError(f"{path}: expected a mapping of dotted params keys to distributions")
    known = params.flat()
    space = {}
    for key, body in raw.items():
        if key not in known:
            near = sorted(k for k in known if k.rsplit(".", 1)[-1] == str(key).rsplit(".", 1)[-1])[:3]
            raise ParamsError(f"{path}: {key}: not a params key" + (f" (did you mean {', '.join(near)}?)" if near else ""))
        space[key] = parse_distribution(f"{path}: {key}", body)
    return space


def default_point(space: dict[str, Distribution], params: Params, path: str | Path) -> dict:
    """params' own values of the searched keys (the first trial): each must lie in its range."""
    flat = params.flat()
    point = {}
    for key, dist in space.items():
        value = flat[key]
        if not dist.holds(value):
            raise ParamsError(f"{path}: {key}: the params value {value!r} is outside {dist.describe()}; "
                              f"widen it so that the current recipe is the first trial")
        point[key] = next(c for c in dist.choices if c == value) if dist.kind == "choice" else value
    return point


def suggest(trial, space: dict[str, Distribution]) -> dict:
    """A trial's values (Optuna's suggest_* calls; an enqueued trial gets its fixed values)."""
    values = {}
    for key, dist in space.items():
        if dist.kind == "float":
            values[key] = trial.suggest_float(key, dist.low, dist.high, log=dist.log)
        elif dist.kind == "int":
            values[key] = trial.suggest_int(key, dist.low, dist.high, log=dist.log)
        else:
            values[key] = trial.suggest_categorical(key, list(dist.choices))
    return values


def as_overrides(values: dict) -> list[str]:
    """`key=value` strings (YAML flow values), the syntax of load_params and `dvc exp run -S`."""
    return [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
            for key, value in values.items()]


def trial_params(params_path: str | Path, overrides: list[str] | tuple[str, ...], values: dict) -> Params:
    """params.yaml + the run's overrides + a trial's values, validated as any params are."""
    return load_params(params_path, [*overrides, *as_overrides(values)])
