"""Dotted keys: overrides such as `train.optimizer.lr=0.05` (the syntax of `dvc exp run -S`),
params sections flattened to dotted keys, and the one error a params problem raises."""
from __future__ import annotations

import json

import yaml
from pydantic import BaseModel, ValidationError

from skillpack.io import UserError


class ParamsError(UserError, ValueError):
    pass


def problems(err: ValidationError) -> str:
    """A validation error as `dotted.key: message; ...`."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                     for e in err.errors())


def dotted_items(tree: dict, prefix: str = ""):
    """(dotted key, value) for every leaf of a nested dict."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from dotted_items(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Set dotted keys in a raw params dict: ["train.lr=0.05", "data.max_train=2000"]."""
    for item in overrides:
        if "=" not in item:
            raise ParamsError(f"override {item!r}: expected key=value, e.g. train.epochs=3")
        key, value = item.split("=", 1)
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParamsError(f"override {item!r}: {part!r} is not a group")
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ParamsError(f"override {item!r}: the value is not valid YAML ({err.problem})") from None
    return raw


def with_overrides(section: BaseModel, overrides: dict) -> BaseModel:
    """A validated copy of a params section with dotted overrides ({"optimizer.lr": 0.01})."""
    raw = section.model_dump(by_alias=True)
    apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    try:
        return type(section).model_validate(raw)
    except ValidationError as err:
        raise ParamsError(f"{type(section).__name__} with {overrides}: {problems(err)}") from None


def flatten(section: BaseModel, prefix: str) -> dict[str, object]:
    """One params section as dotted keys under `prefix` (what a stage logs to MLflow: the
    sections it reads, passed one by one so the DAG test sees which)."""
    return dict(dotted_items(section.model_dump(by_alias=True), f"{prefix}."))
