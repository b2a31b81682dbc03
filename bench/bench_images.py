"""Our trainer against a d2l-style training loop: same model, data, batch size, device and lr.

    python bench/bench_images.py          # the default digit model on the bundled digits
    python bench/bench_images.py --model lenet --epochs 2 --batch-size 256 --augment none
    python bench/bench_images.py --data synthetic-fashion --model resnet18 --device cuda

Ours is ``models.image.ImageClassifier``: uint8 images resident on the device, batches drawn by
index and normalised (and augmented) there, losses summed on the device, AdamW with a one-cycle
schedule, bf16 and channels-last on CUDA. The reference is the loop of d2l's ``train_ch6``: a
``DataLoader`` over a ``TensorDataset`` of float images, ``.to(device)`` per batch, per-batch
``loss.item()``/``float()`` metrics, the same optimizer at a constant learning rate.
Throughput counts training steps only; both evaluate on the test images after training.
Every run is a fresh process, so that no loop inherits another's allocator state or warm caches.
Two more lines run ours checkpointing every epoch (the milliseconds a save takes, and its share
of an epoch) and ours on two processes under torchrun (DDP; ``--no-scaling`` skips both).
On a CPU a further line runs the reference with the glibc setting our trainer makes
(``models.training.keep_freed_memory_on_cpu``), to show what the loop itself is worth.
On a CPU shared with other work, ``--threads 1 --repeats 3`` gives steadier numbers: two
intra-op threads stall whenever another process holds one of the cores.

On a CPU both loops spend most of each step in the same convolution, pooling and activation
kernels (oneDNN's convolutions alone take 11 of our 18 ms per LeNet step at batch 256), so ours
wins only what is outside them: memory reused rather than page-faulted back every step,
channels-last convolutions, the fused AdamW update, no DataLoader, no per-step host syncs. For
LeNet on this repo's 2-core EPYC that is 1.3x to 1.45x. ``torch.compile`` adds nothing there
(inductor keeps the oneDNN convolutions that dominate). The device-resident design pays off on a
GPU: ``bench/gpu_check.sh`` measures it there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import distributed, registry  # noqa: E402
from models.image import ImageClassifier  # noqa: E402
from models.training import (  # noqa: E402
    TrainConfig,
    keep_freed_memory_on_cpu,
    make_optimizer,
    pick_device,
    seed_everything,
)
from models.vision import parameter_count  # noqa: E402
from pipeline.data.bundled import bundled_digits  # noqa: E402


def synthetic_fashion(n_train: int = 60_000, n_test: int = 10_000, seed: int = 0):
    """Fashion-MNIST's shape (uint8 28×28, 10 classes) with learnable stand-in content: each class
    is a blocky random template, each image its template plus noise."""
    rng = np.random.default_rng(seed)
    templates = np.kron(rng.integers(0, 256, (10, 7, 7), dtype=np.uint8), np.ones((4, 4), np.uint8))
    y = rng.integers(0, 10, n_train + n_test)
    noise = rng.integers(0, 256, (n_train + n_test, 28, 28), dtype=np.uint8)
    X = templates[y] // 5 * 3 + noise // 5 * 2  # 60% template, 40% noise, still uint8
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def load(data: str, seed: int):
    if data == "digits":
        digits = bundled_digits(seed)
        return digits.X_train, digits.y_train, digits.X_test, digits.y_test
    return synthetic_fashion(seed=seed)


def run_ours(args, X_train, y_train, X_test, y_test) -> dict[str, float]:
    clf = ImageClassifier(
        arch=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        optimizer=args.optimizer,
        schedule=args.schedule,
        augment=False if args.augment == "none" else args.augment,
        device=args.device,
        seed=args.seed,
        compile=args.compile,
    )
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        clf.fit(X_train, y_train, checkpoint=Path(tmp) / "run.pt" if args.loop == "ours+checkpoint" else None)
        seconds = time.perf_counter() - started
        size = (Path(tmp) / "run.pt").stat().st_size if args.loop == "ours+checkpoint" else 0
    # Every epoch trains the same number of examples, so the overall rate is the harmonic mean.
    rate = len(clf.history_) / sum(1 / log["examples_per_sec"] for log in clf.history_)
    accuracy = float((clf.predict(X_test) == y_test).mean())
    saves = [log["checkpoint_seconds"] for log in clf.history_ if "checkpoint_seconds" in log]
    return {"examples_per_sec": rate, "accuracy": accuracy, "epoch_seconds": seconds / len(clf.history_),
            "checkpoint_seconds": float(np.mean(saves)) if saves else 0.0, "checkpoint_bytes": size}


def run_reference(args, X_train, y_train, X_test, y_test) -> dict[str, float]:
    device = pick_device(args.device)
    seed_everything(args.seed)  # the same initial weights as ours
    model = registry.create(args.model, kind="vision", num_classes=10).to(device)
    mean, std = X_train.mean() / 255, X_train.std() / 255

    def as_dataset(X, y):
        images = (torch.as_tensor(X, dtype=torch.float32)[:, None] / 255 - mean) / std
        return TensorDataset(images, torch.as_tensor(y, dtype=torch.long))

    train_iter = DataLoader(as_dataset(X_train, y_train), batch_size=args.batch_size, shuffle=True)
    test_iter = DataLoader(as_dataset(X_test, y_test), batch_size=args.batch_size)
    cfg = TrainConfig(optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay)
    optimizer = make_optimizer(model.parameters(), cfg)
    loss = nn.CrossEntropyLoss()
    seconds, examples = 0.0, 0
    for _ in range(args.epochs):
        model.train()
        metric = [0.0, 0.0, 0]  # loss sum, correct, examples
        started = time.perf_counter()
        for X, y in train_iter:
            X, y = X.to(device), y.to(device)
            y_hat = model(X)
            batch_loss = loss(y_hat, y)
            optimizer.zero_grad()
            batch_loss.backward()
            optimizer.step()
            with torch.no_grad():
                metric[0] += batch_loss.item() * X.shape[0]
                metric[1] += float((y_hat.argmax(dim=1) == y).sum())
                metric[2] += X.shape[0]
        seconds += time.perf_counter() - started
        examples += metric[2]
    model.eval()
    correct = 0.0
    with torch.no_grad():
        for X, y in test_iter:
            X, y = X.to(device), y.to(device)
            correct += float((model(X).argmax(dim=1) == y).sum())
    return {"examples_per_sec": examples / seconds, "accuracy": correct / len(y_test)}


def warm_up(device: torch.device) -> None:
    """One optimizer step, so that neither timed loop pays for torch's lazy imports and set-up."""
    model = nn.Linear(4, 2).to(device)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 4, device=device)).sum().backward()
    optimizer.step()


LOOPS = {
    "ours": "ours ({schedule}, ImageClassifier)",
    "ours+checkpoint": "ours, checkpointing every epoch",
    "ours-nproc2": "ours, NPROC=2 (torchrun, DDP)",
    "reference": "reference (d2l loop, constant lr)",
    "reference+allocator": "reference, with our CPU allocator setting",
}
RESULT_PREFIX = "bench-result: "


def run_one(args) -> dict[str, float]:
    """One loop, timed, in this (fresh) process."""
    if args.threads:
        torch.set_num_threads(args.threads)
    X_train, y_train, X_test, y_test = load(args.data, args.seed)
    warm_up(pick_device(args.device))
    if args.loop == "reference+allocator":
        keep_freed_memory_on_cpu()  # ours sets it inside fit(); the plain reference never does
    run = run_ours if args.loop.startswith("ours") else run_reference
    started = time.perf_counter()
    with distributed.process_group():  # NPROC=2: this is one of torchrun's two processes
        result = run(args, X_train, y_train, X_test, y_test)
    result["seconds"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet_bn")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--optimizer", default="adamw", choices=["adamw", "adam", "sgd"])
    parser.add_argument(
        "--schedule", default="onecycle", choices=["onecycle", "cosine", "constant"]
    )
    parser.add_argument("--augment", default="shift", choices=["none", "shift", "fashion"])
    parser.add_argument("--data", default="digits", choices=["digits", "synthetic-fashion"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs; best counts")
    parser.add_argument("--threads", type=int, help="CPU threads for both loops (torch's default)")
    parser.add_argument("--no-scaling", action="store_true",
                        help="skip the NPROC=2 and the checkpointing runs of ours")
    parser.add_argument("--loop", choices=list(LOOPS), help=argparse.SUPPRESS)  # one child run
    args = parser.parse_args()

    if args.loop:
        result = run_one(args)
        if os.environ.get("RANK", "0") == "0":
            print(RESULT_PREFIX + json.dumps(result))
        return

    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{torch.get_num_threads()} threads"
    )
    params = parameter_count(registry.create(args.model, kind="vision", num_classes=10))
    print(f"device: {device} ({name}), torch {torch.__version__}")
    print(
        f"data: {args.data}, {args.epochs} epochs; model {args.model} ({params:,} parameters), "
        f"batch {args.batch_size}, {args.optimizer} lr {args.lr:g}, augment {args.augment}"
    )
    loops = dict(LOOPS)
    if device.type != "cpu":
        del loops["reference+allocator"]  # the allocator setting is for CPU memory only
        del loops["ours-nproc2"]  # two processes on one GPU measure nothing useful
    if args.no_scaling:
        del loops["ours+checkpoint"]
        loops.pop("ours-nproc2", None)
    # Each run is a fresh process, so no loop inherits another's allocator state, caches or
    # warm-up. On a shared machine background load swings throughput; with --repeats the loops
    # alternate and each keeps its fastest run (training is seeded, so accuracy never changes).
    results: dict[str, dict[str, float]] = {}
    for _ in range(args.repeats):
        for loop in loops:
            command = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:], "--loop", loop]
            if loop == "ours-nproc2":  # the same command on two processes, one thread each
                command[1:1] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
            child = subprocess.run(command, capture_output=True, text=True)
            if child.returncode != 0:
                sys.exit(f"the {loop} run failed (exit {child.returncode}):\n{child.stderr[-3000:]}")
            result = json.loads(child.stdout.rsplit(RESULT_PREFIX, 1)[1])
            best = results.get(loop)
            if best is None or result["examples_per_sec"] > best["examples_per_sec"]:
                results[loop] = result
    print(f"{'':<44}{'examples/s':>12}{'test acc':>10}{'wall s':>9}")
    for loop, title in loops.items():
        r = results[loop]
        print(
            f"{title.format(schedule=args.schedule):<44}"
            f"{r['examples_per_sec']:>12,.0f}{r['accuracy']:>10.4f}{r['seconds']:>9.1f}"
        )
    ours = results["ours"]["examples_per_sec"]
    print(f"throughput ratio ours / reference: {ours / results['reference']['examples_per_sec']:.2f}x")
    if "reference+allocator" in results:
        same_allocator = ours / results["reference+allocator"]["examples_per_sec"]
        print(f"  against the reference with our allocator setting: {same_allocator:.2f}x")
    if "ours+checkpoint" in results:
        r = results["ours+checkpoint"]
        print(f"checkpoint every epoch: {1000 * r['checkpoint_seconds']:.1f} ms a save "
              f"({r['checkpoint_bytes'] / 1e6:.2f} MB), {100 * r['checkpoint_seconds'] / r['epoch_seconds']:.1f}% "
              f"of an epoch of {r['epoch_seconds']:.2f} s")
    if "ours-nproc2" in results:
        two = results["ours-nproc2"]["examples_per_sec"]
        print(f"NPROC=2 / NPROC=1: {two / ours:.2f}x (each process batch {args.batch_size}, one thread; "
              f"effective batch {2 * args.batch_size}, lr x sqrt(2) for adam/adamw, x 2 for sgd)")
    if args.augment != "none":
        print(f"  ours also augments every batch ({args.augment}), the reference does not: "
              "--augment none compares equal work")


if __name__ == "__main__":
    main()
