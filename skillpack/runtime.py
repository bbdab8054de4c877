"""The process settings an entry point makes before it imports torch, MLflow or Prefect.
Importing skillpack sets nothing; the entry points call `configure()` first: stages
(stages.common.run_stage), flows (flows/__init__.py: Prefect reads its settings when it is
imported), the CLI, the benchmarks (benchmarks/__init__.py) and the tests (tests/conftest.py).
A script of your own that trains with skillpack calls it too, before importing torch.

    from skillpack.runtime import configure
    configure()                        # OMP_WAIT_POLICY=PASSIVE, telemetry off, bounded retries
    configure(omp_wait_policy=None)    # OpenMP's own default: for timing inference (stages.export)
"""
from __future__ import annotations

import os

# Each is a default: a value already in the environment wins.
ENV_DEFAULTS = {
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    # A tracking server that stops answering mid-stage: 2 retries of at most 10 s each, not MLflow's
    # default 7 retries with exponential backoff and 120 s timeouts (minutes of silence).
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    # Prefect's ephemeral server: no telemetry heartbeat (it raised "database is locked" on a
    # 2-core AMD EPYC), no UI, and 120 s for a fresh database to start (it took ~20 s there; the
    # default limit is 20 s).
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}
# With OpenMP's default (active) wait policy, two busy processes on a 2-core machine made torch
# ~30x slower; PASSIVE threads sleep instead of spinning. It must be set before torch loads libgomp.
TRAINING_OMP_WAIT_POLICY = "PASSIVE"
# What stages.export and benchmarks.latency time under: PASSIVE makes batch-1 eager inference
# ~3.4x slower (0.48 vs 1.66 ms for sp_cnn_m, 2 threads, AMD EPYC), and a torch user's process
# runs under OpenMP's default.
DEFAULT_OMP_WAIT_POLICY = "OpenMP default (OMP_WAIT_POLICY unset when torch loaded)"


def configure(omp_wait_policy: str | None = TRAINING_OMP_WAIT_POLICY) -> None:
    """Set ENV_DEFAULTS where the environment has no value, and OMP_WAIT_POLICY: to
    `omp_wait_policy` unless the environment has one, or unset with None (OpenMP's default, for
    timing inference). Call it before torch, MLflow or Prefect is imported."""
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if omp_wait_policy is None:
        os.environ.pop("OMP_WAIT_POLICY", None)
    else:
        os.environ.setdefault("OMP_WAIT_POLICY", omp_wait_policy)
