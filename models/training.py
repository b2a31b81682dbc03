"""One training loop for every torch model here, tabular nets and image nets alike.

In the spirit of nanoGPT and airbench: the whole dataset lives on the device, batches are drawn
by index (no DataLoader, no worker processes), and losses are summed on the device, so the host
syncs once per epoch rather than once per step. Every step sees a full batch (the remainder of
each epoch's permutation is left for later epochs), so a compiled model keeps one graph and a
batch-norm layer never sees a single row.
"""

from __future__ import annotations

import copy
import ctypes
import functools
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

Prepare = Callable[[torch.Tensor, bool], torch.Tensor]
EpochCallback = Callable[[dict[str, float]], None]


def pick_device(preferred: str | None = None) -> torch.device:
    """``preferred`` if given, else CUDA, then Apple MPS, then CPU."""
    if preferred and preferred != "auto":
        return torch.device(preferred)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@functools.cache
def keep_freed_memory_on_cpu() -> bool:
    """Make glibc keep freed blocks for reuse instead of returning them to the OS.

    By default glibc maps each large buffer (a batch's activations, a convolution's reordered
    input) fresh and unmaps it when freed, so every training step page-faults megabytes back in.
    The PyTorch CPU tuning guide's remedy is jemalloc or tcmalloc; these two ``mallopt`` calls get
    the same effect with no extra install: LeNet steps at batch 256 on this repo's 2-core CPU take
    17.5 ms instead of 26 ms. Process-wide and idempotent; a no-op (False) off glibc.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    # 32 MiB is glibc's ceiling for the mmap threshold; a fixed value also stops glibc adapting it.
    return bool(mallopt(m_mmap_threshold, 32 << 20) and mallopt(m_trim_threshold, 1 << 30))


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"  # "adam", "adamw" or "sgd" (with Nesterov momentum)
    momentum: float = 0.9
    schedule: str = "constant"  # "constant", "onecycle" or "cosine"
    early_stopping_patience: int | None = None
    bf16: bool = True  # autocast on CUDA only; CPU and MPS run in float32
    channels_last: bool = False
    compile: bool = False


def make_optimizer(params, cfg: TrainConfig, fused: bool = False) -> torch.optim.Optimizer:
    """``fused=True`` (CUDA or CPU) updates every parameter in one kernel, not a loop of small ops."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=True,
            weight_decay=cfg.weight_decay,
            fused=fused,
        )
    if cfg.optimizer == "adam":
        # d2l's recipe: Adam with L2 weight decay folded into the gradient.
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use adam, adamw or sgd")


def make_schedule(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "onecycle":
        # A quarter of the steps ramp linearly from lr/25 up to lr, the rest anneal it (cosine)
        # to zero. Written out because OneCycleLR divides by zero on runs of a few steps.
        warmup = max(1, round(0.25 * total))

        def one_cycle(step: int) -> float:
            if step < warmup:
                return 0.04 + 0.96 * step / warmup
            progress = min(step - warmup, total - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * progress))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, one_cycle)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        )
    if cfg.schedule == "constant":
        return None
    raise ValueError(f"unknown schedule {cfg.schedule!r}; use constant, onecycle or cosine")


def _identity(x: torch.Tensor, train: bool) -> torch.Tensor:
    return x


def _autocast(device: torch.device, cfg: TrainConfig):
    enabled = cfg.bf16 and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.inference_mode()
def predict(
    model: nn.Module,
    X: torch.Tensor,
    *,
    batch_size: int = 1024,
    prepare: Prepare = _identity,
    cfg: TrainConfig | None = None,
) -> torch.Tensor:
    """Model outputs for every row of ``X`` (already on the model's device), in float32."""
    cfg = cfg or TrainConfig()
    model.eval()
    outputs = []
    for start in range(0, len(X), batch_size):
        with _autocast(X.device, cfg):
            outputs.append(model(prepare(X[start : start + batch_size], False)).float())
    return torch.cat(outputs) if outputs else torch.empty(0, device=X.device)


def fit(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: nn.Module,
    cfg: TrainConfig,
    generator: torch.Generator | None = None,
    prepare: Prepare = _identity,
    X_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    val_metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    on_epoch: EpochCallback | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place on device-resident ``X``/``y``; returns one log dict per epoch.

    ``prepare(batch, train)`` turns a stored batch into model input (dtype conversion,
    normalisation, on-device augmentation). ``val_metric(outputs, targets)`` returns a 0-d tensor
    summed over the batch (for instance the number of correct predictions). ``on_epoch`` sees each
    log and may raise to stop training (an Optuna pruner does).
    """
    device = X.device
    if device.type == "cpu":
        keep_freed_memory_on_cpu()
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model, dynamic=False) if cfg.compile else model
    # Fused: one kernel for the whole update. On this repo's 2-core CPU it is also 2.5-3x faster
    # than the default foreach update (AdamW on LeNet: 0.26 against 0.71 ms a step; Adam on the
    # house-price MLP: 0.16 against 0.51 ms).
    optimizer = make_optimizer(
        model.parameters(), cfg, fused=device.type in ("cuda", "cpu")
    )
    batch_size = min(cfg.batch_size, len(X))
    steps_per_epoch = len(X) // batch_size
    scheduler = make_schedule(optimizer, cfg, steps_per_epoch)
    index_gen = generator if generator is not None else torch.Generator().manual_seed(0)

    history: list[dict[str, float]] = []
    best_loss, best_state, epochs_since_best = math.inf, None, 0
    for epoch in range(cfg.epochs):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(len(X), generator=index_gen).to(device)
        loss_sum = torch.zeros((), device=device)
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            with _autocast(device, cfg):
                loss = loss_fn(step_model(prepare(X[idx], True)), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            loss_sum += loss.detach().float()

        train_loss = float(loss_sum) / steps_per_epoch  # the one host sync: waits for the device
        log = {
            "epoch": epoch,
            "train_loss": train_loss,
            "lr": optimizer.param_groups[0]["lr"],
            "examples_per_sec": steps_per_epoch * batch_size / (time.perf_counter() - started),
        }
        if X_val is not None and y_val is not None:
            outputs = predict(model, X_val, batch_size=4 * batch_size, prepare=prepare, cfg=cfg)
            log["val_loss"] = float(loss_fn(outputs, y_val))
            if val_metric is not None:
                log["val_metric"] = float(val_metric(outputs, y_val)) / len(X_val)
        history.append(log)
        if on_epoch is not None:
            on_epoch(log)

        if cfg.early_stopping_patience is not None and "val_loss" in log:
            if log["val_loss"] < best_loss:
                best_loss, epochs_since_best = log["val_loss"], 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                epochs_since_best += 1
                if epochs_since_best > cfg.early_stopping_patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


def as_tensor(array: Any, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype).to(device)
