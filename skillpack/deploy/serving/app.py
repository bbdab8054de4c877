"""The HTTP inference service.

    POST /predict   one image as the raw body (image/*, application/octet-stream) or one or more
                    as multipart/form-data files; -> top-k classes and probabilities, the model
                    version and a prediction id per image
    POST /feedback  {"id": <prediction id>, "label": <class name or index>} -> live accuracy
    GET  /healthz   the process answers
    GET  /readyz    the model is loaded
    GET  /metrics   Prometheus text format

With a token in the environment variable serve.token_env (required to bind anything but
loopback), /predict, /feedback and /metrics need `Authorization: Bearer <token>`.

Every image goes through skillpack.data.images.decode_bytes, the decoding of the prepare
stage (as `skillpack predict` does, under the same limits of params serve:), so the service
sees the pixels training saw. Bad input is a 4xx with a JSON body {"error": ...} naming what
is wrong, never a 5xx: bodies, batches and pixels are bounded.
"""
from __future__ import annotations

import json
import time
import uuid
from collections import OrderedDict

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from skillpack.config import ServeParams
from skillpack.deploy.serving.metrics import ServiceMetrics
from skillpack.deploy.serving.model import ServedModel

RAW_TYPES = ("image/", "application/octet-stream")
PROTECTED = {"/predict", "/feedback", "/metrics"}   # behind the bearer token, when there is one

# The OpenAPI description of the bodies the handlers read raw (FastAPI's openapi_extra: the
# schema is documented, the bytes are not parsed into a model first, which keeps /predict's
# speed), and of every status the service answers with.
_BINARY = {"schema": {"type": "string", "format": "binary"}}
PREDICT_BODY = {"required": True, "description": "One image as the raw body, or one or more as multipart files",
                "content": {**{f"image/{kind}": _BINARY for kind in ("png", "jpeg", "webp", "bmp", "gif", "tiff")},
                            "application/octet-stream": _BINARY,
                            "multipart/form-data": {"schema": {
                                "type": "object", "required": ["files"],
                                "properties": {"files": {"type": "array", "items": {"type": "string",
                                                                                     "format": "binary"}}}}}}}
FEEDBACK_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["id", "label"], "additionalProperties": False,
    "properties": {"id": {"type": "string", "description": "a prediction id /predict returned"},
                   "label": {"description": "the true class, by name or index",
                             "oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]}}}}}}
_ERROR = {"content": {"application/json": {"schema": {
    "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}}}
_STATUS = {400: "malformed body or image", 401: "missing or wrong bearer token", 404: "unknown prediction id",
           413: "body, batch or image over its limit", 415: "unsupported content type",
           422: "well-formed but invalid feedback"}


def error_responses(*codes: int) -> dict:
    return {code: {"description": _STATUS[code], **_ERROR} for code in codes}


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def service_token(cfg: ServeParams, environ=None) -> str | None:
    """The bearer token from the environment variable serve.token_env; None on loopback without
    one; on any other host a ParamsError: the service does not start open to the network."""
    import os

    token = (os.environ if environ is None else environ).get(cfg.token_env) or None
    if token is None and not is_loopback(cfg.host):
        from skillpack.config import ParamsError

        raise ParamsError(f"serve.host {cfg.host} is not loopback: set a token in the environment variable "
                          f"{cfg.token_env} (serve.token_env); clients send 'Authorization: Bearer <token>'")
    return token


def authorized(request: Request, token: str | None) -> bool:
    import hmac

    if token is None or request.url.path not in PROTECTED:
        return True
    return hmac.compare_digest(request.headers.get("authorization", "").encode(), f"Bearer {token}".encode())


class BadInput(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes (Content-Length first)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadInput(413, f"body of {int(declared):,} bytes is over the limit of {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadInput(413, f"body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # starlette's cache: form() parses these bytes instead of the spent stream
    return body


def decode(data: bytes, name: str, model: ServedModel, cfg: ServeParams) -> np.ndarray:
    from skillpack.data.images import CorruptImage, ImageTooLarge, NotAnImage, decode_bytes

    h, w, c = model.image_shape
    try:
        return decode_bytes(data, h, c, max_pixels=cfg.max_pixels)
    except ImageTooLarge as err:
        raise BadInput(413, f"{name}: {err}") from None
    except (NotAnImage, CorruptImage) as err:
        raise BadInput(400, f"{name}: {err}") from None


async def images_of(request: Request, model: ServedModel, cfg: ServeParams) -> np.ndarray:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        await read_body(request, cfg.max_body_bytes)
        try:
            form = await request.form(max_files=cfg.max_batch, max_fields=cfg.max_batch)
        except Exception as err:  # python-multipart's and starlette's parse errors
            raise BadInput(400, f"multipart body: {err}") from None
        files = [(key, value) for key, value in form.multi_items() if hasattr(value, "read")]
        if not files:
            raise BadInput(400, "multipart body without a file part (send the image as a file field)")
        return np.stack([decode(await f.read(), f.filename or key, model, cfg) for key, f in files])
    if kind.startswith(RAW_TYPES):
        return decode(await read_body(request, cfg.max_body_bytes), "body", model, cfg)[None]
    raise BadInput(415, f"content type {kind or 'none'!r}: send image/* or application/octet-stream (one image), "
                        f"or multipart/form-data (one or more files)")


class Predictions:
    """The last `capacity` prediction ids and their predicted class, for /feedback."""

    def __init__(self, capacity: int):
        self.capacity, self.items = capacity, OrderedDict()

    def add(self, predicted: int) -> str:
        key = uuid.uuid4().hex
        self.items[key] = predicted
        if len(self.items) > self.capacity:
            self.items.popitem(last=False)
        return key

    def pop(self, key: str) -> int | None:
        return self.items.pop(key, None)


ENDPOINTS = {"/predict", "/feedback", "/healthz", "/readyz", "/metrics"}   # metric labels; any other path is "other"


def measured(metrics: ServiceMetrics, token: str | None):
    """The middleware: the bearer token where required, and every request's latency and status counted."""
    async def measure(request: Request, call_next):
        t0 = time.perf_counter()
        try:
            if not authorized(request, token):
                raise BadInput(401, f"{request.url.path} needs 'Authorization: Bearer <token>' (serve.token_env)")
            response = await call_next(request)
        except BadInput as err:
            response = JSONResponse({"error": err.message}, status_code=err.status)
        endpoint = request.url.path if request.url.path in ENDPOINTS else "other"
        metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        return response
    return measure


async def bad_input(request: Request, err: BadInput):
    return JSONResponse({"error": err.message}, status_code=err.status)


def predict_route(model: ServedModel, cfg: ServeParams, metrics: ServiceMetrics, remembered: Predictions):
    async def predict(request: Request):
        images = await images_of(request, model, cfg)
        if len(images) > cfg.max_batch:
            raise BadInput(413, f"{len(images)} images: at most {cfg.max_batch} per request")
        metrics.observe_images(images)
        probs = model.probabilities(images)
        top = np.argsort(-probs, axis=1)[:, :cfg.top_k]
        predicted, confidence = top[:, 0], probs[np.arange(len(probs)), top[:, 0]]
        metrics.observe_predictions(predicted, confidence)
        return {"model": {"name": model.name, "version": model.version},
                "predictions": [{"id": remembered.add(int(k)),
                                 "top_k": [{"class": model.classes[j], "probability": float(probs[i, j])} for j in row]}
                                for i, (k, row) in enumerate(zip(predicted, top))]}
    return predict


def feedback_route(model: ServedModel, metrics: ServiceMetrics, remembered: Predictions):
    async def feedback(request: Request):
        try:
            body = json.loads(await read_body(request, 4096) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadInput(400, "feedback: the body is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("id"), str) or "label" not in body:
            raise BadInput(422, 'feedback: expected {"id": "<prediction id>", "label": "<class name or index>"}')
        label = body["label"]
        if isinstance(label, str) and label in model.classes:
            label = model.classes.index(label)
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(model.classes):
            raise BadInput(422, f"feedback: label {body['label']!r} is not one of the {len(model.classes)} classes")
        predicted = remembered.pop(body["id"])
        if predicted is None:
            raise BadInput(404, f"feedback: unknown prediction id {body['id']!r} (or already labelled, or too old)")
        metrics.observe_feedback(predicted == label)
        return {"id": body["id"], "correct": predicted == label}
    return feedback


async def healthz():
    return {"status": "ok"}


def readyz_route(model: ServedModel):
    async def readyz():
        return {"status": "ready", "model": model.name, "version": model.version}
    return readyz


def metrics_route(metrics: ServiceMetrics):
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def prometheus_metrics():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
    return prometheus_metrics


def create_app(model: ServedModel, cfg: ServeParams, metrics: ServiceMetrics, token: str | None = None) -> FastAPI:
    app = FastAPI(title="skillpack", description=__doc__)
    remembered = Predictions(cfg.remembered_predictions)
    metrics.model.info({"name": model.name, "version": model.version, "source": model.source})
    app.middleware("http")(measured(metrics, token))
    app.exception_handler(BadInput)(bad_input)
    app.post("/predict", openapi_extra={"requestBody": PREDICT_BODY},
             responses=error_responses(400, 401, 413, 415))(predict_route(model, cfg, metrics, remembered))
    app.post("/feedback", openapi_extra={"requestBody": FEEDBACK_BODY},
             responses=error_responses(400, 401, 404, 413, 422))(feedback_route(model, metrics, remembered))
    app.get("/healthz")(healthz)
    app.get("/readyz")(readyz_route(model))
    app.get("/metrics", responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
                                   **error_responses(401)})(metrics_route(metrics))
    return app


def reference_distribution(model: ServedModel, test_images: np.ndarray | None,
                           batch: int) -> tuple[np.ndarray | None, float | None]:
    """Predicted-class shares and mean top-1 probability on the test set: the drift reference.
    In batches no larger than a request's: ONNX Runtime's memory arena keeps its peak."""
    if test_images is None or not len(test_images):
        return None, None
    probs = np.concatenate([model.probabilities(test_images[i:i + batch]) for i in range(0, len(test_images), batch)])
    counts = np.bincount(probs.argmax(1), minlength=len(model.classes))
    return counts / counts.sum(), float(probs.max(1).mean())


def build_service(model: ServedModel, cfg: ServeParams, test_images: np.ndarray | None = None,
                  token: str | None = None) -> FastAPI:
    from skillpack.deploy.serving.metrics import brightness_distribution

    reference, confidence = reference_distribution(model, test_images, cfg.max_batch)
    return create_app(model, cfg, ServiceMetrics(model.classes, reference, confidence, cfg.feedback_window,
                                                 cfg.drift_window, brightness_distribution(test_images)), token)
