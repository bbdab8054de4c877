"""The inference service over real HTTP (uvicorn on 127.0.0.1): predictions equal to evaluate's,
feedback-driven accuracy, Prometheus metrics, bad input answered with 4xx (a fuzz run), and
alert rules evaluated by a real Prometheus server scraping the service."""
import io
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import yaml
from conftest import POSTSCRIPT, wait_until_answers
from PIL import Image

from skillpack.config import MonitorParams, ServeParams
from skillpack.deploy import export
from skillpack.deploy.monitoring import free_port
from skillpack.deploy.serving.app import build_service
from skillpack.deploy.serving.model import load_onnx
from skillpack.train.runs import evaluate_model

CFG = ServeParams(max_body_bytes=64 * 1024, max_pixels=1024 * 1024, max_batch=8, feedback_window=20, top_k=3)


class RunningServer:
    """uvicorn serving `app` in a thread, on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        assert self.server.started, "uvicorn did not start"
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def served(fmnist, small_model, tmp_path_factory):
    model, _ = small_model
    path = export.export_onnx(model, tmp_path_factory.mktemp("serve") / "model.onnx", (28, 28, 1),
                              metadata={"classes": fmnist.classes, "model_name": "sp_cnn_s"})
    test = fmnist.splits["test"]
    return model, load_onnx(path), np.array(test.images[:400]), test.labels[:400]


@pytest.fixture(scope="module")
def service(served):
    _, onnx_model, images, _ = served
    with RunningServer(build_service(onnx_model, CFG, images)) as url:
        yield url


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()


def test_the_service_gives_the_probabilities_evaluate_gives(served, service):
    model, _, images, _ = served
    expected = torch.softmax(evaluate_model(model, images[:20], np.zeros(20, int)).logits, 1).numpy()
    for i in range(20):
        r = httpx.post(f"{service}/predict", content=png(images[i]), headers={"content-type": "image/png"})
        assert r.status_code == 200, r.text
        top = r.json()["predictions"][0]["top_k"]
        assert len(top) == CFG.top_k
        for entry in top:
            k = served[1].classes.index(entry["class"])
            assert entry["probability"] == pytest.approx(float(expected[i, k]), abs=1e-5)


def test_a_multipart_batch_gets_one_prediction_each_and_feedback_drives_live_accuracy(served, service):
    _, model, images, labels = served
    files = [("images", (f"{i}.png", png(images[i]), "image/png")) for i in range(5)]
    r = httpx.post(f"{service}/predict", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["predictions"]) == 5 and body["model"]["name"] == "sp_cnn_s"
    right = 0
    for p, label in zip(body["predictions"], labels[:5]):
        fb = httpx.post(f"{service}/feedback", json={"id": p["id"], "label": model.classes[label]})
        assert fb.status_code == 200
        right += fb.json()["correct"] == (p["top_k"][0]["class"] == model.classes[label])
    assert right == 5
    metrics = httpx.get(f"{service}/metrics").text
    window = [line for line in metrics.splitlines() if line.startswith("skillpack_feedback_in_window")]
    assert float(window[0].split()[-1]) >= 5
    again = httpx.post(f"{service}/feedback", json={"id": body["predictions"][0]["id"], "label": 0})
    assert again.status_code == 404  # a prediction is labelled once


def test_metrics_name_latency_requests_classes_confidence_memory_model_and_drift(served, service):
    image = served[2][0]
    assert httpx.post(f"{service}/predict", content=png(image), headers={"content-type": "image/png"}).status_code == 200
    text = httpx.get(f"{service}/metrics").text
    for name in ("skillpack_request_latency_seconds_bucket", "skillpack_requests_total", "skillpack_predictions_total",
                 "skillpack_confidence_bucket", "skillpack_rolling_accuracy", "process_resident_memory_bytes",
                 "skillpack_model_info", "skillpack_drift_class_distance", "skillpack_drift_confidence_shift"):
        assert name in text, name
    assert 'endpoint="/predict"' in text and 'status="200"' in text


def bomb_png(side: int = 2048) -> bytes:
    """A tiny file whose header declares side x side pixels (a decompression bomb in miniature)."""
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def malformed_requests(image: np.ndarray) -> dict[str, callable]:
    good = png(image)
    big = bytes(CFG.max_body_bytes + 10)
    return {
        "non-image bytes": lambda c, u: c.post(f"{u}/predict", content=b"hello, not a picture" * 5,
                                               headers={"content-type": "image/png"}),
        "postscript named png": lambda c, u: c.post(f"{u}/predict", content=POSTSCRIPT,
                                                    headers={"content-type": "image/png"}),
        "truncated png": lambda c, u: c.post(f"{u}/predict", content=good[:len(good) // 2],
                                             headers={"content-type": "image/png"}),
        "zero-length body": lambda c, u: c.post(f"{u}/predict", content=b"", headers={"content-type": "image/png"}),
        "wrong content type": lambda c, u: c.post(f"{u}/predict", content=good, headers={"content-type": "text/plain"}),
        "json to predict": lambda c, u: c.post(f"{u}/predict", json={"image": "x"}),
        "multipart without a file": lambda c, u: c.post(
            f"{u}/predict", content=b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--x--\r\n',
            headers={"content-type": "multipart/form-data; boundary=x"}),
        "broken multipart": lambda c, u: c.post(f"{u}/predict", content=b"--x\r\ngarbage",
                                                headers={"content-type": "multipart/form-data; boundary=x"}),
        "body over the byte limit": lambda c, u: c.post(f"{u}/predict", content=big,
                                                        headers={"content-type": "application/octet-stream"}),
        "pixel bomb": lambda c, u: c.post(f"{u}/predict", content=bomb_png(), headers={"content-type": "image/png"}),
        "too many images": lambda c, u: c.post(f"{u}/predict", files=[("f", (f"{i}.png", good, "image/png"))
                                                                      for i in range(CFG.max_batch + 1)]),
        "feedback not json": lambda c, u: c.post(f"{u}/feedback", content=b"{nope"),
        "feedback unknown id": lambda c, u: c.post(f"{u}/feedback", json={"id": "nope", "label": 0}),
        "feedback bad label": lambda c, u: c.post(f"{u}/feedback", json={"id": "nope", "label": 99}),
        "get on predict": lambda c, u: c.get(f"{u}/predict"),
    }


@pytest.mark.fault('malformed requests (PostScript, truncated, bombs, huge bodies, wrong types): 4xx, never 5xx',
                   guards=('crash',))
def test_bad_input_never_crashes_the_service_and_gets_a_4xx_that_says_why(served, service):
    kinds = malformed_requests(served[2][0])
    assert len(kinds) >= 8
    seen = {}
    with httpx.Client(timeout=30) as client:
        refused = kinds["postscript named png"](client, service)
        assert refused.status_code == 400 and "not a JPEG/PNG/WEBP/BMP/GIF/TIFF image" in refused.json()["error"]
        for i in range(520):
            name = list(kinds)[i % len(kinds)]
            r = kinds[name](client, service)
            seen.setdefault(name, set()).add(r.status_code)
            assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:200])
            if r.status_code != 405:
                assert r.json()["error"], name
        assert client.get(f"{service}/healthz").json() == {"status": "ok"}
        # a colour image of another size is not an error: it is converted and resized as prepare does
        odd = np.random.default_rng(0).integers(0, 256, (40, 33, 3), dtype=np.uint8)
        assert client.post(f"{service}/predict", content=png(odd), headers={"content-type": "image/png"}).status_code == 200
    assert seen["pixel bomb"] == {413} and seen["body over the byte limit"] == {413}
    assert seen["wrong content type"] == {415} and seen["feedback unknown id"] == {404}


# -- a real Prometheus ---------------------------------------------------------------------

def test_prometheus_fires_the_breached_alert_and_keeps_the_other_quiet(served, tmp_path):
    from skillpack.deploy.monitoring import PrometheusServer

    monitor = MonitorParams.model_validate({
        "rate_window": "10s",
        "p95_latency_ms_max": {"threshold": 0.001, "for": "2s"},     # set low: any traffic breaches it
        "memory_mb_max": {"threshold": 1_000_000.0, "for": "2s"}})   # set high: must stay inactive
    _, model, images, _ = served
    body = png(images[0])
    with RunningServer(build_service(model, CFG, images)) as url:
        with PrometheusServer(monitor, tmp_path, url.removeprefix("http://")) as prometheus:
            states, seconds = prometheus.wait_until_firing(
                "SkillpackLatencyP95High", timeout=90,
                between=lambda: httpx.post(f"{url}/predict", content=body, headers={"content-type": "image/png"}))
    assert seconds is not None and states["SkillpackLatencyP95High"] == "firing", states
    assert states["SkillpackMemoryHigh"] == "inactive", states


def test_generated_rules_pass_promtool_check_and_their_unit_tests(tmp_path):
    from skillpack.deploy.monitoring import write_alerts

    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `apt-get install prometheus` (.ci/run does it)"
    write_alerts(MonitorParams(), tmp_path)
    check = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=tmp_path, capture_output=True, text=True)
    from skillpack.deploy.monitoring import signals

    assert check.returncode == 0 and f"{len(signals(MonitorParams()))} rules found" in check.stdout, check.stdout
    assert len(signals(MonitorParams())) == 6   # accuracy, p95 latency, memory, 5xx rate, prediction and input drift
    tests = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    # the tests can fail: a rule whose threshold moved past its breach is caught
    rules = (tmp_path / "alerts.yml").read_text().replace("> 1024.0", "> 4096.0")
    (tmp_path / "alerts.yml").write_text(rules)
    broken = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert broken.returncode != 0 and "SkillpackMemoryHigh" in broken.stdout + broken.stderr


def test_the_committed_rules_are_the_ones_params_yaml_generates():
    from skillpack.config import load_params
    from skillpack.deploy.monitoring import alert_rules

    committed = yaml.safe_load(Path("docker/prometheus/alerts.yml").read_text())
    assert committed == alert_rules(load_params("params.yaml").monitor)


# ------------------------------------------------------------------ a documented, guarded service

def test_the_openapi_schema_describes_every_body_and_status(served):
    _, onnx_model, images, _ = served
    schema = build_service(onnx_model, CFG, images[:10]).openapi()
    predict, feedback = schema["paths"]["/predict"]["post"], schema["paths"]["/feedback"]["post"]
    assert {"image/png", "image/jpeg", "application/octet-stream", "multipart/form-data"} <= set(
        predict["requestBody"]["content"])
    assert set(feedback["requestBody"]["content"]) == {"application/json"}
    assert feedback["requestBody"]["content"]["application/json"]["schema"]["required"] == ["id", "label"]
    assert {"200", "400", "401", "413", "415"} <= set(predict["responses"])
    assert {"200", "400", "401", "404", "413", "422"} <= set(feedback["responses"])


@pytest.mark.fault('a non-loopback bind without a token is refused; the token guards /predict, /feedback, /metrics', guards=())
def test_a_token_guards_predict_feedback_and_metrics_but_not_health(served):
    from skillpack.config import ParamsError
    from skillpack.deploy.serving.app import service_token

    _, onnx_model, images, _ = served
    assert service_token(CFG, environ={}) is None                          # loopback, no token: open
    with pytest.raises(ParamsError, match=r"serve\.host 0\.0\.0\.0 is not loopback: .*SKILLPACK_SERVE_TOKEN"):
        service_token(CFG.model_copy(update={"host": "0.0.0.0"}), environ={})
    assert service_token(CFG.model_copy(update={"host": "0.0.0.0"}), environ={"SKILLPACK_SERVE_TOKEN": "s3"}) == "s3"
    body, headers = png(images[0]), {"content-type": "image/png"}
    with RunningServer(build_service(onnx_model, CFG, images[:10], token="s3cret")) as url:
        for path in ("/predict", "/metrics"):
            call = httpx.post if path == "/predict" else httpx.get
            kwargs = {"content": body, "headers": headers} if path == "/predict" else {}
            assert call(f"{url}{path}", **kwargs).status_code == 401
            wrong = {**kwargs.get("headers", {}), "authorization": "Bearer nope"}
            assert call(f"{url}{path}", **{**kwargs, "headers": wrong}).status_code == 401
        good = {**headers, "authorization": "Bearer s3cret"}
        assert httpx.post(f"{url}/predict", content=body, headers=good).status_code == 200
        assert httpx.get(f"{url}/metrics", headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.post(f"{url}/feedback", json={"id": "x", "label": 0}).status_code == 401
        assert httpx.get(f"{url}/healthz").status_code == 200 and httpx.get(f"{url}/readyz").status_code == 200


def test_input_drift_fires_on_inverted_images_and_stays_silent_on_held_out_ones(served, fmnist, tmp_path):
    """A real Prometheus with the generated rules: the same number of requests, one stream of
    held-out test images (in distribution), one of the same images inverted."""
    from skillpack.deploy.monitoring import PrometheusServer

    monitor = MonitorParams.model_validate({"input_drift_max": {"threshold": 0.25, "for": "2s"}})
    cfg = CFG.model_copy(update={"drift_window": 200})
    _, model, _, _ = served
    test = fmnist.splits["test"].images
    reference, held_out = np.array(test[:2000]), np.array(test[2000:2400])
    outcome = {}
    for name, stream in (("inverted", 255 - held_out), ("held out", held_out)):
        sent = iter(range(10**6))

        def traffic(sent=sent, stream=stream):
            i = next(sent) % len(stream)
            files = [("f", (f"{k}.png", png(stream[(i * 8 + k) % len(stream)]), "image/png")) for k in range(8)]
            assert httpx.post(f"{url}/predict", files=files).status_code == 200
        with RunningServer(build_service(model, cfg, reference)) as url:
            with PrometheusServer(monitor, tmp_path / name.replace(" ", "_"), url.removeprefix("http://")) as prometheus:
                states, seconds = prometheus.wait_until_firing("SkillpackInputDrift", timeout=25, between=traffic)
                outcome[name] = (states.get("SkillpackInputDrift"), next(sent))
    assert outcome["inverted"][0] == "firing", outcome
    assert outcome["held out"][0] == "inactive" and outcome["held out"][1] >= outcome["inverted"][1], outcome


@pytest.mark.fault('SIGTERM while a request is in flight: it is answered, then the service exits', guards=('lost',))
def test_sigterm_lets_the_request_in_flight_finish_before_the_service_exits(served, fmnist, tmp_path):
    import os
    import signal
    import sys

    model, _, images, _ = served
    path = export.export_onnx(model, tmp_path / "model.onnx", (28, 28, 1),
                              metadata={"classes": fmnist.classes, "model_name": "sp_cnn_s"})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "SKILLPACK_SERVE_TOKEN"}
    proc = subprocess.Popen([sys.executable, "-m", "skillpack.cli", "serve", "--model", str(path), "--port", str(port),
                             "--data", str(tmp_path / "no-store")], cwd=Path(__file__).resolve().parent.parent,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_answers(f"{url}/readyz", timeout=60)
        body, result = png(images[0]), {}

        def slow_body():   # the client is still sending when the service is told to stop
            yield body[:20]
            time.sleep(1.5)
            yield body[20:]
        client = threading.Thread(target=lambda: result.update(r=httpx.post(
            f"{url}/predict", content=slow_body(), headers={"content-type": "image/png"}, timeout=30)))
        client.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        client.join(30)
        assert result["r"].status_code == 200 and result["r"].json()["predictions"], result
        assert proc.wait(30) in (0, -signal.SIGTERM)   # uvicorn re-raises the signal once it has drained
        assert "Traceback" not in proc.stdout.read()
    finally:
        proc.kill()


@pytest.mark.fault("schemathesis against the service's own OpenAPI schema: no 5xx, every status documented",
                   guards=("crash",))
def test_schemathesis_from_the_openapi_schema_finds_no_server_error(served, tmp_path):
    """A real schema-driven client nobody here wrote (schemathesis): it generates requests, valid
    and invalid, from /openapi.json and checks the answers."""
    import sys

    _, onnx_model, images, _ = served
    with RunningServer(build_service(onnx_model, CFG, images[:50])) as url:
        proc = subprocess.run([str(Path(sys.executable).parent / "st"), "run", f"{url}/openapi.json",
                               "--checks", "not_a_server_error,status_code_conformance",
                               "--max-examples", "25", "--seed", "0"],
                              capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    print(proc.stdout[-1500:])   # schemathesis's summary: operations, test cases, checks (pytest -s)
