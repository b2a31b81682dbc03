#!/usr/bin/env bash
# The GPU checks of the image stack, in one go, for a session that has a CUDA GPU:
#
#   bash bench/gpu_check.sh          # about 3-5 minutes on one H100
#   FULL=1 bash bench/gpu_check.sh   # also the fashion-mnist config's full 15 epochs
#
# 1. the device, torch and CUDA versions;
# 2. LeNet on synthetic Fashion-MNIST-shaped data (60 000 + 10 000 images): our trainer against
#    the d2l-style loop, examples/s and the ratio (bench/bench_images.py);
# 3. ResNet-18 (11 M parameters) the same way: throughput, wall time, accuracy;
# 4. the pipeline end to end: `submit -c fashion-mnist` (ResNet-18, fashion augmentation, label
#    smoothing, one-cycle, TTA) on the synthetic images written as IDX files (the auto-detected
#    layout), 3 epochs (FULL=1: the config's 15), with its MLflow run in a temporary folder;
# 5. the colour-photo default (whitenet, its first layer learned; bf16 autocast and channels-last
#    as every CUDA fit has them) through `submit` with no config, on synthetic photos in Kaggle's
#    CIFAR-10 layout (train/<id>.png, trainLabels.csv, sampleSubmission.csv), --time-limit 120;
# 6. --weights: those photos with the whitened whitenet (the glyph default's first layer: its
#    filters fitted on the first batch with autocast off), started from a .safetensors state dict
#    of 5 classes (the head is replaced for 10) with freeze_epochs=1 (frozen parameters under the
#    fused CUDA optimizer).
#
# Needs a Python with CUDA torch and the project's dependencies (.venv if it has CUDA, else
# $PYTHON, else python3); nothing is downloaded. Each step has a time limit and the script goes
# on after a failed step; the exit status is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ -x .venv/bin/python ] && .venv/bin/python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    PY=.venv/bin/python
else
    PY=${PYTHON:-python3}
fi
WORK=$(mktemp -d /tmp/gpu-check.XXXXXX)
failed=0
step() {  # step <title> <seconds> <command...>
    local title=$1 limit=$2
    shift 2
    echo
    echo "== $title"
    local started=$SECONDS
    if timeout "$limit" "$@"; then
        echo "-- ok in $((SECONDS - started)) s"
    else
        echo "-- FAILED (exit $?) after $((SECONDS - started)) s"
        failed=$((failed + 1))
    fi
}

echo "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
"$PY" - <<'EOF' || { echo "no usable CUDA torch for $PY: stopping"; exit 99; }
import importlib, sys
import torch
print(f"python {sys.version.split()[0]} ({sys.executable}), torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}")
if not torch.cuda.is_available():
    sys.exit("torch sees no CUDA device")
props = torch.cuda.get_device_properties(0)
print(f"device 0: {props.name}, {props.total_memory / 2**30:.0f} GiB, capability {props.major}.{props.minor}, "
      f"{props.multi_processor_count} SMs, bf16 {torch.cuda.is_bf16_supported()}")
missing = [m for m in ("numpy", "pandas", "sklearn", "mlflow", "optuna", "matplotlib")
           if importlib.util.find_spec(m) is None]
print("missing packages (steps 2-4 need them):", ", ".join(missing) if missing else "none")
EOF

step "LeNet, synthetic-fashion: ours vs the d2l loop (3 epochs, batch 128)" 300 \
    "$PY" bench/bench_images.py --data synthetic-fashion --model lenet --epochs 3 --augment none \
    --schedule constant --device cuda --repeats 2

step "ResNet-18, synthetic-fashion: ours vs the d2l loop (2 epochs, batch 256)" 420 \
    "$PY" bench/bench_images.py --data synthetic-fashion --model resnet18 --epochs 2 --batch-size 256 \
    --lr 2e-3 --augment fashion --device cuda

EPOCHS=$([ "${FULL:-0}" = 1 ] && echo 15 || echo 3)
step "write synthetic Fashion-MNIST IDX files to $WORK/fashion" 120 "$PY" - "$WORK/fashion" <<'EOF'
import gzip, sys
from pathlib import Path
sys.path.insert(0, "bench")
from bench_images import synthetic_fashion

def idx(array):
    return bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()

folder = Path(sys.argv[1])
folder.mkdir(parents=True)
X, y, X_test, y_test = synthetic_fashion()
for prefix, images, labels in (("train", X, y), ("t10k", X_test, y_test)):
    (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx(images), compresslevel=1))
    (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx(labels.astype("uint8"))))
print(f"{len(X)} train and {len(X_test)} test images in {folder}")
EOF
step "pipeline: submit -c fashion-mnist (ResNet-18 recipe, $EPOCHS epochs, holdout + refit)" 540 \
    env MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db" OPTUNA_STORAGE="$WORK/journal.log" \
    "$PY" -m pipeline submit -c fashion-mnist --data-dir "$WORK/fashion" -p "epochs=$EPOCHS" \
    --progress -o "$WORK/predictions.csv"

step "write synthetic colour photos in Kaggle's CIFAR-10 layout to $WORK/photos" 120 "$PY" - "$WORK/photos" <<'EOF'
import sys
from pathlib import Path
import numpy as np
import pandas as pd
from PIL import Image

folder = Path(sys.argv[1])
rng = np.random.default_rng(0)
templates = rng.integers(0, 256, (10, 32, 32, 3))
names = np.array(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])
for part, n in (("train", 5000), ("test", 1000)):
    (folder / part).mkdir(parents=True)
    y = rng.integers(0, 10, n)
    for i in range(n):
        pixels = (templates[y[i]] * 0.6 + rng.integers(0, 102, (32, 32, 3))).astype(np.uint8)
        Image.fromarray(pixels).save(folder / part / f"{i + 1}.png")
    frame = pd.DataFrame({"id": np.arange(1, n + 1), "label": names[y]})
    if part == "train":
        frame.to_csv(folder / "trainLabels.csv", index=False)
    else:
        frame.assign(label="cat").to_csv(folder / "sampleSubmission.csv", index=False)
print(f"5000 train and 1000 test photos in {folder}")
EOF
step "pipeline: submit with no config on the photos (the colour default, --time-limit 120)" 300 \
    env MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db" \
    "$PY" -m pipeline submit --data-dir "$WORK/photos" --target label --id id --time-limit 120 \
    -o "$WORK/photos-predictions.csv"
step "write a whitenet state dict of 5 classes to $WORK/whitenet5.safetensors" 60 \
    "$PY" -c 'import sys; from safetensors.torch import save_file; from models import registry
save_file(registry.create("whitenet", kind="vision", num_classes=5, in_channels=3, width=16).state_dict(), sys.argv[1])' \
    "$WORK/whitenet5.safetensors"
step "pipeline: --weights, whitened whitenet (the 5-class file on 10 classes: head replaced; freeze_epochs=1)" 300 \
    env MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db" \
    "$PY" -m pipeline submit --data-dir "$WORK/photos" --target label --id id --time-limit 90 \
    --weights "$WORK/whitenet5.safetensors" -p freeze_epochs=1 -p 'arch_params={"width": 16, "whiten": True}' \
    -o "$WORK/weights-predictions.csv"

echo
echo "== done: $failed failed step(s); files in $WORK"
exit "$failed"
