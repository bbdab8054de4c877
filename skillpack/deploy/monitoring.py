"""Prometheus alert rules from params.yaml `monitor:`, the promtool unit tests that prove each
rule fires on a breach and stays quiet otherwise, and the scrape config of the service.

    skillpack alerts            # or the DVC stage `alerts`: docker/prometheus/{alerts,alerts_test,prometheus}.yml

The metric names are those of skillpack.deploy.serving.metrics.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import yaml

from skillpack.config import AlertParams, MonitorParams

RULES_FILE, TESTS_FILE, SCRAPE_FILE = "alerts.yml", "alerts_test.yml", "prometheus.yml"
TEST_INTERVAL_S = 15


def _minutes(duration: str) -> float:
    value, unit = int(duration[:-1]), duration[-1]
    return value * {"s": 1 / 60, "m": 1, "h": 60}[unit]


class Signal(NamedTuple):
    """One production signal: a PromQL expression for its value, the threshold it must stay on
    the right side of, and (for accuracy) a guard that must hold before the value is judged.
    The alert rules and the monitor flow both come from this one table."""
    alert: str
    name: str            # the params.yaml monitor: key
    value: str           # PromQL: the signal's value per job
    op: str              # "<" or ">": breached when `value op threshold`
    cfg: AlertParams
    severity: str
    summary: str
    guard: str = ""      # PromQL condition that must also hold

    @property
    def threshold(self) -> float:
        return self.cfg.threshold

    def breached(self, value: float | None) -> bool:
        return value is not None and (value < self.threshold if self.op == "<" else value > self.threshold)

    def expr(self) -> str:
        rule = f"{self.value} {self.op} {self.threshold}"
        return f"{rule} and {self.guard}" if self.guard else rule


def signals(m: MonitorParams) -> list[Signal]:
    """Accuracy, p95 latency, memory, error rate, prediction drift - the metrics of skillpack.deploy.serving.metrics."""
    job, w = f'job="{m.job}"', m.rate_window
    return [
        Signal("SkillpackAccuracyLow", "accuracy_min", f"skillpack_rolling_accuracy{{{job}}}", "<", m.accuracy_min,
               "critical", f"rolling accuracy from /feedback below {m.accuracy_min.threshold} "
                           f"(at least {m.min_feedback} labels in the window)",
               guard=f"skillpack_feedback_in_window{{{job}}} >= {m.min_feedback}"),
        Signal("SkillpackLatencyP95High", "p95_latency_ms_max",
               f"1000 * histogram_quantile(0.95, sum by (job, le) (rate(skillpack_request_latency_seconds_bucket"
               f"{{{job},endpoint=\"/predict\"}}[{w}])))", ">", m.p95_latency_ms_max, "warning",
               f"/predict p95 latency above {m.p95_latency_ms_max.threshold} ms"),
        Signal("SkillpackMemoryHigh", "memory_mb_max", f"process_resident_memory_bytes{{{job}}} / 1048576", ">",
               m.memory_mb_max, "warning", f"resident memory above {m.memory_mb_max.threshold} MB"),
        Signal("SkillpackErrorRateHigh", "error_rate_max",
               f"sum by (job) (rate(skillpack_requests_total{{{job},status=~\"5..\"}}[{w}])) "
               f"/ sum by (job) (rate(skillpack_requests_total{{{job}}}[{w}]))", ">", m.error_rate_max, "critical",
               f"share of 5xx responses above {m.error_rate_max.threshold}"),
        Signal("SkillpackPredictionDrift", "drift_max", f"skillpack_drift_class_distance{{{job}}}", ">", m.drift_max,
               "warning", f"predicted classes drifted from the test set's distribution "
                          f"(total variation distance above {m.drift_max.threshold})"),
        Signal("SkillpackInputDrift", "input_drift_max", f"skillpack_drift_input_distance{{{job}}}", ">",
               m.input_drift_max, "warning", f"the images' mean brightness drifted from the test set's "
                                             f"(total variation distance above {m.input_drift_max.threshold})"),
    ]


def alert_rules(m: MonitorParams) -> dict:
    """The rule groups: one alert per signal, firing after the signal's `for:`."""
    rules = [{"alert": s.alert, "expr": s.expr(), "for": s.cfg.for_, "labels": {"severity": s.severity},
              "annotations": {"summary": s.summary}} for s in signals(m)]
    return {"groups": [{"name": "skillpack", "rules": rules}]}


# -- promtool unit tests -------------------------------------------------------------------

def _series(name: str, labels: dict, start: float, step: float, n: int) -> dict:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{body}}}", "values": f"{start:g}+{step:g}x{n}"}


def _latency_buckets(job: str, p95_ms: float, n: int) -> list[dict]:
    """Counters of a histogram whose every observation lies in (2 p95/3, 4 p95/3] seconds-wise,
    so histogram_quantile(0.95) lands near 1.3 x p95_ms."""
    low, high = 2 * p95_ms / 3000, 4 * p95_ms / 3000
    name, labels = "skillpack_request_latency_seconds_bucket", {"job": job, "endpoint": "/predict"}
    return [_series(name, {**labels, "le": f"{low:g}"}, 0, 0, n), _series(name, {**labels, "le": f"{high:g}"}, 0, 60, n),
            _series(name, {**labels, "le": "+Inf"}, 0, 60, n)]


def _case(m: MonitorParams, alert: str, cfg, series: list[dict], fires: bool) -> dict:
    minutes = _minutes(cfg.for_) + 3
    rule = next(r for r in alert_rules(m)["groups"][0]["rules"] if r["alert"] == alert)
    expected = [{"exp_labels": {"severity": rule["labels"]["severity"], "job": m.job},
                 "exp_annotations": rule["annotations"]}] if fires else []
    return {"interval": f"{TEST_INTERVAL_S}s", "input_series": series,
            "alert_rule_test": [{"eval_time": f"{int(minutes)}m", "alertname": alert, "exp_alerts": expected}],
            "name": f"{alert} {'fires on a breach' if fires else 'stays quiet'}"}


def rule_tests(m: MonitorParams) -> dict:
    """For every rule a breach that must fire after its `for:` and a near miss that must not."""
    n = int(60 / TEST_INTERVAL_S * (max(_minutes(s.cfg.for_) for s in signals(m)) + 6))
    job = {"job": m.job}

    def gauge(name, value):
        return _series(name, job, value, 0, n)

    acc, mem, err, drift = m.accuracy_min.threshold, m.memory_mb_max.threshold, m.error_rate_max.threshold, \
        m.drift_max.threshold
    requests = 600  # per minute
    tests = [
        _case(m, "SkillpackAccuracyLow", m.accuracy_min,
              [gauge("skillpack_rolling_accuracy", acc / 2), gauge("skillpack_feedback_in_window", m.min_feedback)], True),
        _case(m, "SkillpackAccuracyLow", m.accuracy_min,  # too few labels to judge
              [gauge("skillpack_rolling_accuracy", acc / 2), gauge("skillpack_feedback_in_window", m.min_feedback - 1)],
              False),
        _case(m, "SkillpackAccuracyLow", m.accuracy_min,
              [gauge("skillpack_rolling_accuracy", min(1.0, (1 + acc) / 2)),
               gauge("skillpack_feedback_in_window", m.min_feedback)], False),
        _case(m, "SkillpackLatencyP95High", m.p95_latency_ms_max,
              _latency_buckets(m.job, 1.5 * m.p95_latency_ms_max.threshold, n), True),
        _case(m, "SkillpackLatencyP95High", m.p95_latency_ms_max,
              _latency_buckets(m.job, 0.5 * m.p95_latency_ms_max.threshold, n), False),
        _case(m, "SkillpackMemoryHigh", m.memory_mb_max,
              [gauge("process_resident_memory_bytes", 2 * mem * 1048576)], True),
        _case(m, "SkillpackMemoryHigh", m.memory_mb_max,
              [gauge("process_resident_memory_bytes", 0.5 * mem * 1048576)], False),
    ]
    for share, fires in ((min(1.0, 2 * err), True), (err / 2, False)):
        step = requests * TEST_INTERVAL_S / 60
        tests.append(_case(m, "SkillpackErrorRateHigh", m.error_rate_max, [
            _series("skillpack_requests_total", {**job, "endpoint": "/predict", "status": "200"}, 0,
                    step * (1 - share), n),
            _series("skillpack_requests_total", {**job, "endpoint": "/predict", "status": "500"}, 0, step * share, n)],
            fires))
    tests += [_case(m, "SkillpackPredictionDrift", m.drift_max, [gauge("skillpack_drift_class_distance", value)], fires)
              for value, fires in ((min(1.0, 2 * drift), True), (drift / 2, False))]
    shift = m.input_drift_max.threshold
    tests += [_case(m, "SkillpackInputDrift", m.input_drift_max, [gauge("skillpack_drift_input_distance", value)],
                    fires) for value, fires in ((min(1.0, 2 * shift), True), (shift / 2, False))]
    return {"rule_files": [RULES_FILE], "evaluation_interval": f"{TEST_INTERVAL_S}s", "tests": tests}


def scrape_config(m: MonitorParams, target: str = "127.0.0.1:8000", interval: str = "15s") -> dict:
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [RULES_FILE],
            "scrape_configs": [{"job_name": m.job, "static_configs": [{"targets": [target]}]}]}


def write_alerts(m: MonitorParams, out: str | Path, target: str = "127.0.0.1:8000") -> list[Path]:
    from skillpack.io import write_text

    out = Path(out)
    header = "# Generated from params.yaml monitor: by `skillpack alerts` (DVC stage alerts). Do not edit.\n"
    files = {RULES_FILE: alert_rules(m), TESTS_FILE: rule_tests(m), SCRAPE_FILE: scrape_config(m, target)}
    for name, body in files.items():
        write_text(out / name, header + yaml.safe_dump(body, sort_keys=False, width=200))
    return [out / name for name in files]


def textfile_metrics(figures: dict[str, float], labels: dict[str, str] | None = None) -> str:
    """Batch figures (the pipeline's test accuracy, export latencies) in the node_exporter
    textfile-collector format: a batch job leaves a file behind for the exporter to serve, with
    no Pushgateway to run and no stale series to delete when the job stops existing."""
    label = ",".join(f'{k}="{v}"' for k, v in (labels or {}).items())
    lines = []
    for name, value in figures.items():
        metric = "skillpack_pipeline_" + re.sub(r"[^a-zA-Z0-9_]", "_", name)
        lines += [f"# TYPE {metric} gauge", f"{metric}{{{label}}} {float(value):.9g}"]
    return "\n".join(lines) + "\n"


# -- a real Prometheus, for tests and the load benchmark -----------------------------------

def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a server started next)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusServer:
    """Debian's `prometheus` on a free loopback port, scraping `target` every second with the
    rules generated from `monitor`; `rule_states()` reads every rule's state from its HTTP API."""

    def __init__(self, monitor: MonitorParams, folder: str | Path, target: str):
        import shutil

        self.binary = shutil.which("prometheus")
        if self.binary is None:
            raise FileNotFoundError("prometheus missing: `apt-get install prometheus`")
        self.folder, self.port = Path(folder), free_port()
        write_alerts(monitor, self.folder, target)
        config = yaml.safe_load((self.folder / SCRAPE_FILE).read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        (self.folder / SCRAPE_FILE).write_text(yaml.safe_dump(config))
        self.api = f"http://127.0.0.1:{self.port}/api/v1"

    def __enter__(self) -> PrometheusServer:
        import subprocess

        self.proc = subprocess.Popen([self.binary, f"--config.file={self.folder / SCRAPE_FILE}",
                                      f"--storage.tsdb.path={self.folder / 'tsdb'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def rule_states(self) -> dict[str, str]:
        """alert name -> inactive | pending | firing ({} until the server answers)."""
        import httpx

        try:
            groups = httpx.get(f"{self.api}/rules", timeout=2).json()["data"]["groups"]
        except (httpx.HTTPError, ValueError, KeyError):
            return {}
        return {rule["name"]: rule["state"] for group in groups for rule in group["rules"]}

    def wait_until_firing(self, alert: str, timeout: float, between=lambda: None) -> tuple[dict, float | None]:
        """Call `between()` (traffic) until `alert` fires: (every rule's state, seconds it took)."""
        import time

        start, states = time.perf_counter(), {}
        while time.perf_counter() - start < timeout:
            between()
            states = self.rule_states()
            if states.get(alert) == "firing":
                return states, time.perf_counter() - start
            time.sleep(0.1)
        return states, None
