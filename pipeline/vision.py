"""The train and submit stages for image competitions (``kind = "image"`` in the config).

``python -m pipeline submit --competition digit-recognizer`` lands here: the images are read by
``pipeline.images.load_image_competition`` (uint8 28×28), a registered vision model is trained by
``models.image.ImageClassifier``, and everything goes to one MLflow run, as for tabular
competitions.

Layout
    The config's ``layout`` names the files (``pipeline/images.py``). When its files are not in
    the data folder but those of the other Fashion-MNIST layout are (CSV ``fashion-mnist_*.csv``
    or IDX ``*-ubyte[.gz]``), that layout is used and the run says so; ``--layout`` picks one
    explicitly (it is still the only one read).

Validation
    ``[cv] holdout = f`` holds out a stratified, seeded fraction ``f`` of the training images
    once; otherwise ``[cv] folds`` stratified folds. Every epoch of every fit is scored on its
    held-out images (accuracy and loss, logged as MLflow step metrics), and the validation score
    is the accuracy over all held-out images (``cv_accuracy``).

Refit
    The model that predicts the test images is then trained again, from scratch, on every
    training image with the same parameters: the held-out images are data too, and the epoch
    count and schedule were fixed in advance. With ``early_stopping_patience`` the refit instead
    trains for the epoch count that validation found best (the median over folds), since it has
    no held-out images to stop on.

Artifacts
    ``confusion_matrix.png`` and ``misclassified.png`` (the held-out images the model got wrong
    with the highest confidence), the same two for the test images when their labels are known
    (``*_test.png``), ``model.pt`` (the refit model's ``state_dict()``: weights, classes and
    pixel statistics, readable with ``torch.load(weights_only=True)``), ``model.json`` (the
    architecture and parameters to rebuild it with), the held-out predictions and the
    submission. See :func:`load_logged_model`.

CPU threads
    torch runs each op on one thread per core. These nets' ops are small, and on a CPU that is
    busy with other work the threads wait for each other: on a loaded 2-core machine
    ``OMP_NUM_THREADS=1 make submit COMPETITION=digit-recognizer`` took 34 s where the default
    took 102 s (``OMP_WAIT_POLICY=PASSIVE`` recovers part of it). On an idle machine or a GPU
    the defaults are right.
"""

from __future__ import annotations

import inspect
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import ingest, kaggle_api, metrics, submit, tracking
from pipeline.config import Competition
from pipeline.errors import UserError
from pipeline.images import LAYOUT_FILES, ImageData, load_image_competition

DEFAULT_MODEL = "lenet_bn"
TARGET_COLUMN = "Label"  # the submission's prediction column when there is no sample to copy
WORST_SHOWN = 32  # images in a misclassified grid
CHOICES = {  # ImageClassifier parameters with a fixed set of values
    "optimizer": ("adamw", "adam", "sgd"),
    "schedule": ("onecycle", "cosine", "constant"),
    "augment": (False, None, True, "shift", "fashion"),
}

# An epoch callback of :func:`validate`: (fold, that epoch's log, the fit's planned epochs).
EpochHook = Callable[[int, dict, int], None]


def say(message: str) -> None:
    print(message, flush=True)


# --- files ---------------------------------------------------------------------------------------


def _layout_present(data_dir: Path, layout: str) -> bool:
    return all(
        (data_dir / name).is_file() or (name.endswith(".gz") and (data_dir / name[:-3]).is_file())
        for name in LAYOUT_FILES[layout]
    )


def resolve_layout(comp: Competition, data_dir: Path) -> str:
    """The config's layout, or the other layout of the same dataset when only its files are here."""
    if comp.layout is None:
        raise UserError(f"{comp.name}: an image competition needs a layout ({', '.join(LAYOUT_FILES)})")
    if comp.layout not in LAYOUT_FILES:
        raise UserError(f"{comp.name}: unknown image layout {comp.layout!r}; use one of {', '.join(LAYOUT_FILES)}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir() or _layout_present(data_dir, comp.layout):
        return comp.layout
    family = comp.layout.rsplit("-", 1)[0]
    for other in LAYOUT_FILES:
        if other != comp.layout and other.rsplit("-", 1)[0] == family and _layout_present(data_dir, other):
            return other
    return comp.layout  # reading it names the missing file


def has_files(comp: Competition, data_dir: Path) -> bool:
    """Whether ``data_dir`` holds a complete set of the competition's files (any of its layouts)."""
    return Path(data_dir).is_dir() and _layout_present(Path(data_dir), resolve_layout(comp, data_dir))


@dataclass
class Images:
    data: ImageData
    layout: str
    source: str
    sample: pd.DataFrame | None  # sample_submission.csv when the folder has one


def load(comp: Competition, data_dir: Path) -> Images:
    data_dir = Path(data_dir)
    layout = resolve_layout(comp, data_dir)
    data = load_image_competition(data_dir, layout)
    sample_path = data_dir / comp.sample_submission_file
    sample = None
    if sample_path.is_file():
        from pipeline.validate import read_csv

        sample = read_csv(sample_path)
    return Images(data, layout, ingest.source_of(data_dir), sample)


# --- model and parameters --------------------------------------------------------------------------


def resolve_metric(comp: Competition) -> metrics.Metric:
    if comp.task not in (None, "multiclass"):
        raise UserError(f"{comp.name}: image competitions are multiclass, not {comp.task}")
    metric = metrics.get(comp.metric or "accuracy")
    if metric.name != "accuracy":
        raise UserError(f"{comp.name}: image competitions are scored by accuracy, not {metric.name}")
    return metric


def model_choice(comp: Competition, model: str | None) -> tuple[str, dict]:
    """The vision model to run (the command line's, else the config's, else LeNet-BN) and the config's params for it."""
    from models import registry

    name = model or comp.model.name or DEFAULT_MODEL
    try:
        registry.get(name, "vision")
    except KeyError:
        known = ", ".join(e.name for e in registry.list_models(kind="vision"))
        raise UserError(f"{name!r} is not an image model (python -m pipeline models --kind vision): {known}") from None
    return name, dict(comp.model.params) if name == comp.model.name else {}


def classifier_params(params: dict) -> dict:
    """``params`` checked against ``ImageClassifier``'s keyword arguments."""
    from models.image import ImageClassifier

    allowed = set(inspect.signature(ImageClassifier).parameters) - {"arch"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        hint = " (the model is --model)" if "arch" in unknown else ""
        raise UserError(f"unknown image model parameter {unknown[0]!r}{hint}; known: {', '.join(sorted(allowed))}")
    for key, choices in CHOICES.items():
        if key in params and params[key] not in choices:
            raise UserError(f"image model parameter {key}={params[key]!r}: use one of "
                            + ", ".join(repr(c) for c in choices))
    for key in ("epochs", "batch_size"):
        if key in params and (not isinstance(params[key], int) or params[key] < 1):
            raise UserError(f"image model parameter {key}={params[key]!r}: must be a positive whole number")
    for key in ("lr",):
        if key in params and (not isinstance(params[key], int | float) or params[key] <= 0):
            raise UserError(f"image model parameter {key}={params[key]!r}: must be a positive number")
    return dict(params)


def classifier_defaults() -> dict:
    """``ImageClassifier``'s own parameter defaults (the architecture aside)."""
    from models.image import ImageClassifier

    return {k: p.default for k, p in inspect.signature(ImageClassifier).parameters.items() if k != "arch"}


def make_classifier(model: str, params: dict):
    from models.image import ImageClassifier

    return ImageClassifier(arch=model, **classifier_params(params))


def resolve_params(comp: Competition, model: str, config_params: dict, cli_params: dict, tuned: bool) -> dict:
    """Config, then the Optuna study's best (``tuned``), then the command line's."""
    best = {}
    if tuned:
        from pipeline import tune

        best = tune.best_params(comp, model) or {}
        if best:
            say(f"params: {model} uses the best trial of its Optuna study (PARAMS=default ignores it)")
    return classifier_params({**config_params, **best, **cli_params})


# --- validation ---------------------------------------------------------------------------------


def splits(comp: Competition, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held-out) row indices: one stratified holdout, or stratified k folds."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

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


@dataclass
class Validation:
    proba: np.ndarray  # (N, classes): held-out probabilities; rows never held out are NaN
    fold_of_row: np.ndarray  # the fold that held each row out; -1: never held out
    fold_scores: list[float]
    score: float  # accuracy over every held-out image
    histories: list[list[dict]]
    seconds: float
    classes: np.ndarray = field(default_factory=lambda: np.arange(10))

    @property
    def held_out(self) -> np.ndarray:
        return np.flatnonzero(self.fold_of_row >= 0)


def validate(comp: Competition, X: np.ndarray, y: np.ndarray, model: str, params: dict,
             *, on_epoch: EpochHook | None = None) -> Validation:
    """Train on each split's training rows, scoring every epoch on its held-out rows.

    ``on_epoch(fold, log, epochs)`` sees each epoch's log (``train_loss``, ``val_accuracy``,
    ``lr``, ``examples_per_sec``, ...) and may raise to stop, as an Optuna pruner does.
    """
    started = time.perf_counter()
    classes = np.unique(y)
    proba = np.full((len(y), len(classes)), np.nan, dtype=np.float32)
    fold_of_row = np.full(len(y), -1)
    scores, histories = [], []
    for k, (train_idx, held_idx) in enumerate(splits(comp, y)):
        clf = make_classifier(model, params)
        hook = (lambda log, k=k, epochs=clf.epochs: on_epoch(k, log, epochs)) if on_epoch else None
        clf.fit(X[train_idx], y[train_idx], X[held_idx], y[held_idx], on_epoch=hook)
        fold_proba = clf.predict_proba(X[held_idx])
        if not np.isfinite(fold_proba).all():
            raise UserError(f"model {model!r} produced NaN predictions (training diverged: lower lr?)")
        # Classes missing from a fold's training rows get probability 0.
        proba[held_idx] = 0.0
        proba[np.ix_(held_idx, np.searchsorted(classes, clf.classes_))] = fold_proba
        fold_of_row[held_idx] = k
        scores.append(float((classes[fold_proba.argmax(axis=1)] == y[held_idx]).mean()))
        histories.append(clf.history_)
    held = fold_of_row >= 0
    score = float((classes[proba[held].argmax(axis=1)] == y[held]).mean())
    return Validation(proba, fold_of_row, scores, score, histories, time.perf_counter() - started, classes)


def refit_params(params: dict, validation: Validation) -> dict:
    """The refit's params: as validated, but with early stopping the best epoch count instead."""
    if params.get("early_stopping_patience") is None:
        return params
    best = [int(np.argmin([log["val_loss"] for log in history])) + 1 for history in validation.histories if history]
    return {**params, "epochs": int(np.median(best)) if best else params.get("epochs", 15),
            "early_stopping_patience": None}


# --- the stage ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    model: str
    params: dict
    metric: str
    cv_score: float
    fold_scores: list[float]
    run_id: str
    layout: str
    submission: Path | None = None
    local_score: float | None = None


def _epoch_logger(prefix: str, show: bool, stage: str) -> Callable[[dict, int], None]:
    """Logs each epoch as MLflow step metrics (live), and prints it when ``show``."""

    def log(entry: dict, epochs: int) -> None:
        tracking.log_curves(prefix, [entry])
        if show:
            parts = [f"loss {entry['train_loss']:.4f}"]
            if "val_accuracy" in entry:
                parts.append(f"val accuracy {entry['val_accuracy']:.4f}")
            parts += [f"lr {entry['lr']:.2e}", f"{entry['examples_per_sec']:,.0f} images/s"]
            say(f"  {stage} epoch {entry['epoch'] + 1}/{epochs}: " + ", ".join(parts))

    return log


def run(
    comp: Competition,
    data_dir: Path,
    *,
    model: str | None = None,
    params: dict | None = None,
    output: Path | None = None,
    upload_message: str | None = None,
    progress: bool | None = None,
    tuned: bool = True,
) -> Outcome:
    """Validate (holdout or k-fold), refit on every training image and, given ``output``, write
    the submission; one MLflow run. ``tuned``: start from the Optuna study's best params."""
    import torch

    from models.training import pick_device

    started = time.perf_counter()
    metric = resolve_metric(comp)
    if upload_message is not None and output is not None:
        _check_upload(comp)
    images = load(comp, data_dir)
    data = images.data
    model, config_params = model_choice(comp, model)
    resolved = resolve_params(comp, model, config_params, params or {}, tuned)
    final = make_classifier(model, resolved)
    device = pick_device(final.device)
    show = sys.stdout.isatty() if progress is None else progress
    scheme = (f"holdout {comp.cv.holdout:g}" if comp.cv.holdout is not None else f"{comp.cv.folds}-fold")
    layout_note = "" if images.layout == comp.layout else f" (the files present; the config names {comp.layout})"
    say(f"data: {images.source}, layout {images.layout}{layout_note}: {len(data.X_train)} train images, "
        f"{len(data.X_test)} test images")
    say(f"model: {model} {resolved or ''}".rstrip() + f", validation: {scheme}, device: {device}")

    stage = "submit" if output else "train"
    tags = {
        "competition": comp.name,
        "data_source": images.source,
        "git_commit": tracking.git_commit(),
        "device": str(device),
        "model": model,
        "stage": stage,
        "layout": images.layout,
    }
    if device.type == "cuda":
        tags["device_name"] = torch.cuda.get_device_name(device)
    with tracking.run(comp.name, f"{stage}-{model}", tags=tags) as active:
        tracking.log_params({**comp.as_params(), "model.name": model, "task": "multiclass", "metric": metric.name,
                             "layout": images.layout, "validation": scheme,
                             **{f"params.{k}": v for k, v in final.get_params().items() if k != "arch"}})
        loggers: dict[int, Callable] = {}

        def on_epoch(k: int, entry: dict, epochs: int) -> None:
            if k not in loggers:
                prefix = "" if comp.cv.holdout is not None else f"fold{k}_"
                loggers[k] = _epoch_logger(prefix, show, "holdout" if comp.cv.holdout is not None else f"fold {k}")
            loggers[k](entry, epochs)

        validation = validate(comp, data.X_train, data.y_train, model, resolved, on_epoch=on_epoch)
        tracking.log_metrics({f"cv_{metric.name}": validation.score, "validation_seconds": validation.seconds,
                              **({f"fold{k}_{metric.name}": s for k, s in enumerate(validation.fold_scores)}
                                 if len(validation.fold_scores) > 1 else {})})
        say(f"validation {metric.name}: {validation.score:.5f}" + (
            f" (folds: {', '.join(f'{s:.4f}' for s in validation.fold_scores)})" if len(validation.fold_scores) > 1 else
            f" on {len(validation.held_out)} held-out images") + f" in {validation.seconds:.1f} s")
        _log_validation(data, validation)

        refit = refit_params(resolved, validation)
        final = make_classifier(model, refit)
        refit_started = time.perf_counter()
        refit_log = _epoch_logger("refit_", show, "refit")
        final.fit(data.X_train, data.y_train, on_epoch=lambda entry: refit_log(entry, final.epochs))
        tracking.log_metrics({"refit_seconds": time.perf_counter() - refit_started})
        say(f"refit on all {len(data.X_train)} training images: {len(final.history_)} epochs in "
            f"{time.perf_counter() - refit_started:.1f} s")
        _log_model(final, model, refit, in_channels=1 if data.X_train.ndim == 3 else data.X_train.shape[1])

        outcome = Outcome(model, resolved, metric.name, validation.score, validation.fold_scores,
                          active.info.run_id, images.layout)
        if output is not None or data.y_test is not None:
            proba = final.predict_proba(data.X_test)
            predicted = final.classes_[proba.argmax(axis=1)]
            if output is not None:
                _write_submission(comp, images, predicted, Path(output), outcome)
            if data.y_test is not None:
                outcome.local_score = float((predicted == data.y_test).mean())
                tracking.log_metrics({f"local_test_{metric.name}": outcome.local_score})
                where = "held-back labels of " + images.source if images.layout == "digit-recognizer" \
                    else "the dataset's labelled test set"
                say(f"local test {metric.name}: {outcome.local_score:.5f} ({where})")
                _log_figures(data.X_test, data.y_test, proba, final.classes_, "test",
                             f"test images: {metric.name} {outcome.local_score:.4f}")
        tracking.log_metrics({"wall_seconds": time.perf_counter() - started})
        say(f"mlflow run {active.info.run_id} in {tracking.tracking_uri()} (make ui to browse)")

    if upload_message is not None and output is not None:
        kaggle_api.upload(Path(output), comp.kaggle, upload_message)
        say(f"uploaded {output} to {comp.kaggle}")
    return outcome


def _check_upload(comp: Competition) -> None:
    """Before any training: an upload that cannot happen is refused up front."""
    if not comp.kaggle:
        raise UserError(f"competition {comp.name!r} has no Kaggle id to upload to")
    if "/" in comp.kaggle:
        raise UserError(f"{comp.kaggle} is a Kaggle dataset, not a competition: there is nothing to upload to")
    if not kaggle_api.has_credentials():
        raise UserError("no Kaggle credentials found: set KAGGLE_USERNAME/KAGGLE_KEY to upload")


def _write_submission(comp: Competition, images: Images, predicted: np.ndarray, output: Path, outcome: Outcome) -> None:
    import mlflow

    ids = pd.Series(images.data.test_ids, name=comp.id)
    sample = images.sample
    if sample is None:
        sample = pd.DataFrame({comp.id: ids.to_numpy(), TARGET_COLUMN: 0})
        say(f"no {comp.sample_submission_file} in the data folder: writing {comp.id},{TARGET_COLUMN}")
    elif comp.id not in sample.columns:
        raise UserError(f"{comp.sample_submission_file} has no {comp.id!r} column (it has {', '.join(sample.columns)})")
    elif set(sample[comp.id]) != set(ids) or len(sample) != len(ids):
        raise UserError(f"{comp.sample_submission_file} lists {len(sample)} ids, not {comp.id} 1..{len(ids)} "
                        "of the test images")
    frame = submit.finalize(sample, ids, predicted, id_column=comp.id, positive=False, labels=True, path=output)
    outcome.submission = output
    mlflow.log_artifact(str(output))
    say(f"submission: {output} ({len(frame)} rows)")


def _log_validation(data: ImageData, validation: Validation) -> None:
    held = validation.held_out
    classes = validation.classes
    predicted = classes[validation.proba[held].argmax(axis=1)]
    tracking.log_frame(pd.DataFrame({"row": held, "fold": validation.fold_of_row[held],
                                     "actual": data.y_train[held], "predicted": predicted,
                                     "confidence": validation.proba[held].max(axis=1)}),
                       "validation_predictions.csv")
    _log_figures(data.X_train[held], data.y_train[held], validation.proba[held], classes, "",
                 f"held-out images: accuracy {validation.score:.4f}")


def _log_figures(images: np.ndarray, actual: np.ndarray, proba: np.ndarray, classes: np.ndarray,
                 suffix: str, title: str) -> None:
    from pipeline import plots

    predicted = classes[proba.argmax(axis=1)]
    end = f"_{suffix}" if suffix else ""
    tracking.log_figure(plots.confusion_matrix(actual, predicted, classes, title=title), f"confusion_matrix{end}.png")
    tracking.log_figure(plots.misclassified_grid(images, actual, predicted, proba.max(axis=1), n=WORST_SHOWN,
                                                 title=f"{title}: the most confident mistakes"),
                        f"misclassified{end}.png")


def _log_model(clf, model: str, params: dict, *, in_channels: int) -> None:
    """``model.pt`` (the state_dict) and ``model.json`` (how to rebuild it)."""
    import mlflow
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.pt"
        state = clf.state_dict()
        state["model"] = {k: v.detach().cpu() for k, v in state["model"].items()}  # loads on any machine
        torch.save(state, weights)
        mlflow.log_artifact(str(weights))
    described = {"arch": model, "params": params, "classes": clf.classes_.tolist(), "in_channels": in_channels}
    tracking.log_json(described, "model.json")


def load_logged_model(folder: Path, device: str = "cpu"):
    """The ``ImageClassifier`` from a run's downloaded ``model.pt`` and ``model.json``."""
    import torch

    folder = Path(folder)
    described = json.loads((folder / "model.json").read_text())
    params = {**described["params"], "device": device}
    clf = make_classifier(described["arch"], params)
    state = torch.load(folder / "model.pt", weights_only=True, map_location=device)
    return clf.load_state_dict(state, in_channels=described.get("in_channels", 1))
