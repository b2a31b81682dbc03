"""``ImageClassifier``: any registered vision architecture as a scikit-learn classifier.

The training images stay on the device as uint8 (Fashion-MNIST's 60 000 images are 47 MB);
``features.images.make_prepare`` normalises, augments and resizes each batch there.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn

from features.images import make_prepare, pixel_mean_std, to_image_batch
from models import checkpoints, distributed, registry
from models import weights as weight_files
from models.time_limit import TimeLimit
from models.training import (
    EpochCallback,
    TrainConfig,
    as_tensor,
    fit,
    pick_device,
    predict,
    seed_everything,
    time_steps,
)

# ``epochs="auto"``: the one-cycle schedule is planned from measured step times to fill the fit's
# ``time_limit``, else a default time for the training set's size (``default_time_limit``: on
# real handwritten digits, README "Image competitions").
SECONDS_PER_IMAGE = 0.02
DEFAULT_TIME_LIMIT = (20.0, 1800.0)  # the default time's floor and ceiling, seconds
AUTO_EPOCHS_MAX = 60  # a fast device stops here rather than fill the time with passes that no longer pay
PLAN_MARGIN = 0.9  # plan the epochs to fill this share of the time: per-epoch costs the probe misses


def default_time_limit(n_images: int) -> float:
    """Seconds ``epochs="auto"`` trains for without a ``time_limit``: SECONDS_PER_IMAGE each, clamped."""
    low, high = DEFAULT_TIME_LIMIT
    return float(min(high, max(low, SECONDS_PER_IMAGE * n_images)))


def count_correct(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=1) == targets).sum()


class ImageClassifier(ClassifierMixin, BaseEstimator):
    """Trains ``arch`` (a vision model in ``models.registry``) on uint8 images.

    X is (N, 784), (N, 28, 28) or (N, 1, 28, 28) with whole pixel values 0..255. ``augment`` is
    False, "shift" (random shifts: digits) or "fashion"/True (shifts, mirror, random erasing);
    ``tta`` averages the logits of each image and its mirror image (for Fashion-MNIST, not digits);
    ``tta="auto"`` does so where it scores better on the held-out images (the last ``history_``
    entry has both, ``val_accuracy`` and ``val_accuracy_mirror_tta``), and not without them.
    ``arch_params`` go to the architecture's factory; its ``resize`` also resizes every batch.
    The defaults with ``augment="shift"`` are the default digit model: LeNet-BN, AdamW at 1e-2
    on a one-cycle schedule, 15 epochs of 128 (98.9% on the bundled digits' test images).

    ``time_limit`` (seconds for the whole ``fit``) times a few training steps first and plans the
    epoch count, and with it the one-cycle schedule, to fit (at least one epoch): ``epochs="auto"``
    fills it (:func:`default_time_limit` of the training set's size when there is no limit), a
    number of epochs is cut to it. Training then stops after the epoch past which the next would
    not fit. With held-out images and ``early_stopping_patience`` the best epoch's weights are
    kept. ``epochs_`` is the count planned and ``epoch_plan_`` how it was reached (its ``"note"``
    says what the time limit cut).

    ``weights``: a ``.safetensors`` or ``.pt`` state dict to start from (``models.weights``): the
    tensors that match by name and shape are copied, the head is fresh where the class count
    differs; ``freeze_epochs``: that many first epochs train only what the file did not give.
    ``weights_`` says what was copied. ``images_per_second``: the training speed an earlier fit
    measured over its epochs (a refit's, from its validation fit), which plans a fit without
    held-out images instead of a probe of a few steps (one slow moment on a shared CPU would
    otherwise plan a third of the epochs).
    """

    def __init__(
        self,
        arch: str = "lenet_bn",
        epochs: int | str = 15,
        batch_size: int = 128,
        lr: float = 1e-2,
        weight_decay: float = 5e-4,
        optimizer: str = "adamw",
        schedule: str = "onecycle",
        label_smoothing: float = 0.0,
        augment: bool | str = False,
        tta: bool | str = False,
        early_stopping_patience: int | None = None,
        device: str = "auto",
        seed: int = 0,
        compile: bool = False,
        arch_params: dict | None = None,
        time_limit: float | None = None,
        weights: str | None = None,
        freeze_epochs: int = 0,
        images_per_second: float | None = None,
    ):
        self.arch = arch
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.optimizer = optimizer
        self.schedule = schedule
        self.label_smoothing = label_smoothing
        self.augment = augment
        self.tta = tta
        self.early_stopping_patience = early_stopping_patience
        self.device = device
        self.seed = seed
        self.compile = compile
        self.arch_params = arch_params
        self.time_limit = time_limit
        self.weights = weights
        self.freeze_epochs = freeze_epochs
        self.images_per_second = images_per_second

    def fit(self, X, y, X_val=None, y_val=None, on_epoch: EpochCallback | None = None,
            checkpoint: str | os.PathLike | None = None, limit: TimeLimit | None = None):
        """Train from scratch; ``on_epoch`` sees each ``history_`` entry and may raise to stop.

        ``checkpoint``: a file saved every epoch and continued from when it exists
        (``models.training.fit``). ``limit``: the run's, which this fit ends within too (and whose
        clock it reads). Under ``torchrun`` every rank calls this with the same data.
        """
        limit = (limit or TimeLimit(None, reserve=0.0)).within(self._check_time_limit())
        images, y = to_image_batch(X), np.asarray(y)
        if len(images) != len(y) or len(y) == 0:
            raise ValueError(f"{len(images)} images, {len(y)} labels: need as many, at least one")
        self.classes_, targets = np.unique(y, return_inverse=True)
        generator = seed_everything(self.seed)
        device = pick_device(self.device)
        self.model_ = self._build_model(images.shape[1])
        self.weights_ = weight_files.load_into(self.model_, self.weights, freeze=self.freeze_epochs > 0) \
            if self.weights else None
        self.model_.to(device)
        X_t = as_tensor(images, device, torch.uint8)
        self.pixel_mean_, self.pixel_std_ = pixel_mean_std(X_t)
        X_val_t = y_val_t = None
        if X_val is not None and y_val is not None:
            X_val_t = as_tensor(to_image_batch(X_val), device, torch.uint8)
            y_val_t = as_tensor(self._class_indices(y_val), device, torch.long)

        augment = "fashion" if self.augment is True else self.augment or None
        self.history_: list[dict[str, float]] = []

        def record(log: dict[str, float]) -> None:
            if "val_metric" in log:
                log["val_accuracy"] = log.pop("val_metric")
            self.history_.append(log)
            if self.weights_ is not None and log["epoch"] + 1 == self.freeze_epochs:
                weight_files.unfreeze(self.model_, self.weights_)
            if on_epoch is not None:
                on_epoch(log)

        y_t = as_tensor(targets, device, torch.long)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)
        cfg = self._train_config(device)
        cfg.epochs, limit = self._plan_epochs(cfg, X_t, y_t, loss_fn, augment, X_val_t, checkpoint, limit)
        fit(
            self.model_,
            X_t,
            y_t,
            loss_fn=loss_fn,
            cfg=cfg,
            generator=generator,
            prepare=self._prepare(augment),
            X_val=X_val_t,
            y_val=y_val_t,
            val_metric=count_correct,
            on_epoch=record,
            checkpoint=checkpoint,
            limit=limit,
        )
        self.tta_ = False  # "auto" without held-out images: no TTA
        if self.tta == "auto" and X_val_t is not None and self.history_:
            self.history_[-1]["val_accuracy_mirror_tta"] = float(count_correct(self._logits(X_val_t, tta=True),
                                                                               y_val_t)) / len(y_val_t)
            self.history_[-1]["val_accuracy"] = float(count_correct(self._logits(X_val_t, tta=False),
                                                                    y_val_t)) / len(y_val_t)  # the final weights'
            self.tta_ = self.history_[-1]["val_accuracy_mirror_tta"] > self.history_[-1]["val_accuracy"]
        return self

    def _check_time_limit(self) -> float | None:
        seconds = self.time_limit
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0):
            raise ValueError(f"time_limit={seconds!r}: a positive number of seconds or None")
        return seconds

    def _plan_epochs(self, cfg: TrainConfig, X_t: torch.Tensor, y_t: torch.Tensor, loss_fn: nn.Module,
                     augment: str | None, X_val_t: torch.Tensor | None, checkpoint,
                     limit: TimeLimit) -> tuple[int, TimeLimit]:
        """The epoch count and the limit training keeps to; sets ``epochs_`` and ``epoch_plan_``."""
        auto = self.epochs == "auto"
        if not auto and not (isinstance(self.epochs, int) and not isinstance(self.epochs, bool) and self.epochs >= 1):
            raise ValueError(f"epochs={self.epochs!r}: a positive whole number or 'auto'")
        shard = len(X_t) // distributed.world_size()
        if auto and not limit.limited:
            limit = limit.within(default_time_limit(len(X_t)))  # the whole set's, however many processes share it
        plan: dict = {"requested": self.epochs, "epochs": AUTO_EPOCHS_MAX if auto else self.epochs, "note": "",
                      "time_limit": limit.seconds}
        saved = None  # a resumed run keeps the count it planned: its schedule was built on it
        if checkpoint is not None and limit.limited:
            saved = distributed.broadcast_object(
                checkpoints.load(checkpoint).get("epochs")
                if distributed.is_main() and os.path.exists(checkpoint) else None)
        if saved is not None:
            plan.update(epochs=int(saved), note=f"resumed: {int(saved)} epochs, as planned")
        elif limit.limited:
            if self.images_per_second and X_val_t is None:
                step_s, eval_s = min(cfg.batch_size, shard) * distributed.world_size() / self.images_per_second, 0.0
            else:
                step_s, eval_s = time_steps(self.model_, X_t, y_t, loss_fn=loss_fn, cfg=cfg,
                                            prepare=self._prepare(augment), X_val=X_val_t, clock=limit.clock)
            epoch_s = shard // max(1, min(cfg.batch_size, shard)) * step_s + eval_s
            fits = max(1, int(distributed.broadcast_object(limit.left() * PLAN_MARGIN / epoch_s)))
            plan.update(step_seconds=step_s, epoch_seconds=epoch_s, limit_epochs=fits)
            if auto:
                plan["epochs"] = min(fits, AUTO_EPOCHS_MAX)
                plan["note"] = f"{plan['epochs']} epochs in {limit.seconds:.0f} s (about {epoch_s:.2f} s an epoch)"
            elif fits < self.epochs:
                plan.update(epochs=fits, note=f"time_limit {limit.seconds:g} s: {fits} epochs instead of "
                                              f"{self.epochs} (about {epoch_s:.2f} s an epoch)")
        self.epochs_, self.epoch_plan_ = plan["epochs"], plan
        return plan["epochs"], limit

    def predict_proba(self, X) -> np.ndarray:
        return torch.softmax(self._logits(X), dim=1).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        return self.classes_[self._logits(X).argmax(dim=1).cpu().numpy()]

    def state_dict(self) -> dict:
        """Weights, classes and pixel statistics; ``torch.load(weights_only=True)`` reads them."""
        check_is_fitted(self, "model_")
        return {
            "model": self.model_.state_dict(),
            "classes": self.classes_.tolist(),
            "pixel_mean": self.pixel_mean_,
            "pixel_std": self.pixel_std_,
        }

    def load_state_dict(self, state: dict, in_channels: int = 1) -> ImageClassifier:
        """Rebuild the fitted model from ``state_dict()`` output (same ``arch``/``arch_params``)."""
        self.classes_ = np.asarray(state["classes"])
        self.pixel_mean_, self.pixel_std_ = state["pixel_mean"], state["pixel_std"]
        self.model_ = self._build_model(in_channels)
        self.model_.load_state_dict(state["model"])
        self.model_.to(pick_device(self.device))
        return self

    def _build_model(self, in_channels: int) -> nn.Module:
        return registry.create(
            self.arch,
            kind="vision",
            num_classes=len(self.classes_),
            in_channels=in_channels,
            **(self.arch_params or {}),
        )

    def _train_config(self, device: torch.device) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            optimizer=self.optimizer,
            schedule=self.schedule,
            early_stopping_patience=self.early_stopping_patience,
            # Channels-last suits tensor cores, and oneDNN's CPU convolutions too. Per training
            # step on a 2-core EPYC: LeNet 19.6 against 25.9 ms, ResNet-18 1.70 against 1.81 s,
            # but LeNet-BN 19.8 against 15.0 ms (batch norm over 6 channels is slow in this
            # layout). MPS is left as it is, unmeasured.
            channels_last=device.type != "mps",
            compile=self.compile,
        )

    def _prepare(self, augment: str | None = None):
        return make_prepare(
            mean=self.pixel_mean_,
            std=self.pixel_std_,
            resize=(self.arch_params or {}).get("resize"),
            augment=augment,
            seed=self.seed + 7919 * distributed.rank(),  # each rank its own draws
        )

    def _class_indices(self, y) -> np.ndarray:
        y = np.asarray(y)
        indices = np.searchsorted(self.classes_, y)
        indices = np.clip(indices, 0, len(self.classes_) - 1)
        if not np.array_equal(self.classes_[indices], y):
            unknown = sorted(set(y.tolist()) - set(self.classes_.tolist()))
            raise ValueError(f"validation labels not seen in training: {unknown[:5]}")
        return indices

    def _logits(self, X, tta: bool | None = None) -> torch.Tensor:
        """Logits of images (uint8 on the model's device, or anything ``to_image_batch`` takes);
        ``tta``: with mirror TTA (None: as fitted)."""
        check_is_fitted(self, "model_")
        device = next(self.model_.parameters()).device
        X_t = X if isinstance(X, torch.Tensor) else as_tensor(to_image_batch(X), device, torch.uint8)
        cfg = self._train_config(device)
        prepare = self._prepare()
        logits = predict(self.model_, X_t, prepare=prepare, cfg=cfg)
        if tta is None:
            tta = getattr(self, "tta_", False) if self.tta == "auto" else self.tta is True
        if tta:
            mirrored = predict(self.model_, X_t.flip(-1), prepare=prepare, cfg=cfg)
            logits = (logits + mirrored) / 2
        return logits
