"""Named recipes (recipes.yaml): dotted overrides applied on top of params.yaml."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from skillpack.config import Params, ParamsError, load_params, read_yaml
from skillpack.io import write_text


def recipe_overrides(name: str, path: str | Path = "recipes.yaml") -> list[str]:
    recipes = read_yaml(path)
    if name not in recipes:
        raise ParamsError(f"{path}: no recipe {name!r}; known: {sorted(recipes)}")
    return [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
            for key, value in (recipes[name] or {}).items()]


def load_recipe(name: str, extra: list[str] | tuple[str, ...] = (), params_path: str | Path = "params.yaml",
                recipes_path: str | Path = "recipes.yaml") -> Params:
    return load_params(params_path, [*recipe_overrides(name, recipes_path), *extra])


def dvc_command(overrides: list[str]) -> str:
    """`dvc exp run -S key=value ...`, each value quoted for a POSIX shell where it needs it."""
    return " ".join(["dvc exp run", *(f"-S {shlex.quote(item)}" for item in overrides)])


def _recipe_lines(lines: list[str], name: str, mark: str) -> tuple[int, int] | None:
    """Where recipe `name` sits in recipes.yaml's lines: its key line (and the `mark` comment lines
    right above it) to the next line that starts a top-level key or comment."""
    key = next((i for i, line in enumerate(lines) if re.match(rf"{re.escape(name)}\s*:(\s|$)", line)), None)
    if key is None:
        return None
    start = key
    while start > 0 and lines[start - 1].startswith(mark):
        start -= 1
    end = next((i for i in range(key + 1, len(lines)) if lines[i].strip() and not lines[i][0].isspace()), len(lines))
    return start, end


def write_recipe(name: str, values: dict, comments: list[str], path: str | Path = "recipes.yaml",
                 mark: str = "# recipe:") -> None:
    """Add recipe `name` (dotted key -> value) to recipes.yaml, or replace the one of that name,
    with `comments` above it as `mark` lines; every other line of the file, comments included,
    stays as it is. Written atomically, after the new text has been read back whole."""
    path = Path(path)
    text = path.read_text() if path.is_file() else ""
    block = "".join(f"{mark} {line}\n" for line in comments) + \
        yaml.safe_dump({name: values}, sort_keys=False, default_flow_style=False, width=1000)
    lines = text.splitlines(keepends=True)
    found = _recipe_lines(lines, name, mark)
    if found is None:
        new = (text.rstrip("\n") + "\n" if text.strip() else "") + block
    else:
        new = "".join(lines[:found[0]]) + block + "".join(lines[found[1]:])
    others = {k: v for k, v in (yaml.safe_load(text) or {}).items() if k != name}
    if yaml.safe_load(new) != {**others, name: values}:
        raise ParamsError(f"{path}: recipe {name!r} could not be written without changing the others")
    write_text(path, new)
