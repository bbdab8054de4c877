"""The fault and bad-input suite in one command: every test marked `fault` (hostile names and
bytes, broken params, half-written stores, unusable checkpoints and model files, a full disk,
a tracking server that does not answer, hostile requests, SIGTERM) run with pytest, summed up.

    python -m benchmarks.faults        # minutes on 2 cores -> benchmarks/results/faults.json

Each case's marker says the outcome it proves and what it guards against: `crash` (the
command or service dies), `lost` (an output, a store or a checkpoint lost or half-written),
`traceback` (a traceback shown where one line should say what is wrong). A failing case counts
against each of its guards; all must be 0.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
GUARDS = ("crash", "lost", "traceback")

# Collects the fault cases (marker arguments by test id) without running them.
COLLECT = """
import json, sys, pytest
class Cases:
    def __init__(self): self.cases = {}
    def pytest_collection_modifyitems(self, items):
        for item in items:
            mark = item.get_closest_marker("fault")
            if mark:
                self.cases[item.nodeid] = {"outcome": mark.args[0], "guards": list(mark.kwargs.get("guards", []))}
plugin = Cases()
code = pytest.main(["-q", "--collect-only", "-m", "fault", *sys.argv[1:]], plugins=[plugin])
print("CASES " + json.dumps(plugin.cases))
"""


def collect() -> dict[str, dict]:
    import json

    proc = subprocess.run([sys.executable, "-c", COLLECT], cwd=ROOT, capture_output=True, text=True)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("CASES "))
    return json.loads(line[len("CASES "):])


def run_cases(report: Path) -> int:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "fault", f"--junitxml={report}"],
                          cwd=ROOT).returncode


def outcomes(report: Path) -> dict[str, str]:
    """test id -> passed | failed | error | skipped, from pytest's JUnit XML."""
    out = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        path = case.get("classname", "").replace(".", "/")
        nodeid = f"{path}.py::{case.get('name')}"
        result = "passed"
        for kind in ("failure", "error", "skipped"):
            if case.find(kind) is not None:
                result = {"failure": "failed"}.get(kind, kind)
        out[nodeid] = result
    return out


def summary(cases: dict[str, dict], results: dict[str, str]) -> dict:
    rows = [{"case": nodeid, "outcome": info["outcome"], "guards": info["guards"],
             "result": results.get(nodeid, "not run")} for nodeid, info in sorted(cases.items())]
    bad = [r for r in rows if r["result"] != "passed"]

    def failing(guard: str) -> int:
        return sum(guard in r["guards"] for r in bad)
    return {"cases": len(rows), "crashed": failing("crash"), "lost": failing("lost"),
            "tracebacks": failing("traceback"), "not_passed": len(bad), "per_case": rows}


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from skillpack.io import write_json
    from skillpack.machine import describe

    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    cases = collect()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "faults.xml"
        run_cases(report)
        figures = summary(cases, outcomes(report))
    figures.update(machine=describe(), generated_by="python -m benchmarks.faults")
    write_json(RESULTS / "faults.json", figures)
    print({k: v for k, v in figures.items() if k not in ("per_case", "machine")})
    return 0 if figures["not_passed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
