"""The lint the project holds itself to (`make lint`): ruff clean, and the import layers of
pyproject.toml's [tool.importlinter] kept - and broken by a forbidden import."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_ruff_finds_nothing():
    proc = subprocess.run([BIN / "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_the_layers_hold():
    kept = subprocess.run([BIN / "lint-imports"], cwd=ROOT, capture_output=True, text=True)
    assert kept.returncode == 0 and "0 broken" in kept.stdout, kept.stdout[-3000:]


@pytest.mark.parametrize("module, line, chain", [
    ("skillpack/data/leak.py", "from skillpack.evidence import verdicts  # the data side judging",
     "skillpack.data.leak -> skillpack.evidence.verdicts"),
    ("skillpack/paths.py", "from skillpack.train import runs  # the ground floor reaching into a wing",
     "skillpack.paths -> skillpack.train.runs"),
    ("skillpack/train/leak.py", "from skillpack.deploy import export  # training that deploys",
     "skillpack.train.leak -> skillpack.deploy.export"),
    ("skillpack/deploy/serving/leak.py", "import torch  # the service needing torch",
     "skillpack.deploy.serving.leak -> torch"),
])
def test_a_forbidden_import_breaks_the_layers(tmp_path, module, line, chain):
    copy = tmp_path / "project"
    for name in ("skillpack", "stages", "flows", "benchmarks"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__", "results", "cache"))
    shutil.copy2(ROOT / "pyproject.toml", copy / "pyproject.toml")
    target = copy / module
    target.write_text((target.read_text() if target.exists() else "") + line + "\n")
    broken = subprocess.run([BIN / "lint-imports"], cwd=copy, capture_output=True, text=True,
                            env={"PATH": str(BIN), "PYTHONPATH": str(copy)})
    assert broken.returncode != 0 and chain in broken.stdout, broken.stdout[-3000:]
