"""Image competitions end to end: bundled digits, tiny synthetic folders, MLflow, tuning (CPU, small)."""

from __future__ import annotations

import gzip
import stat
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from conftest import artifact_names, mlflow_runs, run_cli
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from models.training import pick_device
from pipeline import config, studies, tune
from pipeline.tasks import image as vision
from pipeline.tune import pruners
from pipeline.tune.pruners import SchedulePruner, schedule_step

FAST = ["-p", "epochs=4"]  # the config's CNN recipe, shortened


pytestmark = pytest.mark.usefixtures("one_thread")
SLOW_FIXTURES = {"digits_submit"}  # an image submit that the tests below inspect (tests/conftest.py)


# --- tiny synthetic image folders ----------------------------------------------------------------


def synthetic_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Learnable uint8 28×28 images: each class a blocky template, each image its template plus noise."""
    rng = np.random.default_rng(seed)
    templates = np.kron(np.random.default_rng(99).integers(0, 256, (10, 7, 7)), np.ones((4, 4))).astype(np.uint8)
    y = np.arange(n) % 10
    rng.shuffle(y)
    noise = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    return templates[y] // 5 * 4 + noise // 5, y


def pixel_frame(images: np.ndarray, labels: np.ndarray | None, first: int = 0) -> pd.DataFrame:
    frame = pd.DataFrame(images.reshape(len(images), -1), columns=[f"pixel{i}" for i in range(first, first + 784)])
    if labels is not None:
        frame.insert(0, "label", labels)
    return frame


def write_digit_folder(folder: Path, n_train: int = 90, n_test: int = 20) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    X, y = synthetic_images(n_train + n_test)
    pixel_frame(X[:n_train], y[:n_train]).to_csv(folder / "train.csv", index=False)
    pixel_frame(X[n_train:], None).to_csv(folder / "test.csv", index=False)
    pd.DataFrame({"ImageId": np.arange(1, n_test + 1), "Label": 0}).to_csv(folder / "sample_submission.csv", index=False)
    return folder


def write_config(folder: Path, cv: str, model: str = "lenet", params: str = "epochs = 2") -> Path:
    path = folder / "tiny-digits.toml"
    path.write_text(
        'name = "tiny-digits"\nkind = "image"\nlayout = "digit-recognizer"\ntarget = "label"\nid = "ImageId"\n'
        f'task = "multiclass"\nmetric = "accuracy"\n[cv]\n{cv}\nseed = 0\n[model]\nname = "{model}"\n'
        f"[model.params]\n{params}\n"
    )
    return path


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion_csv(folder: Path, n_train: int = 100, n_test: int = 15) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    X, y = synthetic_images(n_train + n_test, seed=1)
    pixel_frame(X[:n_train], y[:n_train], first=1).to_csv(folder / "fashion-mnist_train.csv", index=False)
    pixel_frame(X[n_train:], y[n_train:], first=1).to_csv(folder / "fashion-mnist_test.csv", index=False)
    return folder


def write_fashion_idx(folder: Path, n_train: int = 100, n_test: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    X, y = synthetic_images(n_train + n_test, seed=2)
    for prefix, rows in (("train", slice(0, n_train)), ("t10k", slice(n_train, None))):
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(X[rows])))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(y[rows])))
    return folder


def run_of(output: str):
    import re

    run_id = re.findall(r"mlflow run ([0-9a-f]{32})", output)[-1]
    return MlflowClient().get_run(run_id)


# --- bundled digits: data, then submit; the tests below inspect the one run ------------------------


@pytest.fixture(scope="module")
def digits_submit(module_workdir):
    folder, patch = module_workdir
    patch.delenv("OPTUNA_STORAGE", raising=False)
    data = run_cli("data", "-c", "digit-recognizer", "--data-dir", "digits")
    result = run_cli("submit", "-c", "digit-recognizer", "--data-dir", "digits", *FAST, "-o", "submission.csv")
    [run] = mlflow_runs("digit-recognizer")
    return folder, data, result, run


def test_data_writes_the_bundled_digits_without_credentials(digits_submit):
    folder, data, *_ = digits_submit
    assert (data.code, data.err) == (0, "")
    assert "bundled:digits" in data.out
    names = {p.name for p in (folder / "digits").iterdir()}
    assert {"train.csv", "test.csv", "sample_submission.csv", "test_labels.csv", "SOURCE"} <= names


def test_submit_writes_a_valid_submission_and_a_local_score(digits_submit):
    folder, _, result, run = digits_submit
    assert (result.code, result.err) == (0, ""), result.err
    submission = pd.read_csv(folder / "submission.csv")
    sample = pd.read_csv(folder / "digits" / "sample_submission.csv")
    assert list(submission.columns) == ["ImageId", "Label"]
    assert submission["ImageId"].tolist() == sample["ImageId"].tolist() == list(range(1, len(sample) + 1))
    assert submission["Label"].dtype.kind == "i" and submission["Label"].between(0, 9).all()
    labels = pd.read_csv(folder / "digits" / "test_labels.csv")
    accuracy = float((submission["Label"] == labels["Label"]).mean())
    assert f"local test accuracy: {accuracy:.5f}" in result.out
    assert run.data.metrics["local_test_accuracy"] == pytest.approx(accuracy)
    assert accuracy > 0.9  # four epochs of the CNN already read most of these digits


def reported_device(output: str) -> str:
    """The device a run says it trains on (its "model: ..., device: X" line)."""
    import re

    [device] = re.findall(r", device: (\S+)$", output, flags=re.MULTILINE)
    return device


def test_run_tags_params_and_per_epoch_step_metrics(digits_submit):
    *_, result, run = digits_submit
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert run.info.status == "FINISHED"
    device = reported_device(result.out)  # whatever this machine has: CUDA, MPS or the CPU
    assert torch.device(device).type == pick_device().type
    assert {k: tags[k] for k in ("competition", "data_source", "device", "model", "stage", "layout")} == {
        "competition": "digit-recognizer", "data_source": "bundled:digits", "device": device,
        "model": "cnn5", "stage": "submit", "layout": "digit-recognizer"}
    assert ("device_name" in tags) == (torch.device(device).type == "cuda")
    assert tags["git_commit"]
    assert params["params.epochs"] == "4" and params["params.augment"] == "shift" and params["cv.holdout"] == "0.1"
    assert 0 < metrics["cv_accuracy"] <= 1
    client = MlflowClient()
    for key in ("train_loss", "val_loss", "val_accuracy", "lr", "examples_per_sec",
                "refit_train_loss", "refit_lr", "refit_examples_per_sec"):
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == [0, 1, 2, 3], key
    accuracy = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_accuracy")}
    assert accuracy[3] == pytest.approx(metrics["cv_accuracy"])  # the held-out score is the last epoch's


@pytest.mark.cuda
def test_on_a_gpu_the_run_trains_there_and_names_it(digits_submit):
    *_, result, run = digits_submit
    assert torch.device(reported_device(result.out)).type == "cuda"
    assert run.data.tags["device"].startswith("cuda")
    assert run.data.tags["device_name"] == torch.cuda.get_device_name()


def test_artifacts_figures_and_weights_that_reload(digits_submit):
    import mlflow

    folder, _, _, run = digits_submit
    assert {"confusion_matrix.png", "misclassified.png", "confusion_matrix_test.png", "misclassified_test.png",
            "model.pt", "model.json", "submission.csv", "validation_predictions.csv"} <= artifact_names(run)
    dl = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(folder / "dl")))
    for name in ("confusion_matrix.png", "misclassified.png", "misclassified_test.png"):
        assert (dl / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = torch.load(dl / "model.pt", weights_only=True)  # plain tensors, lists and floats only
    assert state["classes"] == list(range(10)) and isinstance(state["pixel_mean"], float)
    clf = vision.load_logged_model(dl)
    test = pd.read_csv(folder / "digits" / "test.csv").to_numpy()
    submission = pd.read_csv(folder / "submission.csv")
    np.testing.assert_array_equal(clf.predict(test), submission["Label"].to_numpy())
    held = pd.read_csv(dl / "validation_predictions.csv")
    assert len(held) == round(0.1 * 1438) and (held["fold"] == 0).all()


def test_models_lists_vision_models_with_parameter_counts(workdir):
    result = run_cli("models", "--kind", "vision")
    assert result.code == 0
    rows = {line.split()[0]: line for line in result.out.splitlines()}
    assert "44,878 params" in rows["lenet_bn"] and "11,175,818 params" in rows["resnet18"]


# --- validation from the config ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("cv", ["holdout = 0.25", "folds = 3"])
def test_holdout_or_k_fold_as_the_config_says(workdir, cv):
    data = write_digit_folder(workdir / "tiny")
    result = run_cli("submit", "--config", write_config(workdir, cv), "--data-dir", data, "-o", "out.csv")
    assert result.code == 0, result.err
    run = run_of(result.out)
    import mlflow

    held = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                            artifact_path="validation_predictions.csv",
                                                            dst_path=str(workdir / "dl")))
    metrics = run.data.metrics
    if cv.startswith("holdout"):
        assert len(held) == round(0.25 * 90) and set(held["fold"]) == {0}
        assert "val_accuracy" in metrics and "fold0_accuracy" not in metrics
        assert np.bincount(held["actual"], minlength=10).min() >= 2  # stratified: every class held out
    else:
        assert sorted(held["row"]) == list(range(90)) and set(held["fold"]) == {0, 1, 2}
        assert {"fold0_val_accuracy", "fold2_val_accuracy", "fold0_accuracy", "fold2_accuracy"} <= metrics.keys()
        scores = [metrics[f"fold{k}_accuracy"] for k in range(3)]
        assert min(scores) <= metrics["cv_accuracy"] <= max(scores)
    assert len(pd.read_csv(workdir / "out.csv")) == 20


def test_splits_are_stratified_and_seeded():
    y = np.repeat(np.arange(10), 20)
    comp = config.from_dict({"name": "x", "target": "label", "id": "ImageId", "cv": {"holdout": 0.1, "seed": 3}}, "x")
    [(train, held)] = vision.splits(comp, y)
    assert len(held) == 20 and np.bincount(y[held]).tolist() == [2] * 10
    assert np.array_equal(held, vision.splits(comp, y)[0][1]) and not set(train) & set(held)
    folds = vision.splits(config.from_dict({"name": "x", "target": "label", "id": "ImageId", "cv": {"folds": 4}}, "x"), y)
    assert sorted(np.concatenate([h for _, h in folds]).tolist()) == list(range(200))


# --- errors are one line, exit 2 --------------------------------------------------------------------


@pytest.mark.parametrize(("cell", "message"), [(300, "pixel value 300 is outside 0..255"), ("x", "'x' is not a whole number")])
def test_a_bad_image_file_is_one_line_exit_2(workdir, cell, message):
    data = write_digit_folder(workdir / "bad")
    train = pd.read_csv(data / "train.csv").astype(object)
    train.loc[4, "pixel300"] = cell
    train.to_csv(data / "train.csv", index=False)
    result = run_cli("submit", "--config", write_config(workdir, "holdout = 0.2"), "--data-dir", data)
    assert result.code == 2
    assert result.err_lines == [f"error: {data / 'train.csv'}, line 6, column pixel300: {message}"]
    assert mlflow_runs() == [] and not (workdir / "submission.csv").exists()


def test_bad_parameters_and_models_are_one_line_exit_2(workdir):
    data = write_digit_folder(workdir / "tiny")
    cfg = write_config(workdir, "holdout = 0.2")
    unknown = run_cli("submit", "--config", cfg, "--data-dir", data, "-p", "epoch=3")
    assert unknown.code == 2 and len(unknown.err_lines) == 1 and "'epoch'" in unknown.err
    tabular = run_cli("submit", "--config", cfg, "--data-dir", data, "--model", "ridge")
    assert tabular.code == 2 and len(tabular.err_lines) == 1 and "not an image model" in tabular.err
    choice = run_cli("submit", "--config", cfg, "--data-dir", data, "-p", "augment=mirror")
    assert choice.code == 2 and len(choice.err_lines) == 1 and "augment='mirror'" in choice.err
    assert mlflow_runs() == []


# --- Fashion-MNIST: CSV, IDX, download, no upload --------------------------------------------------


@pytest.mark.slow
def test_fashion_mnist_csv_folder(workdir):
    data = write_fashion_csv(workdir / "fm")
    result = run_cli("submit", "-c", "fashion-mnist", "--data-dir", data, "--model", "lenet", "-p", "epochs=1",
                     "-o", "fm.csv")
    assert result.code == 0, result.err
    assert "layout fashion-mnist-csv:" in result.out and "the dataset's labelled test set" in result.out
    run = run_of(result.out)
    assert run.data.tags["layout"] == "fashion-mnist-csv" and "local_test_accuracy" in run.data.metrics
    written = pd.read_csv(workdir / "fm.csv")
    assert list(written.columns) == ["ImageId", "Label"] and written["ImageId"].tolist() == list(range(1, 16))


@pytest.mark.slow
def test_fashion_mnist_idx_folder_is_detected_and_layout_can_be_forced(workdir):
    data = write_fashion_idx(workdir / "fm")
    result = run_cli("submit", "-c", "fashion-mnist", "--data-dir", data, "--model", "softmax_regression",
                     "-p", "epochs=1", "-o", "idx.csv")
    assert result.code == 0, result.err
    assert "layout fashion-mnist-idx (the files present; the config names fashion-mnist-csv)" in result.out
    assert len(pd.read_csv(workdir / "idx.csv")) == 12
    write_fashion_csv(data)  # now both layouts are there: the config's CSV wins, --layout picks IDX
    csv = run_cli("train", "-c", "fashion-mnist", "--data-dir", data, "--model", "softmax_regression", "-p", "epochs=1")
    forced = run_cli("submit", "-c", "fashion-mnist", "--data-dir", data, "--layout", "fashion-mnist-idx",
                     "--model", "softmax_regression", "-p", "epochs=1", "-o", "forced.csv")
    assert csv.code == 0 and "layout fashion-mnist-csv:" in csv.out and "100 train images, 15 test images" in csv.out
    assert forced.code == 0 and "layout fashion-mnist-idx:" in forced.out
    assert len(pd.read_csv(workdir / "forced.csv")) == 12


FAKE_DATASETS_CLIENT = """#!{python}
import pathlib, sys, zipfile
args = sys.argv[1:]
pathlib.Path({log!r}).write_text(" ".join(args))
dest = pathlib.Path(args[args.index("-p") + 1])
with zipfile.ZipFile(dest / "fashionmnist.zip", "w") as zipped:
    for path in sorted(pathlib.Path({files!r}).iterdir()):
        zipped.write(path, path.name)
"""


def test_fashion_mnist_is_a_kaggle_dataset_downloaded_and_never_uploaded(workdir, monkeypatch):
    served = write_fashion_csv(workdir / "served")
    client = workdir / "kaggle"
    client.write_text(FAKE_DATASETS_CLIENT.format(python=sys.executable, log=str(workdir / "args"), files=str(served)))
    client.chmod(client.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("KAGGLE_CLI", str(client))
    without = run_cli("data", "-c", "fashion-mnist", "--data-dir", "fm")
    assert without.code == 2 and len(without.err_lines) == 1 and "no Kaggle credentials" in without.err
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "secret")
    result = run_cli("data", "-c", "fashion-mnist", "--data-dir", "fm")
    assert result.code == 0, result.err
    called = (workdir / "args").read_text()
    assert called.startswith("datasets download -p ") and called.endswith(" -- zalando-research/fashionmnist")
    assert (workdir / "fm" / "SOURCE").read_text().strip() == "kaggle:zalando-research/fashionmnist"
    assert (workdir / "fm" / "fashion-mnist_test.csv").read_bytes() == (served / "fashion-mnist_test.csv").read_bytes()
    upload = run_cli("submit", "-c", "fashion-mnist", "--data-dir", "fm", "--upload")
    assert upload.code == 2 and upload.err_lines == [
        "error: zalando-research/fashionmnist is a Kaggle dataset, not a competition: there is nothing to upload to"]
    assert mlflow_runs() == []


# --- tuning ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tune_an_image_model_reports_every_epoch_and_submit_uses_the_best(workdir, monkeypatch):
    monkeypatch.setenv("OPTUNA_STORAGE", str(workdir / "journal.log"))
    monkeypatch.setattr(pruners, "PRUNER_STARTUP_TRIALS", 2)
    data = write_digit_folder(workdir / "tiny", n_train=60, n_test=10)
    comp = config.load("tiny-digits", config_file=write_config(workdir, "holdout = 0.25", model="lenet_bn"))
    outcome = tune.tune(comp, data, model="lenet", n_trials=5)
    study = optuna.load_study(study_name="tiny-digits/lenet", storage=studies.open_storage(studies.storage_url(), create=False))
    trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(trials) == 5 == outcome.counts["COMPLETE"] + outcome.counts["PRUNED"]
    assert trials[0].params == {"lr": 1e-2, "weight_decay": 5e-4, "epochs": 15, "batch_size": 128,
                                "label_smoothing": 0.0, "schedule": "onecycle"}  # first: the untuned defaults
    for trial in trials:
        assert set(trial.params) == {"lr", "weight_decay", "epochs", "batch_size", "label_smoothing", "schedule"}
        epochs = trial.params["epochs"]
        expected = [schedule_step(0, e, epochs) for e in range(epochs)]
        if trial.state == TrialState.COMPLETE:  # one validation accuracy per epoch
            assert sorted(trial.intermediate_values) == expected
            assert trial.value == pytest.approx(trial.intermediate_values[100])
        else:  # stopped mid-schedule, below the complete trials' median
            assert trial.user_attrs["pruned_at"].startswith("fold 0, epoch ")
            assert sorted(trial.intermediate_values) == expected[: len(trial.intermediate_values)]
    client = MlflowClient()
    children = client.search_runs([client.get_run(outcome.run_id).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{outcome.run_id}'")
    assert len(children) == 5
    best = next(c for c in children if c.data.tags["optuna.trial"] == str(outcome.best_trial))
    history = client.get_metric_history(best.info.run_id, "val_accuracy")
    assert len(history) == study.best_trial.params["epochs"]

    assert studies.best_params(comp, "lenet") == outcome.best_params
    result = run_cli("train", "--config", workdir / "tiny-digits.toml", "--data-dir", data, "--model", "lenet")
    assert result.code == 0 and "best trial of its Optuna study" in result.out
    assert float(run_of(result.out).data.params["params.lr"]) == pytest.approx(outcome.best_params["lr"])


class Frozen:
    """Enough of a FrozenTrial for the pruner."""

    def __init__(self, values: dict[int, float]):
        self.intermediate_values = values
        self.last_step = max(values) if values else None


class FakeStudy:
    direction = optuna.study.StudyDirection.MAXIMIZE

    def __init__(self, complete: list[dict[int, float]]):
        self.complete = [Frozen(v) for v in complete]

    def get_trials(self, deepcopy=False, states=()):
        return self.complete


def test_schedule_pruner_compares_at_the_same_point_of_each_schedule():
    # Complete trials: a 4-epoch one (25, 50, 75, 100%) and two 10-epoch ones (10, 20, ..., 100%).
    complete = [{25: 0.5, 50: 0.7, 75: 0.8, 100: 0.9},
                {s: 0.3 + s / 250 for s in range(10, 101, 10)},
                {s: 0.2 + s / 200 for s in range(10, 101, 10)}]
    pruner = SchedulePruner(n_startup_trials=3, warmup_steps=25)
    study = FakeStudy(complete)
    assert not pruner.prune(study, Frozen({20: 0.0}))  # warm-up: not judged yet
    # At 60%: the others stood at 0.7 (50%), 0.54 and 0.5 (60%): median 0.54.
    assert pruner.prune(study, Frozen({30: 0.9, 60: 0.53}))
    assert not pruner.prune(study, Frozen({30: 0.1, 60: 0.55}))
    assert not SchedulePruner(n_startup_trials=4).prune(study, Frozen({60: 0.0}))  # too few complete trials
    assert [schedule_step(0, e, 3) for e in range(3)] == [33, 67, 100]
    assert schedule_step(2, 0, 4) == 225
