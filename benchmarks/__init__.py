"""The benchmarks: `python -m benchmarks.<name>`, each writing benchmarks/results/<name>.json.
Each is an entry point: the process is configured here (skillpack.runtime), before any
benchmark module imports torch."""
from skillpack.runtime import configure

configure()
