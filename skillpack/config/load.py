"""Reading the project's YAML files: params.yaml, whole (load_params) or one section
(load_section), with overrides; and any other YAML of the project (read_yaml)."""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from skillpack.config.overrides import ParamsError, apply_overrides, problems
from skillpack.config.sections import Params


def load_section(path: str | Path, name: str, overrides: list[str] | tuple[str, ...] = ()) -> BaseModel:
    """One section of params.yaml, validated alone (with overrides under it, `serve.port=9000`):
    for a process that reads nothing else - the inference service, which so never imports
    torch to check a training model's name."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (run from the repository root)")
    raw = apply_overrides(read_yaml(path), overrides)
    field = Params.model_fields[name]
    try:
        return field.annotation.model_validate(raw.get(field.alias or name, {}))
    except ValidationError as err:
        raise ParamsError(f"{path}: invalid params - {name}.{problems(err)}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last one silently, so a second `epochs:` further down would win unseen)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (line {seen[key]} and line {line})", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict:
    """A YAML file of the project's (params, recipes, claims, ablation specs) as a dict; a syntax
    error or a key given twice is a ParamsError of one line: file:line:column: the problem."""
    path = Path(path)
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(str(part) for part in (err.context, err.problem) if part)
        raise ParamsError(f"{where}: {problem}") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None


_PARSED: dict[tuple, dict] = {}


def _read_params_file(path: Path) -> dict:
    """params.yaml parsed, a fresh copy per call; the parse is cached per (path, mtime, size):
    an ablation builds hundreds of arms' params from one file, and PyYAML parses ~50 ms of it."""
    import copy

    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _PARSED:
        _PARSED.clear()
        _PARSED[key] = read_yaml(path)
    return copy.deepcopy(_PARSED[key])


def load_params(path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (run from the repository root)")
    raw = apply_overrides(_read_params_file(path), overrides)
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(f"{path}: invalid params - {problems(err)}") from None
