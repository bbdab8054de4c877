"""Every artifact path of the pipeline, named once, relative to the repository root.

Stages, flows and benchmarks import these names instead of each other; dvc.yaml spells the
same paths, and tests/test_dag.py fails when a stage's deps or outs in dvc.yaml disagree with
the paths its code uses.
"""
from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")
PARAMS_CHECK = Path("reports/params_check.txt")   # written by the first stage when params.yaml is valid

PREPARED = Path("data/prepared")
VALIDATION = Path("reports/validation.json")

OOF_DIR = Path("data/oof")
OOF_FILE = OOF_DIR / "oof.npz"
OOF_METRICS = Path("reports/oof.json")

CLEANED = Path("data/cleaned")
FLAGGED = Path("reports/flagged.csv")
CLEAN_METRICS = Path("reports/clean.json")
CLEAN_PLOTS = Path("reports/clean")

MODEL_FILE = Path("models/model.pt")
CHECKPOINTS = Path("models/checkpoints")
CHECKPOINT = CHECKPOINTS / "last.pt"
TRAIN_METRICS = Path("reports/train.json")
TRAIN_LOG = Path("reports/train_log.csv")

METRICS = Path("reports/metrics.json")
PER_CLASS = Path("reports/per_class.json")
CONFUSION_PNG = Path("reports/confusion.png")
CURVES_PNG = Path("reports/curves.png")
PREDICTIONS = Path("reports/predictions.csv")
EXPLAIN = Path("reports/explain")

COMPRESSED = Path("models/compressed")             # pruned.pt, pruned_distilled.pt, student.pt (first seed)
COMPRESS_METRICS = Path("reports/compress.json")   # per variant: accuracy, size, accepted or not

EXPORTED = Path("models/export")                   # model.onnx, model.int8.onnx, model_<device>.pt2, TensorRT engines
COMPRESSION_TABLE = Path("reports/compression.json")  # the accuracy-latency table, one row per variant and runtime
COMPRESSION_REPORT = Path("reports/compression.md")
MODEL_CARD = Path("reports/model_card.md")

PROMETHEUS = Path("docker/prometheus")             # alerts.yml, alerts_test.yml, prometheus.yml (stage alerts)
ALERT_RULES = PROMETHEUS / "alerts.yml"
ALERT_TESTS = PROMETHEUS / "alerts_test.yml"
SCRAPE_CONFIG = PROMETHEUS / "prometheus.yml"
PIPELINE_PROM = Path("reports/pipeline.prom")      # batch figures, node_exporter textfile-collector format

# DVC metrics: a few numbers per stage, so that `dvc metrics show` and `dvc exp show` fit a
# terminal; the stages' full reports above (strings, nested figures) are plain outputs.
DVC_METRICS = Path("reports/metrics")
OOF_DVC_METRICS = DVC_METRICS / "oof.json"
CLEAN_DVC_METRICS = DVC_METRICS / "clean.json"
TRAIN_DVC_METRICS = DVC_METRICS / "train.json"
EVALUATE_DVC_METRICS = DVC_METRICS / "evaluate.json"

REPORTS = Path("reports")
ABLATION_RESULTS = Path("ablations/results")
TUNE = Path("tune")                                # `skillpack tune`: <study>.journal, <study>/*.png
RECIPES = Path("recipes.yaml")
