"""Import this first (before skillpack, which sets OMP_WAIT_POLICY=PASSIVE) in a process that
measures inference latency: such a process then runs under OpenMP's default wait policy, what
a torch user gets. PASSIVE protects training from oversubscription, but makes batch-1 eager
inference ~3.4x slower on these CPUs (0.48 vs 1.66 ms for sp_cnn_m, 2 threads)."""
import os

os.environ.pop("OMP_WAIT_POLICY", None)
WAIT_POLICY = "OpenMP default (OMP_WAIT_POLICY unset when torch loaded)"  # skillpack sets PASSIVE later: too late
import torch  # noqa: E402,F401  (libgomp reads the policy when torch loads it)
