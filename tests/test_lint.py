"""The lint the project holds itself to (`make lint`): ruff clean, and the import layers of
pyproject.toml's [tool.importlinter] kept - and broken by a forbidden import."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_ruff_finds_nothing():
    proc = subprocess.run([BIN / "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_the_layers_hold_and_a_forbidden_import_breaks_them(tmp_path):
    kept = subprocess.run([BIN / "lint-imports"], cwd=ROOT, capture_output=True, text=True)
    assert kept.returncode == 0 and "0 broken" in kept.stdout, kept.stdout[-3000:]
    copy = tmp_path / "project"
    for name in ("skillpack", "stages", "flows", "benchmarks"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__", "results", "cache"))
    shutil.copy2(ROOT / "pyproject.toml", copy / "pyproject.toml")
    (copy / "skillpack" / "data" / "leak.py").write_text("from skillpack import verdicts  # the data side judging\n")
    broken = subprocess.run([BIN / "lint-imports"], cwd=copy, capture_output=True, text=True,
                            env={"PATH": str(BIN), "PYTHONPATH": str(copy)})
    assert broken.returncode != 0 and "skillpack.data.leak -> skillpack.evidence.verdicts" in broken.stdout, broken.stdout[-3000:]
