"""A bounded load test of the inference service on loopback.

    python -m benchmarks.serve_load [--clients 8] [--seconds 20] [--malformed 0.1] [--model models/export/model.onnx]

Starts `skillpack serve` as its own process (one uvicorn worker, ONNX Runtime on one thread),
then N concurrent keep-alive clients (asyncio + httpx, in this process) send test images as
PNG for T seconds, a share of them malformed (non-image bytes, truncated PNG, empty body,
wrong content type, unknown feedback id). Reports throughput, latency p50 / p95 / p99 of the
well-formed requests, status counts, and the server's resident memory before and after.
Writes benchmarks/results/serve_load.json.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import save
from skillpack import paths
from skillpack.data import images_file
from skillpack.deploy.monitoring import free_port


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()


def request_kinds(images: list[bytes]) -> dict:
    """name -> (method, path, body, content type); the first is well-formed, the rest are not."""
    return {
        "png": lambda rng: ("POST", "/predict", images[rng.randrange(len(images))], "image/png"),
        "non-image": lambda rng: ("POST", "/predict", b"not an image at all" * 4, "image/png"),
        "truncated": lambda rng: ("POST", "/predict", images[0][:40], "image/png"),
        "empty": lambda rng: ("POST", "/predict", b"", "image/png"),
        "wrong type": lambda rng: ("POST", "/predict", images[0], "text/plain"),
        "unknown feedback": lambda rng: ("POST", "/feedback", b'{"id": "nope", "label": 0}', "application/json"),
    }


async def client(base: str, kinds: dict, malformed: float, until: float, seed: int, out: list) -> None:
    import httpx

    rng = random.Random(seed)
    bad = [k for k in kinds if k != "png"]
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        while time.perf_counter() < until:
            kind = rng.choice(bad) if rng.random() < malformed else "png"
            method, path, body, content_type = kinds[kind](rng)
            t0 = time.perf_counter()
            response = await http.request(method, path, content=body, headers={"content-type": content_type})
            out.append((kind, response.status_code, time.perf_counter() - t0))


async def drive(base: str, kinds: dict, clients: int, seconds: float, malformed: float, seed: int) -> list:
    out: list = []
    until = time.perf_counter() + seconds
    await asyncio.gather(*(client(base, kinds, malformed, until, seed + i, out) for i in range(clients)))
    return out


def start_server(model: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "skillpack.cli", "serve", "--model", model, "--port", str(port),
                             "serve.threads=1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import httpx

    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the service did not become ready in 120 s")


def alert_check(base: str, images: list[bytes], folder: Path) -> dict:
    """A real Prometheus scrapes the service with the generated rules, the latency threshold set
    below anything the service can reach: does that alert fire, and do the others stay quiet?
    Plus promtool's unit tests of the rules params.yaml generates."""
    import shutil

    import httpx

    from skillpack.config import MonitorParams, load_params
    from skillpack.deploy.monitoring import PrometheusServer, write_alerts

    breach = MonitorParams.model_validate({**load_params().monitor.model_dump(by_alias=True), "rate_window": "10s",
                                           "p95_latency_ms_max": {"threshold": 0.001, "for": "2s"}})
    rng = random.Random(0)
    with PrometheusServer(breach, folder / "breach", base.removeprefix("http://")) as prometheus:
        states, seconds = prometheus.wait_until_firing(
            "SkillpackLatencyP95High", 90, lambda: httpx.post(f"{base}/predict", content=rng.choice(images),
                                                             headers={"content-type": "image/png"}))
    write_alerts(load_params().monitor, folder / "params")
    promtool = subprocess.run([shutil.which("promtool") or "promtool", "test", "rules", "alerts_test.yml"],
                              cwd=folder / "params", capture_output=True, text=True)
    tests = len(__import__("yaml").safe_load((folder / "params" / "alerts_test.yml").read_text())["tests"])
    return {"breached_rule": "SkillpackLatencyP95High", "fired_after_s": seconds, "rule_states": states,
            "quiet_rules": sorted(k for k, v in states.items() if v == "inactive"),
            "promtool_tests": tests, "promtool_passed": promtool.returncode == 0}


def summarise(records: list, seconds: float, malformed: float) -> dict:
    good = np.array([t for kind, status, t in records if kind == "png" and status == 200]) * 1e3
    statuses: dict[str, int] = {}
    for _, status, _ in records:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {"requests": len(records), "req_per_s": len(records) / seconds, "ok_per_s": len(good) / seconds,
            "p50_ms": float(np.percentile(good, 50)), "p95_ms": float(np.percentile(good, 95)),
            "p99_ms": float(np.percentile(good, 99)), "status_counts": statuses,
            "status_5xx": sum(n for s, n in statuses.items() if s.startswith("5")),
            "malformed_share": sum(1 for kind, _, _ in records if kind != "png") / max(len(records), 1),
            "malformed_target": malformed}


def main(argv=None) -> dict:
    from skillpack.machine import describe

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(paths.EXPORTED / "model.onnx"))
    parser.add_argument("--data", default=str(paths.PREPARED))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--malformed", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-alerts", action="store_true", help="skip the alert check with a real Prometheus")
    args = parser.parse_args(argv)
    test_images = np.load(images_file(args.data, "test"), mmap_mode="r")
    images = [png(np.array(test_images[i])) for i in range(200)]
    kinds = request_kinds(images)
    port = free_port()
    server = start_server(args.model, port)
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(drive(base, kinds, args.clients, args.warmup, 0.0, args.seed + 1000))
        rss_before = rss_mb(server.pid)
        records = asyncio.run(drive(base, kinds, args.clients, args.seconds, args.malformed, args.seed))
        rss_after = rss_mb(server.pid)
        import httpx

        healthy = httpx.get(f"{base}/healthz").status_code == 200
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            alerting = alert_check(base, images, Path(folder)) if not args.no_alerts else None
    finally:
        server.terminate()
        server.wait(20)
    figures = {**summarise(records, args.seconds, args.malformed), "clients": args.clients, "seconds": args.seconds,
               "rss_mb_before": rss_before, "rss_mb_after": rss_after,
               "rss_growth": (rss_after - rss_before) / rss_before, "healthy_after": healthy, "model": args.model,
               "alerting": alerting,
               "load_generator": "same machine: asyncio + httpx in one process; the service: one uvicorn worker, "
                                 "ONNX Runtime on 1 thread", "machine_at_run": describe()}
    print(f"{figures['req_per_s']:.0f} req/s ({figures['ok_per_s']:.0f} well-formed), p50 {figures['p50_ms']:.2f} ms, "
          f"p95 {figures['p95_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms; statuses {figures['status_counts']}; "
          f"malformed {figures['malformed_share']:.1%}; RSS {rss_before:.0f} -> {rss_after:.0f} MB "
          f"({figures['rss_growth']:+.1%})")
    print(f"wrote {save('serve_load', figures)}")
    return figures


if __name__ == "__main__":
    main()
