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
FOLD_WORKERS ?=
CLUSTER ?=
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

# Values, never code: each variable reaches the command line as one shell word in single quotes
# (a ' inside as '\''), taken as written: a $(...) in it is not run by make, a ; or `...` not by
# the shell. PARAMS, RUNS, TASKS and BENCH_ARGS are lists: one word each. COMPETITION comes from
# the command line only: one left in the environment would pick another competition unseen.
VALUES := COMPETITION TARGET ID METRIC TIME REPEATS SEEDS FOLD_WORKERS CLUSTER DATA_DIR OUTPUT MODEL SUBMIT MESSAGE PORT \
	TRIALS JOBS PARAMS STUDY STORAGE DASHBOARD_PORT BUDGET BENCH_ARGS TASKS MODEL_URI INPUT RUNS SERVE_PORT \
	NPROC NNODES NODE_RANK MASTER_ADDR MASTER_PORT RESUME WAIT RUN SUBMISSION DROP_SHIFTED
ifeq ($(origin COMPETITION),environment)
$(warning make: COMPETITION in the environment is ignored; name it on the command line: make <target> COMPETITION=<name>)
override COMPETITION :=
endif
unexport COMPETITION
$(foreach name,$(VALUES),$(eval override $(name) := $$(value $(name))))
quote = '$(subst ','\'',$(subst $$$$,$$,$(value $(1))))'
# $(call option,--flag,NAME): "--flag 'value'" when NAME is set; each: "--flag 'word'" for each word.
option = $(if $(value $(2)),$(1) $(call quote,$(2)))
each = $(foreach word,$(subst $$$$,$$,$(value $(2))),$(1) '$(subst ','\'',$(word))')

COMMON = $(call option,--competition,COMPETITION) $(call option,--data-dir,DATA_DIR) \
	$(call option,--target,TARGET) $(call option,--id,ID) $(call option,--metric,METRIC) \
	$(call option,--time-limit,TIME) $(call option,--repeats,REPEATS) $(call option,--seeds,SEEDS) \
	$(call option,--fold-workers,FOLD_WORKERS) $(call option,--cluster,CLUSTER)
MODEL_ARGS = $(call option,--model,MODEL)
# PARAMS="alpha=1 max_iter=300": one --param KEY=VALUE each; STUDY=ignore: not the Optuna study's best trial.
PARAMS_ARGS = $(call each,--param,PARAMS) $(call option,--study,STUDY)
SHIFT_ARGS = $(call option,--drop-shifted,DROP_SHIFTED)
STORAGE_ARGS = $(call option,--storage,STORAGE)
# Image stages on NPROC processes per machine and NNODES machines (torchrun); RESUME=0 starts afresh.
# Only what differs from the defaults: a table's command line carries no image-only flags.
DIST_ARGS = $(if $(filter-out 1,$(value NPROC)),$(call option,--nproc,NPROC)) \
	$(if $(filter-out 1,$(value NNODES)),$(call option,--nnodes,NNODES)) \
	$(if $(filter-out 0,$(value NODE_RANK)),$(call option,--node-rank,NODE_RANK)) \
	$(if $(filter-out 29500,$(value MASTER_PORT)),$(call option,--master-port,MASTER_PORT)) \
	$(call option,--master-addr,MASTER_ADDR) $(if $(filter 0,$(value RESUME)),--no-resume)

.PHONY: help install data train submit ui test test-fast lint bench tune dashboard bench-tune bench-images bench-image-suite bench-tabular predict blend serve leaderboard

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@printf '  variables: COMPETITION=%s DATA_DIR=<folder> OUTPUT=%s MODEL=<name> SUBMIT=1\n' $(or $(call option,,COMPETITION),"<DATA_DIR's name or house-prices>") $(call quote,OUTPUT)
	@echo "  no config: DATA_DIR=<folder> TARGET=<column> ID=<column> METRIC=<name, else inferred>"
	@echo "  budget:    TIME=<seconds for the whole run> REPEATS=<repeated k-fold, with the spread across repeats> SEEDS=<seeds averaged per model>"
	@echo "  folds:     FOLD_WORKERS=<folds fit at once, local processes> CLUSTER=tcp://<Dask scheduler>:<port>"
	@printf '  images:    NPROC=%s processes (torchrun) NNODES=%s NODE_RANK=%s MASTER_ADDR=<host> RESUME=0\n' $(call quote,NPROC) $(call quote,NNODES) $(call quote,NODE_RANK)
	@printf '  tuning:    TRIALS=%s (the study'\''s total) TIME=<seconds> JOBS=%s STORAGE=<url> (or OPTUNA_STORAGE) STUDY=ignore\n' $(call quote,TRIALS) $(call quote,JOBS)
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
	$(PY) -m pipeline submit $(COMMON) $(MODEL_ARGS) $(SHIFT_ARGS) $(PARAMS_ARGS) $(DIST_ARGS) $(call option,--output,OUTPUT) $(if $(SUBMIT),--upload $(call option,--message,MESSAGE) $(call option,--wait,WAIT))

REUSE_ARGS = $(call option,--model,MODEL_URI) $(call option,--competition,COMPETITION) $(call option,--data-dir,DATA_DIR) \
	$(call option,--target,TARGET) $(call option,--id,ID)

predict: $(VENV)/.installed ## score INPUT (default: the test file) with MODEL_URI (default models:/<competition>@champion), write OUTPUT
	$(PY) -m pipeline predict $(REUSE_ARGS) $(call option,--input,INPUT) $(call option,--output,OUTPUT)

blend: $(VENV)/.installed ## combine finished runs RUNS="<run id> <run id> ..." by their out-of-fold predictions, write OUTPUT
	$(PY) -m pipeline blend $(call each,,RUNS) $(call option,--data-dir,DATA_DIR) $(call option,--input,INPUT) $(call option,--output,OUTPUT)

leaderboard: $(VENV)/.installed ## sync public scores of uploads into their runs; CV against public, rank correlation (RUN= SUBMISSION= links one)
	$(PY) -m pipeline leaderboard $(call option,--competition,COMPETITION) $(call option,--data-dir,DATA_DIR) $(call option,--run,RUN) $(call option,--submission,SUBMISSION)

.PHONY: model-board importance
model-board: $(VENV)/.installed ## print the model leaderboard of a finished run RUN=<id> (its leaderboard.csv)
	$(PY) -m pipeline model-board $(call quote,RUN)

importance: $(VENV)/.installed ## add permutation importance of run RUN=<id>'s final model to it (DATA_DIR=, TIME= seconds)
	$(PY) -m pipeline importance $(call quote,RUN) $(call option,--data-dir,DATA_DIR) $(call option,--time-limit,TIME)

serve: $(VENV)/.installed ## serve MODEL_URI on 127.0.0.1 only (SERVE_PORT=5001): POST rows as JSON to /invocations
	$(PY) -m pipeline serve $(REUSE_ARGS) $(call option,--port,SERVE_PORT)

ui: $(VENV)/.installed ## serve the MLflow UI on 127.0.0.1 only (PORT=5000)
	$(PY) -m pipeline ui $(call option,--port,PORT)

# pytest-xdist: one worker per core, each module's tests on one worker (its shared fixtures built
# once). On 2 cores the whole suite takes 6m41s against 12m25s in one process.
TEST_WORKERS ?= auto
TEST_ARGS = -n $(TEST_WORKERS) --dist loadscope

test: $(VENV)/.installed ## run the whole test suite, as CI does (.ci/run); TEST_WORKERS=0 for one process
	$(PY) -m pytest $(TEST_ARGS)

test-fast: $(VENV)/.installed ## the unit tier, minutes: no servers, subprocess CLIs, torchrun or notebooks
	$(PY) -m pytest $(TEST_ARGS) -m "not slow and not server"

lint: $(VENV)/.installed ## ruff, the package's shape (imports, cycles, sizes) and no config field reaching code
	$(PY) -m ruff check .
	$(PY) bench/check_shape.py
	$(PY) bench/check_config_sinks.py

bench: $(VENV)/.installed ## CV log-RMSE and wall time of `make submit` on the bundled and the real Kaggle files
	$(PY) bench/house_prices.py

tune: $(VENV)/.installed ## Optuna study of MODEL until it has TRIALS finished trials or TIME s: resumes, prunes, JOBS workers
	$(PY) -m pipeline tune $(COMMON) $(MODEL_ARGS) $(call option,--trials,TRIALS) $(call option,--jobs,JOBS) $(STORAGE_ARGS)

dashboard: $(VENV)/.installed ## serve optuna-dashboard for the tuning studies on 127.0.0.1 (DASHBOARD_PORT=8080)
	$(PY) -m pipeline dashboard $(call option,--port,DASHBOARD_PORT) $(STORAGE_ARGS)

bench-tune: $(VENV)/.installed ## CV before/after tuning, trials/min and the JOBS=2 speed-up (BUDGET=<minutes>, default 15)
	$(PY) bench/bench_tune.py $(call option,--data-dir,DATA_DIR) $(call option,--budget-minutes,BUDGET)

bench-images: $(VENV)/.installed ## image trainer vs a d2l-style loop: examples/s, ratio, accuracy (BENCH_ARGS="--model lenet ...")
	$(PY) bench/bench_images.py $(call each,,BENCH_ARGS)

bench-image-suite: $(VENV)/.installed ## real-image suite from bench/.data (bench/image_suite.py): metric, wall time, default per task
	$(PY) bench/image_suite.py run $(call option,--time-limit,TIME) $(call option,--tasks,TASKS)

bench-tabular: $(VENV)/.installed ## ours vs AutoGluon on the public tabular suite: score, time, peak GB (TIME=600 s a fit, TASKS=a,b)
	$(PY) bench/bench_tabular.py --time $(or $(if $(value TIME),$(call quote,TIME)),600) $(call option,--tasks,TASKS) $(call each,,BENCH_ARGS)
