"""What an image task is set up with: the competition inferred from files, the classifier's
parameters checked, the held-out splits, and the score of class probabilities."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold, train_test_split
from torch.nn import functional as F

from features.images import AUGMENTATIONS, MIRRORED
from models import registry
from models import weights as weight_files
from models.image import ImageClassifier
from pipeline.config import Competition
from pipeline.console import say
from pipeline.data import image_folders
from pipeline.data import images as files
from pipeline.errors import UserError
from pipeline.metrics import Metric
from pipeline.tasks.base import CVResult

METRICS = ("accuracy", "log_loss", "roc_auc", "macro_f1", "f1")  # what a classifier of images is scored by
CHOICES = {  # ImageClassifier parameters with a fixed set of values
    "optimizer": ("adamw", "adam", "sgd"),
    "schedule": ("onecycle", "cosine", "constant"),
    "augment": (False, None, True, *AUGMENTATIONS),
    "tta": (False, True, "auto"),
}


INFERRED_HOLDOUT = 0.1  # a competition without a config: one stratified holdout, not k fits of a net


def as_image_competition(comp: Competition, data_dir: Path) -> Competition:
    """``comp`` (made without a config file) as an image competition when ``data_dir`` holds
    images in a layout ``pipeline.data.images`` knows, else unchanged. Its sample submission is
    the one the folder has, by whatever name (``image_folders.sample_file``)."""
    if comp.kind != "tabular" or comp.layout is None and files.detect_layout(comp, data_dir) is None:
        return comp
    sample = image_folders.sample_file(comp, data_dir)
    return dataclasses.replace(comp, kind="image", infer_roles=False,
                               sample_submission_file=sample.name if sample else comp.sample_submission_file,
                               cv=dataclasses.replace(comp.cv, holdout=comp.cv.holdout or INFERRED_HOLDOUT))


# The default model of each kind of image, where neither the config nor the command line names
# one (README "Image competitions": the figures that chose them). Their ``augment`` has no
# mirrors: the mirror probe adds them where they help (``default_augment``).
# Gray glyphs: the same patch-whitening net, shifts of 2 px (a probe adds mirrors only where they
# help: never for digits). Real digits as 32×32 PNG (bench/photo_recipes.py, digits-png task, 60
# CPU s a fit): 0.992 in 17 epochs against cnn5's 0.987 in 8 (cnn5 pays for full resolution).
# The digit-recognizer config keeps cnn5 (0.990 on its 28×28 pixel CSVs).
GLYPHS = ("whitenet", {"epochs": "auto", "batch_size": 128, "lr": 0.2, "weight_decay": 5e-4, "optimizer": "sgd",
                       "schedule": "onecycle", "augment": "shift", "label_smoothing": 0.2, "tta": "auto",
                       "arch_params": {"width": 16}})
# Colour photos: the same net with a learned first layer in place of the whitening one, SGD at a
# high rate, label smoothing 0.2, mirror TTA where it pays on the holdout. On 4,000 CIFAR-10 images
# and 90 CPU s a fit (bench/photo_recipes.py, seeds 0 and 1): 0.698 and 0.682, against 0.659-0.680
# and 0.652 whitened, width 32's 0.645 and ResNet-18 at width 16's 0.532 (README "Image competitions").
PHOTOS = ("whitenet", {"epochs": "auto", "batch_size": 128, "lr": 0.2, "weight_decay": 5e-4, "optimizer": "sgd",
                       "schedule": "onecycle", "augment": "crop", "label_smoothing": 0.2, "tta": "auto",
                       "arch_params": {"width": 16, "whiten": False}})
KIND_DEFAULTS = {"small gray glyphs": GLYPHS, "small colour photos": PHOTOS, "larger photos": PHOTOS}
SMALL_SIDE = 32


def image_kind(images: np.ndarray) -> str:
    """Gray images up to 32×32: glyphs (digits, letters, clothes' outlines); else photos."""
    channels = 1 if images.ndim == 3 else images.shape[1]
    if images.shape[-1] > SMALL_SIDE:
        return "larger photos"
    return "small gray glyphs" if channels == 1 else "small colour photos"


PROBE_SIDE = 16  # the mirror probe compares images shrunk to this side
PROBE_ROWS = 4000  # at most this many training images take part (1-NN over them: well under a second)


def mirror_helps(comp: Competition, X: np.ndarray, y: np.ndarray) -> tuple[bool, str]:
    """Whether mirrored training images help tell the held-out ones: 1-nearest-neighbour accuracy
    on the first split's held-out images (shrunk to PROBE_SIDE, each centred and scaled to unit
    length), against the training images alone and against them and their mirror images. A
    mirrored digit is another digit or none, and the mirrors mislead; a mirrored photo is a photo
    of the same thing, and they help. Returns (helps, the line that says so)."""
    train, held = splits(comp, y)[0]
    train = train[np.random.default_rng(comp.cv.seed).permutation(len(train))[:PROBE_ROWS]]

    def features(images: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(images, dtype=torch.float32)
        x = F.adaptive_avg_pool2d(x[:, None] if x.ndim == 3 else x, PROBE_SIDE).flatten(1)
        x = x - x.mean(dim=1, keepdim=True)
        return x / (x.norm(dim=1, keepdim=True) + 1e-6)

    with torch.inference_mode():
        reference, mirrors, queries = features(X[train]), features(np.flip(X[train], -1).copy()), features(X[held])
        plain = (y[train][(queries @ reference.T).argmax(1).numpy()] == y[held]).mean()
        both = torch.cat([reference, mirrors])
        mirrored = (np.concatenate([y[train], y[train]])[(queries @ both.T).argmax(1).numpy()] == y[held]).mean()
    helps = bool(mirrored > plain)
    return helps, (f"mirror probe: 1-NN on {len(held)} held-out images {plain:.3f} without mirrored training images, "
                   f"{mirrored:.3f} with: {'mirrors on' if helps else 'no mirrors'}")


def default_augment(comp: Competition, kind_params: dict, X: np.ndarray, y: np.ndarray) -> tuple[str, str]:
    """The kind's augmentation, with mirrors where :func:`mirror_helps`; (augment, the line)."""
    base = kind_params["augment"]
    helps, line = mirror_helps(comp, X, y)
    return (MIRRORED[base] if helps else base), line


def check_weights(path: str, model: str, values: dict, X: np.ndarray, y: np.ndarray) -> None:
    """``path`` read and fitted to a fresh ``model`` before any work: a bad file is one line."""
    channels = 1 if X.ndim == 3 else X.shape[1]
    net = registry.create(model, kind="vision", num_classes=len(np.unique(y)), in_channels=channels,
                          **(values.get("arch_params") or {}))
    try:
        loaded = weight_files.load_into(net, path)
    except weight_files.WeightsError as err:
        raise UserError(str(err)) from None
    say(loaded.note(path) + (f", the first {values['freeze_epochs']} epoch(s) training only those"
                             if values.get("freeze_epochs") and loaded.fresh else ""))


def classifier_params(values: dict) -> dict:
    """``values`` checked against ``ImageClassifier``'s keyword arguments."""
    allowed = set(inspect.signature(ImageClassifier).parameters) - {"arch"}
    unknown = sorted(set(values) - allowed)
    if unknown:
        hint = " (the model is --model)" if "arch" in unknown else ""
        raise UserError(f"unknown image model parameter {unknown[0]!r}{hint}; known: {', '.join(sorted(allowed))}")
    for key, choices in CHOICES.items():
        if key in values and values[key] not in choices:
            raise UserError(f"image model parameter {key}={values[key]!r}: use one of "
                            + ", ".join(repr(c) for c in choices))
    for key in ("epochs", "batch_size"):
        value = values.get(key, 1)
        if (key != "epochs" or value != "auto") and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            also = " or 'auto'" if key == "epochs" else ""
            raise UserError(f"image model parameter {key}={value!r}: must be a positive whole number{also}")
    for key in ("lr", "time_limit"):
        value = values.get(key, 1)
        if not (key == "time_limit" and value is None) and (
                not isinstance(value, int | float) or isinstance(value, bool) or not value > 0):
            unit = " of seconds" if key == "time_limit" else ""
            raise UserError(f"image model parameter {key}={value!r}: must be a positive number{unit}")
    return dict(values)


def classifier_defaults() -> dict:
    """``ImageClassifier``'s own parameter defaults (the architecture aside)."""
    return {k: p.default for k, p in inspect.signature(ImageClassifier).parameters.items() if k != "arch"}


def make_classifier(model: str, values: dict) -> ImageClassifier:
    return ImageClassifier(arch=model, **classifier_params(values))


def splits(comp: Competition, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held-out) row indices: one stratified holdout, or stratified k folds."""
    y = np.unique(y, return_inverse=True)[1]  # labels may be text
    counts = np.bincount(y)
    rarest = int(counts[counts > 0].min())
    rows = np.arange(len(y))
    if comp.cv.holdout is not None:
        held = round(comp.cv.holdout * len(y))
        if held < len(np.unique(y)) or len(y) - held < len(np.unique(y)):
            raise UserError(f"[cv] holdout = {comp.cv.holdout} of {len(y)} images leaves too few to hold out "
                            "one image of every class")
        stratify = y if rarest >= 2 else None
        train, held_out = train_test_split(rows, test_size=held, random_state=comp.cv.seed, stratify=stratify)
        return [(np.sort(train), np.sort(held_out))]
    if rarest < comp.cv.folds:
        raise UserError(f"[cv] folds = {comp.cv.folds}, but a class has only {rarest} training images")
    return list(StratifiedKFold(comp.cv.folds, shuffle=True, random_state=comp.cv.seed).split(rows, y))


def score(metric: Metric, y: np.ndarray, proba: np.ndarray) -> float:
    """``metric`` of class probabilities (one column per class of ``metric.classes``) against labels."""
    classes = np.asarray(metric.classes)
    if not metric.needs_proba:
        return metric.score(y, classes[proba.argmax(axis=1)])
    return metric.score(y, proba[:, 1] if metric.name == "roc_auc" and len(classes) == 2 else proba)


def refit_params(values: dict, result: CVResult) -> dict:
    """The refit's params: as validated, planned on the training speed validation measured (its
    epochs' median), and with early stopping the best epoch count instead."""
    speeds = [log["examples_per_sec"] for history in result.histories for log in history if "examples_per_sec" in log]
    if speeds and values.get("epochs") == "auto":
        values = {**values, "images_per_second": float(np.median(speeds))}
    if values.get("tta") == "auto":  # kept where it scored better on the held-out images
        gains = [h[-1]["val_accuracy_mirror_tta"] - h[-1]["val_accuracy"] for h in result.histories
                 if h and "val_accuracy_mirror_tta" in h[-1]]
        values = {**values, "tta": bool(gains) and float(np.median(gains)) > 0}
    if values.get("early_stopping_patience") is None:
        return values
    best = [int(np.argmin([log["val_loss"] for log in history])) + 1 for history in result.histories if history]
    return {**values, "epochs": int(np.median(best)) if best else values.get("epochs", 15),
            "early_stopping_patience": None}


