# make run   - set up everything (venv, packages, data) and rebuild the pipeline (flows.pipeline: `dvc repro` per stage)
# make test  - set up everything and run the whole test suite: the unit and the integration tier
# make test-fast - the unit tier only (pytest -m "not integration": no process, no server, no training
#              beyond a step or two), for the edit-test loop; tests/conftest.py assigns the tiers
# All are idempotent: a second call only does what is missing.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.skillpack-installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist

export PATH := $(abspath $(VENV))/bin:$(PATH)
export OMP_WAIT_POLICY ?= PASSIVE
export DVC_NO_ANALYTICS ?= 1
export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= 1
export PREFECT_HOME ?= $(abspath .prefect)
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_UI_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export PYTHONUNBUFFERED ?= 1
# Every stage, DVC call and test is a new Python process: with PYTHONDONTWRITEBYTECODE=1 in the
# environment each one compiles torch, timm, MLflow and scikit-learn from source again (importing
# the four took 15.2 s in a fresh venv that way, 7.2 s with cached bytecode, 2-core AMD EPYC).
unexport PYTHONDONTWRITEBYTECODE

# On Linux x86-64 with Python 3.11 these releases install from the local wheel store;
# elsewhere pip picks the torch build that fits (pyproject.toml gives ranges only).
TORCH_PIN := $(shell python3 -c 'import platform,sys; print("torch==2.14.1 torchvision==0.29.1" if platform.system()=="Linux" and platform.machine()=="x86_64" and sys.version_info[:2]==(3,11) else "")' 2>/dev/null)

.PHONY: run test test-fast install data tools serve bench ablate lint clean-run
# The pipeline flow: `dvc repro` stage by stage under one MLflow parent run (Prefect's ephemeral server).
run: install data
	$(PY) -m flows.pipeline
	dvc metrics show

# Two pytest-xdist workers (one per core of the 2-core machines the limits are set for): the suite
# is mostly processes and servers starting, single-threaded work that two workers overlap. Tests
# sharing a minute-long fixture run on one worker (tests/conftest.py, SHARED_FIXTURES).
TEST_WORKERS ?= 2
test: install data tools
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

test-fast: install data
	$(PY) -m pytest -q -m "not integration"

install: $(STAMP)

# uv resolves and installs in parallel from its cache: the whole venv (torch with its CUDA libraries
# included) installed in 41 s with an empty uv cache on a 2-core AMD EPYC, where pip took 2 min 48 s
# with a warm pip cache.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv
	$(VENV)/bin/uv pip install -q --python $(PY) $(TORCH_PIN) -e '.[dev]'
	$(PY) -m skillpack.model_names
	touch $(STAMP)

# Fashion-MNIST from Debian's package when we may install it; otherwise the prepare stage
# falls back to torchvision's downloader.
data:
	@if [ ! -d $(FMNIST_DIR) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	fi
	@if [ -d $(FMNIST_DIR) ]; then echo "data: Fashion-MNIST at $(FMNIST_DIR)"; else echo "data: $(FMNIST_DIR) missing; prepare will try torchvision's download"; fi

# Prometheus + promtool for the alerting tests (a real server scrapes the service) and amtool
# (prometheus-alertmanager) for the compose stack's Alertmanager config, from Debian.
tools:
	@if ! (command -v promtool && command -v amtool) >/dev/null && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -qq prometheus prometheus-alertmanager || (apt-get update -qq && apt-get install -y -qq prometheus prometheus-alertmanager)) >/dev/null; \
	fi
	@command -v promtool >/dev/null && echo "tools: $$(promtool --version 2>&1 | head -1)" || echo "tools: promtool missing (apt-get install prometheus)"
	@command -v amtool >/dev/null && echo "tools: $$(amtool --version 2>&1 | head -1)" || echo "tools: amtool missing (apt-get install prometheus-alertmanager)"

# The inference service on the exported model (127.0.0.1:8000; Prometheus scrapes /metrics).
serve: install
	$(PY) -m skillpack.cli serve

# The default CPU ablation (reports/ablation.md, reports/claims.md), its own DVC pipeline. The result
# store (not in git) is first filled from the committed reports/ablation.json: only new runs are computed.
ablate: install data
	dvc repro validate
	$(PY) -m flows.ablation ablations/default.yaml --restore-store
	dvc repro ablations/dvc.yaml

# Long measurements (not tests): figures go to benchmarks/results/*.json and docs/benchmarks.md.
bench: install data
	$(PY) -m benchmarks.train_speed
	$(PY) -m benchmarks.time_to_accuracy
	$(PY) -m benchmarks.cleaning
	$(PY) -m benchmarks.cleaning --settings symmetric_0.2 --train-seeds 0 1 2
	$(PY) -m benchmarks.cleaning_policies
	$(PY) -m benchmarks.latency
	$(PY) -m benchmarks.serve_load

# ruff (pyproject.toml [tool.ruff]), the import layers (pyproject.toml [tool.importlinter]), the Dockerfiles
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint --failure-threshold style $(filter-out %.dockerignore,$(wildcard docker/Dockerfile.*))
