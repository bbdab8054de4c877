"""How long a new user waits: a clean clone of this repository, then the README's commands, timed.

    python -m benchmarks.pipeline_time                 # make install data + make run; make test + make test-fast
    python -m benchmarks.pipeline_time --skip-tests    # the pipeline only

The pipeline runs in a fresh `git clone` of HEAD in a temporary folder, as a user's first
commands would, and the tests in a second one, as CI runs them (`make test` installs first, then
`make test-fast` runs in the same clone) (its own .venv, installed by `make install`; the package caches of this machine
are whatever they are, and the result says whether uv's cache was warm). `make run` is timed as
two parts, `make install data` (install_s) and the rest (the pipeline flow), and make_run_s is
their sum: what `time make run` shows on a clean clone. Per-stage seconds come from the pipeline
flow's own record (flows/pipeline.py prints them as its last line). Writes
benchmarks/results/pipeline_time.json: make_run_s, install_s, stage_s, test_acc, make_test_s,
make_test_fast_s, cpu.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def timed(cmd: list[str], cwd: Path, log: Path, env: dict | None = None) -> tuple[float, int, str]:
    """Run `cmd`, its output streamed to the terminal and appended to `log`: (seconds, exit code, output)."""
    t0 = time.perf_counter()
    chunks = []
    with open(log, "ab") as sink:
        sink.write(f"\n$ {' '.join(cmd)}\n".encode())
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            sink.write(chunk)
            chunks.append(chunk)
        code = proc.wait()
    return time.perf_counter() - t0, code, b"".join(chunks).decode(errors="replace")


def uv_cache_bytes() -> int:
    """Size of uv's package cache before the install (0: cold, the install downloads everything)."""
    uv = shutil.which("uv") or str(ROOT / ".venv" / "bin" / "uv")
    try:
        folder = subprocess.run([uv, "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) if Path(folder).is_dir() else 0


def flow_record(output: str) -> dict:
    """The pipeline flow's own record: its last line, RESULT_MARKER then JSON."""
    from flows.pipeline import RESULT_MARKER

    lines = [line for line in output.splitlines() if line.startswith(RESULT_MARKER)]
    if not lines:
        raise RuntimeError("the pipeline flow printed no result line: did it fail?")
    return json.loads(lines[-1][len(RESULT_MARKER):])


def set_param(repo: Path, key: str, value) -> None:
    """One params.yaml key, as `dvc exp run -S` would set it (through skillpack's override parser)."""
    import yaml

    from skillpack.config import apply_overrides

    path = repo / "params.yaml"
    path.write_text(yaml.safe_dump(apply_overrides(yaml.safe_load(path.read_text()), [f"{key}={value}"]),
                                   sort_keys=False))


def param_change_figures(clone: Path, log: Path) -> dict:
    """After `make run`: renaming the experiment re-runs nothing (`dvc status`); one training param
    changed (train.optimizer.momentum) re-runs train and what follows, timed (`dvc repro`)."""
    import re

    venv = clone / ".venv" / "bin"
    env = {**os.environ, "PATH": f"{venv}:{os.environ['PATH']}", "OMP_WAIT_POLICY": "PASSIVE", "DVC_NO_ANALYTICS": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}   # as the Makefile exports them
    set_param(clone, "registry.experiment", "renamed-experiment")
    _, _, status = timed(["dvc", "status", "dvc.yaml"], clone, log, env)
    set_param(clone, "train.optimizer.momentum", 0.85)
    seconds, code, output = timed(["dvc", "repro"], clone, log, env)
    if code:
        raise SystemExit(f"dvc repro after a param change failed ({code}); see {log}")
    return {"rename_up_to_date": "Data and pipelines are up to date" in status,
            "param_change_repro_s": round(seconds, 1),
            "param_change_stages": re.findall(r"Running stage '([a-z_]+)'", output)}


def pipeline_figures(clone: Path, log: Path) -> dict:
    """`make install data` then `make run` in a fresh clone, then the param-change figures."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    install_s, code, _ = timed(["make", "install", "data"], clone, log)
    if code:
        raise SystemExit(f"make install data failed ({code}); see {log}")
    flow_s, code, output = timed(["make", "run"], clone, log)
    if code:
        raise SystemExit(f"make run failed ({code}); see {log}")
    stages = flow_record(output)["stage_seconds"]
    metrics = json.loads((clone / "reports" / "metrics.json").read_text())
    return {"make_run_s": round(install_s + flow_s, 1), "install_s": round(install_s, 1), "flow_s": round(flow_s, 1),
            "stage_s": stages, "compress_export_s": round(stages["compress"] + stages["export"], 1),
            "test_acc": metrics["test_accuracy"], **param_change_figures(clone, log)}


def test_figures(clone: Path, log: Path) -> dict:
    """`make test` (its install included) then `make test-fast`, in a fresh clone."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    figures = {}
    for target in ("test", "test-fast"):
        seconds, code, output = timed(["make", target], clone, log)
        figures[f"make_{target.replace('-', '_')}_s"] = round(seconds, 1)
        figures[f"make_{target.replace('-', '_')}_result"] = passed_count(output) or f"exit {code}"
    return figures


def passed_count(output: str) -> str | None:
    tails = [line for line in output.splitlines() if " passed" in line]
    return tails[-1].strip("= ") if tails else None


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from skillpack.io import write_json
    from skillpack.machine import cpu_model, describe

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-tests", action="store_true", help="time the pipeline only")
    parser.add_argument("--tests-only", action="store_true",
                        help="time the tests only, keeping the stored pipeline figures (same commit)")
    parser.add_argument("--log", default="/tmp/pipeline_time.log")
    args = parser.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    log = Path(args.log)
    log.write_text("")
    figures: dict = {"commit": commit, "cpu": cpu_model()[0], "uv_cache_bytes_before": uv_cache_bytes()}
    if args.tests_only:
        stored = json.loads((RESULTS / "pipeline_time.json").read_text())
        figures = {**stored, **{k: v for k, v in figures.items() if k != "uv_cache_bytes_before"},
                   "pipeline_commit": stored.get("pipeline_commit", stored["commit"])}
    with tempfile.TemporaryDirectory(prefix="skillpack-clone-") as tmp:
        if not args.tests_only:
            figures.update(pipeline_figures(Path(tmp) / "skillpack", log))
            figures["pipeline_commit"] = commit
        if not args.skip_tests:  # a clean clone, as CI has: `make test` installs, then runs everything
            figures.update(test_figures(Path(tmp) / "skillpack-tests", log))
    figures["machine"] = describe()
    figures["generated_by"] = "python -m benchmarks.pipeline_time"
    write_json(RESULTS / "pipeline_time.json", figures)
    print(json.dumps({k: v for k, v in figures.items() if k != "machine"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
