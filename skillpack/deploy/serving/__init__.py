"""The inference service: `skillpack serve` (FastAPI + uvicorn) on the exported ONNX model,
with Prometheus metrics (skillpack.deploy.serving.metrics) and bounded, validated input."""
