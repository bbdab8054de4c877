"""What each stage really depends on, read from its code (not a stage itself).

    python -m stages.dag            # print the differences between dvc.yaml and the code
    python -m stages.dag --write    # rewrite the code deps and params of every stage in dvc.yaml

- code: every file of this repository a stage's module imports, directly or through other
  modules, at the top or inside a function (ast), with the packages' __init__ files;
- params: every params key the stage's module reads: attribute chains on `params` (and on
  names bound to a part of it, `cfg = params.train`) resolved against the pydantic models of
  skillpack/config/, so `cfg.optimizer.lr` is `train.optimizer.lr` and a section passed
  whole (`run(params.train)`) is the whole section. A bare `params` handed on, or a method
  called on it, counts as reading everything, so `--check` fails until the code says which.

tests/test_dag.py runs the check: a dvc.yaml that misses a file or a key fails it.
"""
from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL_PACKAGES = ("skillpack", "stages", "flows")
ALL_PARAMS = "*"
DVC_FILES = ("dvc.yaml", "ablations/dvc.yaml")  # stages of both run from the repository root


# ------------------------------------------------------------------ code

def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file of a local module (package -> its __init__.py), or None for third-party ones."""
    if module.split(".")[0] not in LOCAL_PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module an import statement anywhere in `path` names (`from a import b` names a.b
    when b is a module, else a)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if module_file(sub, root) else node.module)
    return found


def with_parents(module: str) -> list[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def code_closure(module: str, root: Path = ROOT) -> set[Path]:
    """Files of every local module `module` imports, transitively (itself included)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        for name in with_parents(todo.pop()):
            path = module_file(name, root)
            if path is None or path in seen:
                continue
            seen.add(path)
            todo.extend(imported_modules(path, root))
    return seen


# ------------------------------------------------------------------ params

def _chain(node: ast.AST) -> tuple[str, list[str]] | None:
    """`a.b.c` -> ("a", ["b", "c"]); None when the chain does not start at a name."""
    attrs = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    return (node.id, attrs[::-1]) if isinstance(node, ast.Name) else None


def resolve_keys(model_cls, attrs: list[str]) -> str:
    """The dotted params key an attribute chain reads: the fields it walks through, stopping
    at the first name that is not a field (a method, or past a leaf)."""
    from pydantic import BaseModel

    key, cls = [], model_cls
    for attr in attrs:
        fields = getattr(cls, "model_fields", {}) if isinstance(cls, type) else {}
        if attr not in fields:
            break
        field = fields[attr]
        key.append(field.alias or attr)
        annotation = field.annotation
        cls = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return ".".join(key)


def params_read(path: Path, root_name: str = "params") -> set[str]:
    """Dotted params keys the code in `path` reads (ALL_PARAMS for a bare `params` passed on)."""
    from skillpack.config import Params

    tree = ast.parse(path.read_text(), str(path))
    aliases = {root_name: []}
    for node in ast.walk(tree):  # cfg = params.train -> cfg is ["train"]
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            chain = _chain(node.value)
            if chain and chain[0] in aliases:
                aliases[node.targets[0].id] = aliases[chain[0]] + chain[1]
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    keys = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Name, ast.Attribute)) or isinstance(parents.get(node), ast.Attribute):
            continue  # only whole chains
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            continue
        chain = _chain(node)
        if chain is None or chain[0] not in aliases:
            continue
        if isinstance(parents.get(node), ast.Assign) and parents[node].value is node and \
                isinstance(parents[node].targets[0], ast.Name) and parents[node].targets[0].id in aliases:
            continue  # the alias binding itself reads nothing yet
        key = resolve_keys(Params, aliases[chain[0]] + chain[1])
        keys.add(key or ALL_PARAMS)
    return keys


def tracked_sections() -> list[str]:
    """params.yaml's top-level keys DVC tracks: all but skillpack.config.UNTRACKED_SECTIONS
    (runtime: how a run executes; registry: how it is recorded)."""
    from skillpack.config import UNTRACKED_SECTIONS, Params

    names = [field.alias or name for name, field in Params.model_fields.items()]
    return [name for name in names if name not in UNTRACKED_SECTIONS]


def minimal_keys(keys: set[str]) -> list[str]:
    """Drop keys covered by a shorter one (train covers train.threads) and keys of the untracked
    sections; reading everything is reading every tracked section."""
    if ALL_PARAMS in keys:
        keys = set(tracked_sections())
    keys = {k for k in keys if k.split(".")[0] in tracked_sections()}
    return sorted(k for k in keys if not any(k.startswith(other + ".") for other in keys if other != k))


# ------------------------------------------------------------------ stages

@dataclass
class StageNeeds:
    code: list[str]     # repository-relative files
    params: list[str]   # dotted keys, or [ALL_PARAMS]


def stage_needs(module: str, root: Path = ROOT) -> StageNeeds:
    files = code_closure(module, root)
    keys: set[str] = set()
    source = module_file(module, root)
    if getattr(__import__(module, fromlist=["_"]), "READS_ALL_PARAMS", False):
        keys.add(ALL_PARAMS)
    keys |= params_read(source)
    return StageNeeds(sorted(str(f.relative_to(root)) for f in files), minimal_keys(keys))


def stage_module(cmd: str) -> str | None:
    """`python -m stages.train` -> "stages.train"; None for commands that run no local module."""
    parts = cmd.split()
    if "-m" in parts and parts[parts.index("-m") + 1].split(".")[0] in LOCAL_PACKAGES:
        return parts[parts.index("-m") + 1]
    return None


def declared(stage_body: dict) -> tuple[set[str], list[str]]:
    """(deps, params) as dvc.yaml states them; a whole params file is ALL_PARAMS."""
    params = []
    for item in stage_body.get("params", []) or []:
        params.extend([ALL_PARAMS] if isinstance(item, dict) else [item])
    return {str(d) for d in stage_body.get("deps", []) or []}, params


def covered(path: str, deps: set[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def problems(dvc_yaml: dict, root: Path = ROOT) -> list[str]:
    """Every code file or params key a stage uses that dvc.yaml does not declare."""
    out = []
    for name, body in dvc_yaml["stages"].items():
        module = stage_module(body["cmd"])
        if module is None:
            continue
        needs = stage_needs(module, root)
        deps, params = declared(body)
        out += [f"{name}: imports {f}, not in deps" for f in needs.code if not covered(f, deps)]
        for key in needs.params:
            if ALL_PARAMS in params:
                continue
            if key == ALL_PARAMS or not any(key == p or key.startswith(p + ".") for p in params):
                out.append(f"{name}: reads params {key!r}, not in params")
    return out


def write(path: Path) -> None:
    """Rewrite each stage's code deps (data deps kept) and params, comments preserved."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 120
    yaml.indent(mapping=2, sequence=4, offset=2)
    doc = yaml.load(path.read_text())
    for body in doc["stages"].values():
        module = stage_module(body["cmd"])
        if module is None:
            continue
        needs = stage_needs(module)
        data_deps = [d for d in body.get("deps", []) or [] if not str(d).endswith(".py")
                     and not str(d).startswith(LOCAL_PACKAGES)]
        body["deps"] = needs.code + data_deps
        body["params"] = needs.params
    with open(path, "w") as fh:
        yaml.dump(doc, fh)


def main(argv: list[str] | None = None) -> int:
    import yaml

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code deps and params")
    args = parser.parse_args(argv)
    found = []
    for name in DVC_FILES:
        if args.write:
            write(ROOT / name)
        found += [f"{name}: {p}" for p in problems(yaml.safe_load((ROOT / name).read_text()))]
    print("\n".join(found) or f"{', '.join(DVC_FILES)} declare every file and params key their stages use")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
