"""Named recipes (recipes.yaml): dotted overrides applied on top of params.yaml."""
from __future__ import annotations

from pathlib import Path

import yaml

from skillpack.config import Params, ParamsError, load_params, read_yaml


def recipe_overrides(name: str, path: str | Path = "recipes.yaml") -> list[str]:
    recipes = read_yaml(path)
    if name not in recipes:
        raise ParamsError(f"{path}: no recipe {name!r}; known: {sorted(recipes)}")
    return [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
            for key, value in (recipes[name] or {}).items()]


def load_recipe(name: str, extra: list[str] | tuple[str, ...] = (), params_path: str | Path = "params.yaml",
                recipes_path: str | Path = "recipes.yaml") -> Params:
    return load_params(params_path, [*recipe_overrides(name, recipes_path), *extra])
