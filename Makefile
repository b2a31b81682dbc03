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
SEEDS ?=
DATA_DIR ?=
OUTPUT ?= submission.csv
MODEL ?=
SUBMIT ?=
MESSAGE ?= kaggle-pipeline submission
PORT ?= 5000
TRIALS ?= 50
JOBS ?= 1
PARAMS ?=
STUDY ?=
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
# The competitor's loop: seconds an upload waits for its public score, a run and a hand-made
# submission to link, the K columns that most tell test from train to drop.
WAIT ?=
RUN ?=
SUBMISSION ?=
DROP_SHIFTED ?=

COMMON = $(if $(COMPETITION),--competition $(COMPETITION)) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) \
	$(if $(TARGET),--target $(TARGET)) $(if $(ID),--id $(ID)) $(if $(METRIC),--metric $(METRIC)) \
	$(if $(TIME),--time-limit $(TIME)) $(if $(REPEATS),--repeats $(REPEATS)) $(if $(SEEDS),--seeds $(SEEDS))
MODEL_ARGS = $(if $(MODEL),--model $(MODEL))
# PARAMS="alpha=1 max_iter=300": one --param KEY=VALUE each; STUDY=ignore: not the Optuna study's best trial.
PARAMS_ARGS = $(foreach param,$(PARAMS),--param $(param)) $(if $(STUDY),--study $(STUDY))
SHIFT_ARGS = $(if $(DROP_SHIFTED),--drop-shifted $(DROP_SHIFTED))
STORAGE_ARGS = $(if $(STORAGE),--storage $(STORAGE))
# Image stages on NPROC processes per machine and NNODES machines (torchrun); RESUME=0 starts afresh.
# Only what differs from the defaults: a table's command line carries no image-only flags.
DIST_ARGS = $(if $(filter-out 1,$(NPROC)),--nproc $(NPROC)) $(if $(filter-out 1,$(NNODES)),--nnodes $(NNODES)) $(if $(filter-out 0,$(NODE_RANK)),--node-rank $(NODE_RANK)) $(if $(filter-out 29500,$(MASTER_PORT)),--master-port $(MASTER_PORT)) $(if $(MASTER_ADDR),--master-addr $(MASTER_ADDR)) $(if $(filter 0,$(RESUME)),--no-resume)

.PHONY: help install data train submit ui test test-fast lint bench tune dashboard bench-tune bench-images bench-image-suite bench-tabular predict blend serve leaderboard

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  variables: COMPETITION=$(or $(COMPETITION),<DATA_DIR's name or house-prices>) DATA_DIR=<folder> OUTPUT=$(OUTPUT) MODEL=<name> SUBMIT=1"
	@echo "  no config: DATA_DIR=<folder> TARGET=<column> ID=<column> METRIC=<name, else inferred>"
	@echo "  budget:    TIME=<seconds for the whole run> REPEATS=<repeated k-fold, with the spread across repeats> SEEDS=<seeds averaged per model>"
	@echo "  images:    NPROC=$(NPROC) processes (torchrun) NNODES=$(NNODES) NODE_RANK=$(NODE_RANK) MASTER_ADDR=<host> RESUME=0"
	@echo "  tuning:    TRIALS=$(TRIALS) (the study's total) TIME=<seconds> JOBS=$(JOBS) STORAGE=<url> (or OPTUNA_STORAGE) STUDY=ignore"
	@echo "  params:    PARAMS=\"alpha=1 max_iter=300\" (model parameters: one --param KEY=VALUE each)"
	@echo "  kaggle:    COMPETITION=<Kaggle slug> (no config needed) WAIT=<s for the public score> DROP_SHIFTED=<K> RUN=<id> SUBMISSION=<ref>"

# The environment is built once, and again whenever pyproject.toml changes. Without an NVIDIA GPU
# the CPU build of torch goes in first (PyTorch's CPU index, else pip's usual sources; one line says
# which build), so the `torch>=` range then installs nothing more.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@$(PY) scripts/install_torch.py $(TORCH_CPU_VERSION)
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

install: $(VENV)/.installed ## create the virtual environment and install the package

data: $(VENV)/.installed ## fill DATA_DIR: Kaggle download with credentials, else the bundled data
	$(PY) -m pipeline data $(COMMON)

train: $(VENV)/.installed ## k-fold train the default model and log it to MLflow
	$(PY) -m pipeline train $(COMMON) $(MODEL_ARGS) $(SHIFT_ARGS) $(PARAMS_ARGS) $(DIST_ARGS)

submit: $(VENV)/.installed ## train, predict the test set, write OUTPUT (SUBMIT=1 uploads to Kaggle)
	$(PY) -m pipeline submit $(COMMON) $(MODEL_ARGS) $(SHIFT_ARGS) $(PARAMS_ARGS) $(DIST_ARGS) --output $(OUTPUT) $(if $(SUBMIT),--upload --message "$(MESSAGE)" $(if $(WAIT),--wait $(WAIT)))

REUSE_ARGS = $(if $(MODEL_URI),--model "$(MODEL_URI)") $(if $(COMPETITION),--competition $(COMPETITION)) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) \
	$(if $(TARGET),--target $(TARGET)) $(if $(ID),--id $(ID))

predict: $(VENV)/.installed ## score INPUT (default: the test file) with MODEL_URI (default models:/<competition>@champion), write OUTPUT
	$(PY) -m pipeline predict $(REUSE_ARGS) $(if $(INPUT),--input $(INPUT)) --output $(OUTPUT)

blend: $(VENV)/.installed ## combine finished runs RUNS="<run id> <run id> ..." by their out-of-fold predictions, write OUTPUT
	$(PY) -m pipeline blend $(RUNS) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(INPUT),--input $(INPUT)) --output $(OUTPUT)

leaderboard: $(VENV)/.installed ## sync public scores of uploads into their runs; CV against public, rank correlation (RUN= SUBMISSION= links one)
	$(PY) -m pipeline leaderboard $(if $(COMPETITION),--competition $(COMPETITION)) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(RUN),--run $(RUN)) $(if $(SUBMISSION),--submission $(SUBMISSION))

.PHONY: model-board importance
model-board: $(VENV)/.installed ## print the model leaderboard of a finished run RUN=<id> (its leaderboard.csv)
	$(PY) -m pipeline model-board $(RUN)

importance: $(VENV)/.installed ## add permutation importance of run RUN=<id>'s final model to it (DATA_DIR=, TIME= seconds)
	$(PY) -m pipeline importance $(RUN) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(TIME),--time-limit $(TIME))

serve: $(VENV)/.installed ## serve MODEL_URI on 127.0.0.1 only (SERVE_PORT=5001): POST rows as JSON to /invocations
	$(PY) -m pipeline serve $(REUSE_ARGS) --port $(SERVE_PORT)

ui: $(VENV)/.installed ## serve the MLflow UI on 127.0.0.1 only (PORT=5000)
	$(PY) -m pipeline ui --port $(PORT)

test: $(VENV)/.installed ## run the whole test suite, as CI does (.ci/run)
	$(PY) -m pytest

test-fast: $(VENV)/.installed ## the unit tier, minutes: no servers, subprocess CLIs, torchrun or notebooks
	$(PY) -m pytest -m "not slow and not server"

lint: $(VENV)/.installed ## ruff, the package's shape (imports, cycles, sizes) and no config field reaching code
	$(PY) -m ruff check .
	$(PY) bench/check_shape.py
	$(PY) bench/check_config_sinks.py

bench: $(VENV)/.installed ## CV log-RMSE and wall time of `make submit` on the bundled and the real Kaggle files
	$(PY) bench/house_prices.py

tune: $(VENV)/.installed ## Optuna study of MODEL until it has TRIALS finished trials or TIME s: resumes, prunes, JOBS workers
	$(PY) -m pipeline tune $(COMMON) $(MODEL_ARGS) --trials $(TRIALS) --jobs $(JOBS) $(STORAGE_ARGS)

dashboard: $(VENV)/.installed ## serve optuna-dashboard for the tuning studies on 127.0.0.1 (DASHBOARD_PORT=8080)
	$(PY) -m pipeline dashboard --port $(DASHBOARD_PORT) $(STORAGE_ARGS)

bench-tune: $(VENV)/.installed ## CV before/after tuning, trials/min and the JOBS=2 speed-up (BUDGET=<minutes>, default 15)
	$(PY) bench/bench_tune.py $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(BUDGET),--budget-minutes $(BUDGET))

bench-images: $(VENV)/.installed ## image trainer vs a d2l-style loop: examples/s, ratio, accuracy (BENCH_ARGS="--model lenet ...")
	$(PY) bench/bench_images.py $(BENCH_ARGS)

bench-image-suite: $(VENV)/.installed ## real-image suite from bench/.data (bench/image_suite.py): metric, wall time, default per task
	$(PY) bench/image_suite.py run $(if $(TIME),--time-limit $(TIME)) $(if $(TASKS),--tasks $(TASKS))

bench-tabular: $(VENV)/.installed ## ours vs AutoGluon on the public tabular suite: score, time, peak GB (TIME=600 s a fit, TASKS=a,b)
	$(PY) bench/bench_tabular.py --time $(or $(TIME),600) $(if $(TASKS),--tasks $(TASKS)) $(BENCH_ARGS)
