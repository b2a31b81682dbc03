"""Image competitions (``kind = "image"`` in the config, or a folder of images without one).

``python -m pipeline submit --competition digit-recognizer`` (or ``--data-dir D --target label
--id id`` on a folder of images) runs this task: the images are read by ``pipeline.data.images``
(uint8, gray or colour), a registered vision model is trained by ``models.image.ImageClassifier``,
and everything goes to one MLflow run, as for tabular competitions.

Layout
    The config's ``layout`` names the files, else the files show it (``pipeline/data/images.py``).
    When a named layout's files are not in the data folder but those of the other Fashion-MNIST
    layout are, that layout is used and the run says so; ``--layout`` picks one explicitly.

Task, metric, model
    As for tables: the task from the labels, the metric from the sample submission (labels:
    accuracy; a probability per class: log loss; a binary probability: AUC), the classes in
    ``metric.classes``. Where neither the config nor ``--model`` names a model, the kind of image
    picks it (``image_setup.KIND_DEFAULTS``; gray stored as RGB is gray, ``pipeline.data.images``),
    a probe on the holdout decides whether its training images are mirrored
    (``image_setup.mirror_helps``), and ``--weights`` starts it from a state dict
    (``models.weights``). Every value is merged in ``params.resolve`` and its source logged.

Validation
    ``[cv] holdout = f`` holds out a stratified, seeded fraction ``f`` of the training images
    once (the default without a config: 0.1); otherwise ``[cv] folds`` stratified folds. Every
    epoch of every fit is scored on its held-out images (accuracy and loss, logged as MLflow step
    metrics), and the validation score is the metric over all held-out images.

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
    On a busy 2-core machine torch's per-core threads wait for each other on these small ops:
    ``OMP_NUM_THREADS=1`` took 34 s where the default took 102 s (digit-recognizer).
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models import distributed
from models.image import ImageClassifier
from models.time_limit import TimeLimit
from models.training import pick_device
from pipeline import checkpoints, model_board, models_io, params, plots, submission, tracking
from pipeline.console import say
from pipeline.data import checks
from pipeline.data import images as files
from pipeline.data.images import Images
from pipeline.errors import UserError
from pipeline.metrics import Metric, infer_metric, infer_task
from pipeline.metrics import get as get_metric
from pipeline.tasks.base import CVResult, EpochCallback, FileTask, FoldCallback, Plan
from pipeline.tasks.image_setup import (
    KIND_DEFAULTS,
    METRICS,
    check_weights,
    classifier_defaults,
    classifier_params,
    default_augment,
    image_kind,
    make_classifier,
    refit_params,
    score,
    splits,
)

TARGET_COLUMN = "Label"  # the submission's prediction column when there is no sample to copy
WORST_SHOWN = 32  # images in a misclassified grid
STUDY_FIRST_EPOCHS = 15  # a study's first trial, where the config says epochs = "auto"


class ImageTask(FileTask):
    files = files
    registry_kind = "vision"
    progress_unit = "epoch"
    distributed = takes_weights = True

    def load(self, data_dir: Path) -> Images:
        comp = self.comp  # a wrong task or metric is refused before the files are read
        if comp.task == "regression":
            raise UserError(f"{comp.name}: image competitions are classifications (binary or multiclass), "
                            "not regression")
        if comp.metric is not None and get_metric(comp.metric).name not in METRICS:
            raise UserError(f"{comp.name}: image competitions are scored by {', '.join(METRICS)}, "
                            f"not {get_metric(comp.metric).name}")
        return super().load(data_dir)

    def _task_and_metric(self, data: Images) -> tuple[str, Metric]:
        """As a table's: the task from the labels, the metric from the sample submission's columns
        (one probability column per class: log loss; a probability of a binary target: AUC)."""
        comp, labels = self.comp, data.data.y_train
        checks.check_target_varies(pd.Series(labels, name=comp.target), comp.train_file)  # as a table's
        task = comp.task or infer_task(pd.Series(labels))
        if task == "regression":  # many whole-number labels: still classes, for an image
            task = "multiclass"
        targets = submission.sample_targets(data.sample, comp.id) if data.sample is not None else []
        metric = get_metric(comp.metric or infer_metric(task, data.sample[targets] if targets else None, labels))
        if metric.name not in METRICS:
            raise UserError(f"{comp.name}: image competitions are scored by {', '.join(METRICS)}, not {metric.name}")
        metric = metric.with_classes(np.unique(labels))
        if task == "binary" and metric.name == "log_loss" and len(targets) == 1:
            raise UserError(f"{comp.sample_submission_file}: binary log loss needs one probability column per class")
        if len(targets) > 1:  # a probability column per class: each must map, before any work
            submission.class_columns(targets, metric.classes, comp.target)
        return task, metric

    def plan(self, data: Images, *, model: str | None = None, cli_params: dict | None = None,
             tuned: bool = True, study_params: dict | None = None, time_limit: TimeLimit | None = None,
             resume: bool = True, drop_shifted: int = 0) -> Plan:
        """With a ``time_limit`` (the run's), each fit (the validation's and the refit) gets its
        share of the time left as its own ``time_limit``, and none runs past the run's."""
        kind = image_kind(data.data.X_train)
        default, kind_params = KIND_DEFAULTS[kind]
        name = params.choose_model(self.comp, self.registry_kind, "multiclass", default, model)
        probe = {}
        asked = {**params.config_params(self.comp, name), **(cli_params or {})}  # a study never tunes augment
        if name == default and "augment" not in asked:
            probe["augment"], line = default_augment(self.comp, kind_params, data.data.X_train, data.data.y_train)
            say(line)
        defaults = {f"image kind ({kind})": kind_params if name == default else {}, "mirror probe": probe,
                    "weights": {"weights": self.comp.weights} if self.comp.weights else {}}
        resolved = params.resolve(self.comp, name, tuned=tuned, study=study_params, cli=cli_params,
                                  kind=self.registry_kind, defaults=defaults)
        values = classifier_params(resolved.values)
        if values.get("weights"):
            check_weights(values["weights"], name, values, data.data.X_train, data.data.y_train)
        time_limit = time_limit or TimeLimit(self.comp.time_limit)
        if time_limit.limited and values.get("time_limit") is None:
            fits = (1 if self.comp.cv.holdout is not None else self.comp.cv.folds) + 1
            left = time_limit.left()
            values["time_limit"] = round(max(left, 1.0) / fits, 1)
            say(f"time limit {self.comp.time_limit:.0f} s: each of the {fits} fits gets {values['time_limit']:.0f} s")
        task, metric = self._task_and_metric(data)
        return Plan(task, metric, name, {name: values}, comp=self.comp, time_limit=time_limit,
                    sources={name: resolved.sources}, resume=resume)

    def untuned_params(self, plan: Plan) -> dict:
        values = {**classifier_defaults(), **params.config_params(self.comp, plan.model)}
        if values["epochs"] == "auto":  # a study's epochs are numbers: its first trial takes this many
            values["epochs"] = STUDY_FIRST_EPOCHS
        return values

    def _scheme(self) -> str:
        return f"holdout {self.comp.cv.holdout:g}" if self.comp.cv.holdout is not None else f"{self.comp.cv.folds}-fold"

    def _device(self, plan: Plan) -> torch.device:
        return pick_device(make_classifier(plan.model, plan.params).device)

    def _run_config(self, data: Images, plan: Plan) -> dict:
        """What decides the training of a run: its checkpoints are reused only for the same."""
        cv = self.comp.cv
        return {"model": plan.model, "params": plan.params, "world_size": distributed.world_size(),
                "cv": [cv.holdout, cv.folds, cv.seed], "device": self._device(plan).type,
                "data": checkpoints.fingerprint(data.data.X_train, data.data.y_train)}

    def describe(self, data: Images, plan: Plan) -> list[str]:
        note = "" if data.layout == self.comp.layout else " (inferred from the files)" if self.comp.layout is None \
            else f" (the files present; the config names {self.comp.layout})"
        images = data.data.X_train
        side, channels = images.shape[-1], 1 if images.ndim == 3 else images.shape[1]
        return [f"data: {data.source}, layout {data.layout}{note}: {len(images)} train images, "
                f"{len(data.data.X_test)} test images, {side}×{side}×{channels}: {image_kind(images)} "
                f"(default {KIND_DEFAULTS[image_kind(images)][0]})",
                f"model: {plan.model} {plan.params or ''}".rstrip()
                + f", validation: {self._scheme()}, device: {self._device(plan)}"]

    def tags(self, data: Images, plan: Plan) -> dict[str, str]:
        device = self._device(plan)
        tags = {"device": str(device), "layout": data.layout, "world_size": str(distributed.world_size()),
                "image_kind": image_kind(data.data.X_train)}
        if device.type == "cuda":
            tags["device_name"] = torch.cuda.get_device_name(device)
        return tags

    def run_params(self, data: Images, plan: Plan) -> dict:
        final = make_classifier(plan.model, plan.params)
        return {"model.name": plan.model, "task": plan.task, "metric": plan.metric.name, "layout": data.layout,
                "validation": self._scheme(),
                **{f"params.{k}": v for k, v in final.get_params().items() if k != "arch"},
                **{f"param_sources.{name}": ", ".join(f"{k}: {source}" for k, source in given.items())
                   for name, given in plan.sources.items() if given}}

    def cross_validate(self, data: Images, plan: Plan, *, on_fold: FoldCallback | None = None,
                       on_epoch: EpochCallback | None = None,
                       progress: bool | None = False, checkpoints: Path | None = None) -> CVResult:
        """Train on each split's training rows, scoring every epoch on its held-out rows.

        ``on_epoch(fold, log, epochs)`` sees each epoch's log (``train_loss``, ``val_accuracy``,
        ``lr``, ``examples_per_sec``, ...) and may raise to stop, as an Optuna pruner does.
        """
        X, y = data.data.X_train, data.data.y_train
        started = time.perf_counter()
        classes = np.unique(y)
        proba = np.full((len(y), len(classes)), np.nan, dtype=np.float32)
        fold_of_row = np.full(len(y), -1)
        scores, histories = [], []
        for k, (train_idx, held_idx) in enumerate(splits(self.comp, y)):
            clf = make_classifier(plan.model, plan.params)
            hook = (lambda log, clf=clf, k=k: on_epoch(k, log, clf.epochs_)) if on_epoch else None
            clf.fit(X[train_idx], y[train_idx], X[held_idx], y[held_idx], on_epoch=hook,
                    checkpoint=checkpoints / f"fold{k}.pt" if checkpoints else None, limit=plan.time_limit)
            where = "holdout" if self.comp.cv.holdout is not None else f"fold {k}"
            if clf.epoch_plan_["note"]:
                say(f"{where}: {clf.epoch_plan_['note']}")
            last = clf.history_[-1] if clf.history_ else {}
            if "val_accuracy_mirror_tta" in last:
                say(f"{where}: mirror TTA {last['val_accuracy_mirror_tta']:.4f} against {last['val_accuracy']:.4f}"
                    f" without: {'kept' if clf.tta_ else 'off'}")
            fold_proba = clf.predict_proba(X[held_idx])
            if not np.isfinite(fold_proba).all():
                raise UserError(f"model {plan.model!r} produced NaN predictions (training diverged: lower lr?)")
            # Classes missing from a fold's training rows get probability 0.
            proba[held_idx] = 0.0
            proba[np.ix_(held_idx, np.searchsorted(classes, clf.classes_))] = fold_proba
            fold_of_row[held_idx] = k
            scores.append(score(plan.metric, y[held_idx], proba[held_idx]))
            histories.append(clf.history_)
            if on_fold:
                on_fold(k, scores[-1])
        held = fold_of_row >= 0
        overall = score(plan.metric, y[held], proba[held])
        return CVResult(proba, scores, overall, fold_of_row, histories, time.perf_counter() - started,
                        scores={plan.model: overall})

    def validate(self, data: Images, plan: Plan, *, progress: bool | None) -> CVResult:
        show = sys.stdout.isatty() if progress is None else progress
        holdout = self.comp.cv.holdout is not None
        metric = plan.metric

        def on_epoch(k: int, entry: dict, epochs: int) -> None:
            _log_epoch("" if holdout else f"fold{k}_", entry, epochs, "holdout" if holdout else f"fold {k}", show)

        folder = checkpoints.open_folder(self.comp.name, self._run_config(data, plan), resume=plan.resume)
        result = self.cross_validate(data, plan, on_epoch=on_epoch, checkpoints=folder)
        result.checkpoints = folder  # the refit's checkpoint goes there too
        many = len(result.fold_scores) > 1
        tracking.log_metrics({f"cv_{metric.name}": result.score, "validation_seconds": result.seconds,
                              **({f"fold{k}_{metric.name}": s for k, s in enumerate(result.fold_scores)}
                                 if many else {})})
        held = np.flatnonzero(result.folds >= 0)
        say(f"validation {metric.name}: {result.score:.5f}" + (
            f" (folds: {', '.join(f'{s:.4f}' for s in result.fold_scores)})" if many else
            f" on {len(held)} held-out images") + f" in {result.seconds:.1f} s")
        _log_held_out(data, result, metric.name)
        result.leaderboard = model_board.table([model_board.finished_row(
            plan.model, result.score, result.fold_scores, result.seconds, math.nan, len(held), weight=1.0)],
            greater_is_better=metric.greater_is_better)
        tracking.log_frame(result.leaderboard, model_board.ARTIFACT)
        return result

    def refit(self, data: Images, plan: Plan, result: CVResult, *, progress: bool | None) -> ImageClassifier:
        images = data.data
        values = refit_params(plan.params, result)
        final = make_classifier(plan.model, values)
        started = time.perf_counter()
        show = sys.stdout.isatty() if progress is None else progress
        final.fit(images.X_train, images.y_train,
                  on_epoch=lambda entry: _log_epoch("refit_", entry, final.epochs_, "refit", show),
                  checkpoint=result.checkpoints / "refit.pt" if result.checkpoints else None, limit=plan.time_limit)
        if result.checkpoints:
            checkpoints.close_folder(result.checkpoints, "refit.pt")
        seconds = time.perf_counter() - started
        tracking.log_metrics({"refit_seconds": seconds})
        if result.leaderboard is not None:  # the final model: the refit on every image
            result.leaderboard = model_board.with_final(result.leaderboard, model_board.Row(
                f"{plan.model} (refit on every image)", "final", fit_seconds=seconds, weight=1.0, bags=1))
            tracking.log_frame(result.leaderboard, model_board.ARTIFACT)
        note = final.epoch_plan_["note"]  # the epochs planned for the time limit: not said twice
        said = note and not note.startswith(f"{final.epoch_plan_['epochs']} epochs in")
        say(f"refit on all {len(images.X_train)} training images: {len(final.history_)} epochs in {seconds:.1f} s"
            + (f" ({note})" if said else ""))
        _log_model(final, plan.model, values, in_channels=1 if images.X_train.ndim == 3 else images.X_train.shape[1])
        models_io.log_image(self.comp, final, plan.model, values, images.X_train, plan.metric,
                            first_pixel=1 if data.layout == "fashion-mnist-csv" else 0)  # as its CSV files number them
        return final

    def predict(self, fitted: ImageClassifier, data: Images, plan: Plan) -> pd.DataFrame:
        """One row per test image: its predicted class, and the probability of each class."""
        proba = fitted.predict_proba(data.data.X_test)
        if not np.isfinite(proba).all():
            raise UserError(f"model {plan.model!r} produced NaN or infinite test predictions")
        frame = pd.DataFrame(proba, columns=[str(c) for c in fitted.classes_])
        frame.insert(0, "predicted", fitted.classes_[proba.argmax(axis=1)])
        return frame

    def submission(self, data: Images, plan: Plan, predictions: pd.DataFrame, path: Path) -> int:
        """Labels, P(positive class) or one probability column per class, as the sample asks."""
        comp = self.comp
        ids = pd.Series(data.data.test_ids, name=comp.id)
        sample = data.sample
        if sample is None:
            column = TARGET_COLUMN if data.layout in files.LAYOUT_FILES else comp.target
            sample = pd.DataFrame({comp.id: ids.to_numpy(), column: 0})
            say(f"no {comp.sample_submission_file} in the data folder: writing {comp.id},{column}")
        elif comp.id not in sample.columns:
            raise UserError(f"{comp.sample_submission_file} has no {comp.id!r} column "
                            f"(it has {', '.join(sample.columns)})")
        elif set(sample[comp.id]) != set(ids) or len(sample) != len(ids):
            raise UserError(f"{comp.sample_submission_file} lists {len(sample)} ids, not the {len(ids)} "
                            f"{comp.id}s of the test images")
        metric = plan.metric
        probabilities = submission.wants_probabilities(sample, comp.id, metric)
        values = predictions["predicted"].to_numpy()
        if probabilities:
            proba = predictions.drop(columns="predicted").to_numpy()
            one_column = len(submission.sample_targets(sample, comp.id)) == 1 and metric.top_k is None
            values = proba[:, 1] if one_column and len(metric.classes) == 2 else proba
        frame = submission.finalize(sample, ids, values, id_column=comp.id, positive=False, labels=not probabilities,
                                    path=path, classes=metric.classes, target=comp.target, top_k=metric.top_k)
        return len(frame)

    def local_score(self, data: Images, plan: Plan, predictions: pd.DataFrame) -> float | None:
        images = data.data
        if images.y_test is None:
            return None
        proba = predictions.drop(columns="predicted").to_numpy()
        test_score = score(plan.metric, images.y_test, proba)
        where = "held-back labels of " + data.source if data.layout == "digit-recognizer" \
            else "the dataset's labelled test set"
        say(f"local test {plan.metric.name}: {test_score:.5f} ({where})")
        _log_figures(images.X_test, images.y_test, proba, np.asarray(plan.metric.classes), "test",
                     f"test images: {plan.metric.name} {test_score:.4f}")
        return test_score


def _log_epoch(prefix: str, entry: dict, epochs: int, stage: str, show: bool) -> None:
    """One epoch as MLflow step metrics (live), printed when ``show``."""
    tracking.log_curves(prefix, [entry])
    if show:
        parts = [f"loss {entry['train_loss']:.4f}"]
        if "val_accuracy" in entry:
            parts.append(f"val accuracy {entry['val_accuracy']:.4f}")
        parts += [f"lr {entry['lr']:.2e}", f"{entry['examples_per_sec']:,.0f} images/s"]
        say(f"  {stage} epoch {entry['epoch'] + 1}/{epochs}: " + ", ".join(parts))


def _log_held_out(data: Images, result: CVResult, result_metric: str) -> None:
    images = data.data
    held = np.flatnonzero(result.folds >= 0)
    classes = np.unique(images.y_train)
    proba = result.oof[held]
    tracking.log_frame(pd.DataFrame({"row": held, "fold": result.folds[held], "actual": images.y_train[held],
                                     "predicted": classes[proba.argmax(axis=1)], "confidence": proba.max(axis=1)}),
                       "validation_predictions.csv")
    _log_figures(images.X_train[held], images.y_train[held], proba, classes, "",
                 f"held-out images: {result_metric} {result.score:.4f}")


def _log_figures(images: np.ndarray, actual: np.ndarray, proba: np.ndarray, classes: np.ndarray,
                 suffix: str, title: str) -> None:
    predicted = classes[proba.argmax(axis=1)]
    end = f"_{suffix}" if suffix else ""
    if images.ndim == 4:  # colour (N, 3, S, S): the grid shows each image's brightness
        images = images.mean(axis=1).round().astype(np.uint8)
    tracking.log_figure(plots.confusion_matrix(actual, predicted, classes, title=title), f"confusion_matrix{end}.png")
    tracking.log_figure(plots.misclassified_grid(images, actual, predicted, proba.max(axis=1), n=WORST_SHOWN,
                                                 title=f"{title}: the most confident mistakes"),
                        f"misclassified{end}.png")


def _log_model(clf: ImageClassifier, model: str, values: dict, *, in_channels: int) -> None:
    """``model.pt`` (the state_dict) and ``model.json`` (how to rebuild it)."""
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.pt"
        state = clf.state_dict()
        state["model"] = {k: v.detach().cpu() for k, v in state["model"].items()}  # loads on any machine
        torch.save(state, weights)
        tracking.log_artifact(weights)
    described = {"arch": model, "params": values, "classes": clf.classes_.tolist(), "in_channels": in_channels}
    tracking.log_json(described, "model.json")


def load_logged_model(folder: Path, device: str = "cpu") -> ImageClassifier:
    """The ``ImageClassifier`` from a run's downloaded ``model.pt`` and ``model.json``."""
    folder = Path(folder)
    described = json.loads((folder / "model.json").read_text())
    clf = make_classifier(described["arch"], {**described["params"], "device": device})
    state = torch.load(folder / "model.pt", weights_only=True, map_location=device)
    return clf.load_state_dict(state, in_channels=described.get("in_channels", 1))
