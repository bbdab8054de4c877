"""dvc.yaml is honest: every stage declares the code it imports, the params it reads, and the
artifact paths its code uses (skillpack/paths.py)."""
import ast
import copy
from pathlib import Path

import yaml

from skillpack import paths
from stages import dag

ROOT = Path(__file__).resolve().parent.parent


def _dvc(name="dvc.yaml") -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def test_every_stage_declares_the_code_it_imports_and_the_params_it_reads():
    for name in dag.DVC_FILES:
        assert dag.problems(_dvc(name)) == [], name


def test_the_check_names_a_missing_code_file_and_a_missing_param():
    broken = copy.deepcopy(_dvc())
    broken["stages"]["train"]["deps"].remove("skillpack/train/optim.py")
    broken["stages"]["evaluate"]["params"].remove("train.threads")
    assert dag.problems(broken) == ["train: imports skillpack/train/optim.py, not in deps",
                                    "evaluate: reads params 'train.threads', not in params"]


def test_params_are_read_through_aliases_sections_and_field_aliases(tmp_path):
    stage = tmp_path / "stage.py"
    stage.write_text(
        "def main():\n"
        "    params = load()\n"
        "    cfg = params.train\n"
        "    opt = cfg.optimizer\n"
        "    use(opt.lr, params.validate_.max_rows_reported, params.clean.oof.train_params(2, 'cpu'))\n"
        "    run(cfg.loss)\n")
    assert dag.params_read(stage) == {"train.optimizer.lr", "validate.max_rows_reported", "clean.oof", "train.loss"}
    stage.write_text("def main():\n    params = load()\n    everything(params)\n")
    assert dag.params_read(stage) == {dag.ALL_PARAMS}


def test_lazy_imports_inside_functions_count(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "__init__.py").write_text("")
    (tmp_path / "stages" / "late.py").write_text("def main():\n    from stages import helper\n")
    (tmp_path / "stages" / "helper.py").write_text("import os\n")
    files = {f.name for f in dag.code_closure("stages.late", tmp_path)}
    assert files == {"__init__.py", "late.py", "helper.py"}


def _path_names_used(module_file: Path) -> set[str]:
    tree = ast.parse(module_file.read_text())
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "paths"}


def _declared_paths(body: dict) -> set[str]:
    out = set()
    for kind in ("deps", "outs", "metrics", "plots"):
        for item in body.get(kind, []) or []:
            out.add(next(iter(item)) if isinstance(item, dict) else item)
    return out


def test_stage_paths_in_dvc_yaml_are_the_ones_the_code_uses():
    constants = {name: str(value) for name, value in vars(paths).items() if isinstance(value, Path)}
    for stage, body in _dvc()["stages"].items():
        declared = {p for p in _declared_paths(body) if not p.endswith(".py") and not p.startswith("${")}
        unknown = declared - set(constants.values())
        assert not unknown, f"{stage}: dvc.yaml names {unknown}, which skillpack/paths.py does not"
        used = _path_names_used(ROOT / "stages" / f"{stage}.py")
        for name in used - {"REPORTS", "PARAMS"}:
            path = constants[name]
            assert any(path == d or path.startswith(d + "/") or d.startswith(path + "/") for d in declared), \
                f"{stage}: the code uses paths.{name} ({path}), dvc.yaml does not declare it"
    assert "${data.root}" in _dvc()["stages"]["prepare"]["deps"]  # the raw images: a changed file re-runs prepare


def test_the_ablate_stage_depends_on_every_benchmark_result_the_claims_report_reads():
    from flows.ablation import BENCHMARK_RESULTS, CLAIM_BENCHMARKS

    deps = set(_dvc("ablations/dvc.yaml")["stages"]["ablate"]["deps"])
    for name in CLAIM_BENCHMARKS:
        path = BENCHMARK_RESULTS / f"{name}.json"
        assert str(path) in deps, f"ablations/dvc.yaml: the ablate stage reads {path} but does not declare it"
        assert (ROOT / path).is_file(), f"{path} is declared but missing: DVC refuses a missing dependency"
