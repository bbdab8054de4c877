"""No Docker engine runs here: lint the Dockerfile with hadolint and check it ships the pipeline."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    proc = subprocess.run([hadolint, "--failure-threshold", "warning", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_copies_what_the_pipeline_needs():
    text = DOCKERFILE.read_text()
    for path in ("skillpack", "stages", "flows", "dvc.yaml", "params.yaml", "pyproject.toml"):
        assert path in text, path
    assert 'CMD ["dvc", "repro"]' in text
