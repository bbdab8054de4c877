"""The house rules a newcomer can rely on (docs/architecture.md): a ground floor of at most 12
modules under at least 3 wings, no module over 450 lines, no function over 50, no stage main()
over 40 - checked on the source, so a change that breaks one fails here."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = [p for folder in ("skillpack", "stages", "flows", "benchmarks") for p in sorted((ROOT / folder).rglob("*.py"))]
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_STAGE_MAIN_LINES, MAX_GROUND_FLOOR = 450, 50, 40, 12


def functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def test_the_library_has_wings_and_a_small_ground_floor():
    library = ROOT / "skillpack"
    wings = [p.name for p in library.iterdir() if (p / "__init__.py").is_file()]
    ground = [p.name for p in library.glob("*.py")]
    assert len(wings) >= 3, wings
    assert len(ground) <= MAX_GROUND_FLOOR, sorted(ground)


def test_no_module_is_too_long():
    long = {str(p.relative_to(ROOT)): n for p in CODE if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f"over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_too_long():
    long = {f"{p.relative_to(ROOT)}:{name}": n for p in CODE for name, n in functions(p) if n > MAX_FUNCTION_LINES}
    assert long == {}, f"over {MAX_FUNCTION_LINES} lines: {long}"


def test_every_stage_main_is_thin():
    mains = {p.name: n for p in (ROOT / "stages").glob("*.py") for name, n in functions(p) if name == "main"}
    assert {"train.py", "evaluate.py", "export.py"} <= set(mains)
    long = {name: n for name, n in mains.items() if n > MAX_STAGE_MAIN_LINES}
    assert long == {}, f"stage main() over {MAX_STAGE_MAIN_LINES} lines: {long}"
