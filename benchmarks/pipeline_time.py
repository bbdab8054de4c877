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


def timed(cmd: list[str], cwd: Path, log: Path) -> tuple[float, int, str]:
    """Run `cmd`, its output streamed to the terminal and appended to `log`: (seconds, exit code, output)."""
    t0 = time.perf_counter()
    chunks = []
    with open(log, "ab") as sink:
        sink.write(f"\n$ {' '.join(cmd)}\n".encode())
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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


def passed_count(output: str) -> str | None:
    tails = [line for line in output.splitlines() if " passed" in line]
    return tails[-1].strip("= ") if tails else None


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from skillpack.io import write_json
    from skillpack.machine import cpu_model, describe

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-tests", action="store_true", help="time the pipeline only")
    parser.add_argument("--log", default="/tmp/pipeline_time.log")
    args = parser.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    log = Path(args.log)
    log.write_text("")
    figures: dict = {"commit": commit, "cpu": cpu_model()[0], "uv_cache_bytes_before": uv_cache_bytes()}
    with tempfile.TemporaryDirectory(prefix="skillpack-clone-") as tmp:
        clone = Path(tmp) / "skillpack"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env_note = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY",)}
        install_s, code, _ = timed(["make", "install", "data"], clone, log)
        if code:
            raise SystemExit(f"make install data failed ({code}); see {log}")
        flow_s, code, output = timed(["make", "run"], clone, log)
        if code:
            raise SystemExit(f"make run failed ({code}); see {log}")
        record = flow_record(output)
        metrics = json.loads((clone / "reports" / "metrics.json").read_text())
        figures.update({"make_run_s": round(install_s + flow_s, 1), "install_s": round(install_s, 1),
                        "flow_s": round(flow_s, 1), "stage_s": record["stage_seconds"],
                        "compress_export_s": round(record["stage_seconds"]["compress"]
                                                   + record["stage_seconds"]["export"], 1),
                        "test_acc": metrics["test_accuracy"], "env": env_note})
        if not args.skip_tests:  # a second clean clone, as CI has: `make test` installs, then runs everything
            clone = Path(tmp) / "skillpack-tests"
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            for target in ("test", "test-fast"):
                seconds, code, output = timed(["make", target], clone, log)
                figures[f"make_{target.replace('-', '_')}_s"] = round(seconds, 1)
                figures[f"make_{target.replace('-', '_')}_result"] = passed_count(output) or f"exit {code}"
    figures["machine"] = describe()
    figures["generated_by"] = "python -m benchmarks.pipeline_time"
    write_json(RESULTS / "pipeline_time.json", figures)
    print(json.dumps({k: v for k, v in figures.items() if k != "machine"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
