# kaggle-pipeline: a thin wrapper over `python -m pipeline`. `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_CPU_VERSION ?= 2.13.0

# COMPETITION: a config in pipeline/competitions/; empty: the DATA_DIR folder's name when TARGET/ID are
# given or a config has that name, else house-prices. TARGET, ID, METRIC: a competition without config.
COMPETITION ?=
TARGET ?=
ID ?=
METRIC ?=
TIME ?=
REPEATS ?=
DATA_DIR ?=
OUTPUT ?= submission.csv
MODEL ?=
SUBMIT ?=
MESSAGE ?= kaggle-pipeline submission
PORT ?= 5000
TRIALS ?= 50
TIMEOUT ?=
JOBS ?= 1
PARAMS ?=
STORAGE ?=
DASHBOARD_PORT ?= 8080
BUDGET ?=
BENCH_ARGS ?=
TASKS ?=
MODEL_URI ?=
INPUT ?=
RUNS ?=
SERVE_PORT ?= 5001
NPROC ?= 1
NNODES ?= 1
NODE_RANK ?= 0
MASTER_ADDR ?=
MASTER_PORT ?= 29500
RESUME ?=

COMMON = $(if $(COMPETITION),--competition $(COMPETITION)) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) \
	$(if $(TARGET),--target $(TARGET)) $(if $(ID),--id $(ID)) $(if $(METRIC),--metric $(METRIC)) \
	$(if $(TIME),--time-limit $(TIME)) $(if $(REPEATS),--repeats $(REPEATS))
MODEL_ARGS = $(if $(MODEL),--model $(MODEL))
PARAMS_ARGS = $(if $(PARAMS),--params $(PARAMS))
STORAGE_ARGS = $(if $(STORAGE),--storage $(STORAGE))
# Image stages on NPROC processes per machine and NNODES machines (torchrun); RESUME=0 starts afresh.
DIST_ARGS = --nproc $(NPROC) --nnodes $(NNODES) --node-rank $(NODE_RANK) --master-port $(MASTER_PORT) $(if $(MASTER_ADDR),--master-addr $(MASTER_ADDR)) $(if $(filter 0,$(RESUME)),--no-resume)

.PHONY: help install data train submit ui test lint bench tune dashboard bench-tune bench-images bench-image-suite bench-tabular predict blend serve

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  variables: COMPETITION=$(or $(COMPETITION),<DATA_DIR's name or house-prices>) DATA_DIR=<folder> OUTPUT=$(OUTPUT) MODEL=<name> SUBMIT=1"
	@echo "  no config: DATA_DIR=<folder> TARGET=<column> ID=<column> METRIC=<name, else inferred>"
	@echo "  budget:    TIME=<seconds for the whole run> REPEATS=<repeated k-fold, with the spread across repeats>"
	@echo "  images:    NPROC=$(NPROC) processes (torchrun) NNODES=$(NNODES) NODE_RANK=$(NODE_RANK) MASTER_ADDR=<host> RESUME=0"
	@echo "  tuning:    TRIALS=$(TRIALS) (the study's total) TIMEOUT=<seconds> JOBS=$(JOBS) STORAGE=<url> (or OPTUNA_STORAGE) PARAMS=default"

# The environment is built once, and again whenever pyproject.toml changes. Without an NVIDIA GPU
# the CPU build of torch goes in first, so the `torch>=` range then installs nothing more.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install -q "torch==$(TORCH_CPU_VERSION)"; fi
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

install: $(VENV)/.installed ## create the virtual environment and install the package

data: $(VENV)/.installed ## fill DATA_DIR: Kaggle download with credentials, else the bundled data
	$(PY) -m pipeline data $(COMMON)

train: $(VENV)/.installed ## k-fold train the default model and log it to MLflow
	$(PY) -m pipeline train $(COMMON) $(MODEL_ARGS) $(PARAMS_ARGS) $(DIST_ARGS)

submit: $(VENV)/.installed ## train, predict the test set, write OUTPUT (SUBMIT=1 uploads to Kaggle)
	$(PY) -m pipeline submit $(COMMON) $(MODEL_ARGS) $(PARAMS_ARGS) $(DIST_ARGS) --output $(OUTPUT) $(if $(SUBMIT),--upload --message "$(MESSAGE)")

REUSE_ARGS = $(if $(MODEL_URI),--model "$(MODEL_URI)") $(if $(COMPETITION),--competition $(COMPETITION)) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

predict: $(VENV)/.installed ## score INPUT (default: the test file) with MODEL_URI (default models:/<competition>@champion), write OUTPUT
	$(PY) -m pipeline predict $(REUSE_ARGS) $(if $(INPUT),--input $(INPUT)) --output $(OUTPUT)

blend: $(VENV)/.installed ## combine finished runs RUNS="<run id> <run id> ..." by their out-of-fold predictions, write OUTPUT
	$(PY) -m pipeline blend $(RUNS) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(INPUT),--input $(INPUT)) --output $(OUTPUT)

serve: $(VENV)/.installed ## serve MODEL_URI on 127.0.0.1 only (SERVE_PORT=5001): POST rows as JSON to /invocations
	$(PY) -m pipeline serve $(REUSE_ARGS) --port $(SERVE_PORT)

ui: $(VENV)/.installed ## serve the MLflow UI on 127.0.0.1 only (PORT=5000)
	$(PY) -m pipeline ui --port $(PORT)

test: $(VENV)/.installed ## run the test suite
	$(PY) -m pytest

lint: $(VENV)/.installed ## ruff, the package's shape (imports, cycles, sizes) and no config field reaching code
	$(PY) -m ruff check .
	$(PY) bench/check_shape.py
	$(PY) bench/check_config_sinks.py

bench: $(VENV)/.installed ## CV log-RMSE and wall time of `make submit` on the bundled and the real Kaggle files
	$(PY) bench/house_prices.py

tune: $(VENV)/.installed ## Optuna study of MODEL until it has TRIALS finished trials: resumes, prunes, JOBS workers
	$(PY) -m pipeline tune $(COMMON) $(MODEL_ARGS) --trials $(TRIALS) --jobs $(JOBS) $(if $(TIMEOUT),--timeout $(TIMEOUT)) $(STORAGE_ARGS)

dashboard: $(VENV)/.installed ## serve optuna-dashboard for the tuning studies on 127.0.0.1 (DASHBOARD_PORT=8080)
	$(PY) -m pipeline dashboard --port $(DASHBOARD_PORT) $(STORAGE_ARGS)

bench-tune: $(VENV)/.installed ## CV before/after tuning, trials/min and the JOBS=2 speed-up (BUDGET=<minutes>, default 15)
	$(PY) bench/bench_tune.py $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(BUDGET),--budget-minutes $(BUDGET))

bench-images: $(VENV)/.installed ## image trainer vs a d2l-style loop: examples/s, ratio, accuracy (BENCH_ARGS="--model lenet ...")
	$(PY) bench/bench_images.py $(BENCH_ARGS)

bench-image-suite: $(VENV)/.installed ## real-image suite from bench/.data (bench/image_suite.py): metric, wall time, default per task
	$(PY) bench/image_suite.py run $(if $(TIME),--time-limit $(TIME)) $(if $(TASKS),--tasks $(TASKS))

bench-tabular: $(VENV)/.installed ## ours vs AutoGluon on the public tabular suite: score, time, peak GB (TIME=600 s a fit, TASKS=a,b)
	$(PY) bench/bench_tabular.py --time $(or $(TIME),600) $(if $(TASKS),--tasks $(TASKS))
