"""Process settings are made by the entry points (skillpack.runtime.configure), never by an import."""
import os
import subprocess
import sys

from skillpack.runtime import ENV_DEFAULTS, configure


def test_configure_sets_each_default_the_environment_lacks_and_keeps_the_rest(monkeypatch):
    for key in (*ENV_DEFAULTS, "OMP_WAIT_POLICY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")       # the user's own value wins
    configure()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"
    assert all(os.environ[key] == value for key, value in ENV_DEFAULTS.items() if key != "MLFLOW_HTTP_REQUEST_TIMEOUT")
    configure(omp_wait_policy=None)                                # OpenMP's default, for timing inference
    assert "OMP_WAIT_POLICY" not in os.environ


def test_importing_skillpack_and_its_modules_sets_nothing():
    env = {k: v for k, v in os.environ.items() if k not in ENV_DEFAULTS and k != "OMP_WAIT_POLICY"}
    code = ("import os, skillpack, skillpack.config, skillpack.tracking, skillpack.io; "
            f"print(sorted(k for k in {sorted([*ENV_DEFAULTS, 'OMP_WAIT_POLICY'])!r} if k in os.environ))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout
