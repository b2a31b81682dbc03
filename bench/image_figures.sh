#!/usr/bin/env bash
# Every figure issue 32's "Must show" still needs, one process at a time, on a quiet machine:
#   (a) digits-png (real digits as 32×32 RGB PNG, class names), no config, one run;
#   (b) digits (the pixel-CSV digits, the digit-recognizer config), one run;
#   (c) cifar-kaggle (CIFAR-10 in Kaggle's layout, 4,000 train), no config, seeds 0,1,2;
#   (d) cifar-kaggle-20k (20,000 train), one run: only with WITH_20K=1 (see the time below);
#   (e) natural-kaggle (8 classes of other photos, 4,000 train), no config, seeds 0,1,2;
# each at --time-limit 180, in its own process and MLflow store (bench/image_suite.py run), and
# ends with a table of every run (task, seed, accuracy on the held-back test labels, wall s) and
# each seeded task's mean ± std.
#
#     bench/image_figures.sh                  # (a) (b) (c) (e): 8 runs
#     WITH_20K=1 bench/image_figures.sh       # and (d): 9 runs
#     TIME=20 SEEDS=0 ONLY=e bench/image_figures.sh   # a smoke run of one step
#
# Wall time: a run ends within its --time-limit (the limit counts the whole process), so 8 runs
# of 180 s are 24 minutes, with about a minute more to build the tasks the first time (5,000
# images each from bench/.data/; see bench/image_suite.py): about 25 minutes. (d) adds 3 minutes
# of run and about a minute to write and first decode 21,000 PNGs, so about 29 minutes with it:
# that is why it is left out unless asked for.
#
# The sources must be under bench/.data/ (bench/image_suite.py's docstring says where from); a
# task whose files are missing says so and is skipped. The machine's load is printed first: on a
# busy machine every figure is lower than on a quiet one.
set -euo pipefail
cd "$(dirname "$0")/.."

TIME=${TIME:-180}
SEEDS=${SEEDS:-0,1,2}
ONLY=${ONLY:-a b c d e}
WITH_20K=${WITH_20K:-0}
OUT=${OUT:-bench/.results/images}
PYTHON=${PYTHON:-.venv/bin/python}
export PYTHONPATH=$PWD

mkdir -p "$OUT"
record=$(mktemp "$OUT/figures-XXXXXX.jsonl")
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores; --time-limit $TIME; runs recorded in $record"

step() {  # letter, then bench/image_suite.py run's options
  local letter=$1
  shift
  [[ " $ONLY " == *" $letter "* ]] || return 0
  echo "== ($letter) $*"
  "$PYTHON" bench/image_suite.py run "$OUT" --time-limit "$TIME" --record "$record" "$@"
}

step a --tasks digits-png
step b --tasks digits
step c --tasks cifar-kaggle --seeds "$SEEDS"
if [[ $WITH_20K == 1 ]]; then
  step d --tasks cifar-kaggle-20k
fi
step e --tasks natural-kaggle --seeds "$SEEDS"

echo "== summary (--time-limit $TIME, load average now $(cut -d' ' -f1 /proc/loadavg))"
"$PYTHON" bench/image_suite.py summary --record "$record"
