# sbert_exp: every target is one command; `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
UI_PORT ?= 5000
MLFLOW_BACKEND ?= sqlite:///mlflow.db
MLFLOW_HOST ?= 127.0.0.1

export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: help install assets assets-mpnet assets-libreoffice sweep report train test test-slow test-all bench lint ui mlflow-server cluster-up cluster-down clean

help: ## Show the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-19s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[dev]" --config-settings editable_mode=compat
	touch $@

install: $(INSTALLED) ## Create .venv and install the package, its pinned deps and dev tools

assets: $(INSTALLED) ## Prepare the embedded models and data (checked by SHA-256 on every call)
	$(PY) -m sbert_exp.data.assets prepare

assets-mpnet: $(INSTALLED) ## Prepare the optional mpnet_base model (about 400 MB)
	$(PY) -m sbert_exp.data.assets prepare mpnet_base

assets-libreoffice: $(INSTALLED) ## Prepare the optional Hindi and Marathi LibreOffice text (Debian's apt-get; skipped without it)
	$(PY) -m sbert_exp.data.assets prepare libreoffice --skip-unavailable

sweep: assets ## Default sweep: keep 2,6,12 x strategy top,middle,bottom on e5_small (more: ARGS="...")
	$(PY) -m sbert_exp.train -m pruning.keep=2,6,12 pruning.strategy=top,middle,bottom $(ARGS)

report: $(INSTALLED) ## Table, plots and the model to ship of the latest sweep (ARGS="--max-mb 100")
	$(PY) -m sbert_exp.report $(ARGS)

train: assets ## One job with the default config (override with ARGS="pruning.keep=2")
	$(PY) -m sbert_exp.train $(ARGS)

test: assets ## Fast tests: the tiny model built in a temp dir, a few minutes
	$(PY) -m pytest -m "not slow"

test-slow: assets ## Slow tests: real embedded models, subprocess sweeps, fault injection
	$(PY) -m pytest -m slow

test-all: assets ## Every test, both tiers (CI runs make test, then make test-slow)
	$(PY) -m pytest

bench: assets ## Speed benchmarks: ratios measured side by side, written to bench/results/
	$(PY) bench/run.py

lint: $(INSTALLED) ## Check style with ruff, and the package's layers with import-linter
	$(VENV)/bin/ruff check sbert_exp tests bench
	$(VENV)/bin/lint-imports

ui: $(INSTALLED) ## Serve the MLflow UI over mlflow.db on http://127.0.0.1:5000 (UI_PORT=...)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port $(UI_PORT) --workers 1

mlflow-server: $(INSTALLED) ## Shared tracking server for jobs on many machines (MLFLOW_BACKEND=postgresql://..., MLFLOW_HOST=0.0.0.0)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow server --backend-store-uri $(MLFLOW_BACKEND) --artifacts-destination ./mlartifacts --host $(MLFLOW_HOST) --port $(UI_PORT) --workers 2

cluster-up: $(INSTALLED) ## A one-node cluster here: PostgreSQL, an MLflow server on it, SLURM with accounting (root; state in .cluster/)
	bash cluster/up.sh

cluster-down: ## Stop what cluster-up started (its state stays in .cluster/)
	bash cluster/down.sh

clean: ## Remove outputs, sweeps and the MLflow store (keeps .venv and prepared assets)
	rm -rf outputs multirun/*/ mlflow.db .sbert_exp-*.lock .sbert_exp-locks mlartifacts .pytest_cache
