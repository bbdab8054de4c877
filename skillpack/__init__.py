"""skillpack: the image-classification skill pack as one reproducible pipeline."""
import os

# Must happen before torch is imported anywhere: with the default (active) OpenMP wait
# policy, two busy processes on a 2-core machine made torch ~30x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# A tracking server that stops answering mid-stage: 2 retries of at most 10 s each, not MLflow's
# default 7 retries with exponential backoff and 120 s timeouts (minutes of silence).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Prefect's ephemeral server: no telemetry heartbeat (it raised "database is locked" here),
# and time for a fresh database to start (~20 s on these machines; the default is 20 s).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_UI_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

__version__ = "0.1.0"
