"""Checkpoints: a run stopped (an exception, SIGTERM mid-epoch, SIGKILL) and resumed ends as the
uninterrupted run of the same seed does, to float tolerance on the CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, mlflow_runs
from mlflow.tracking import MlflowClient
from test_image_pipeline import synthetic_images, write_config, write_digit_folder

from models import checkpoints
from models.image import ImageClassifier

pytestmark = pytest.mark.usefixtures("one_thread")


class Stop(Exception):
    pass


def classifier() -> ImageClassifier:
    # Batch norm, augmentation (its own generator), AdamW, one-cycle: every kind of state.
    return ImageClassifier(arch="lenet_bn", epochs=3, batch_size=16, augment="shift", seed=3)


@pytest.fixture(scope="module")
def data():
    X, y = synthetic_images(120, seed=5)
    return X[:96], y[:96], X[96:], y[96:]


@pytest.fixture(scope="module")
def uninterrupted(data):
    X, y, X_val, y_val = data
    return classifier().fit(X, y, X_val, y_val)


def assert_same_run(resumed: ImageClassifier, reference: ImageClassifier) -> None:
    assert len(resumed.history_) == len(reference.history_)
    for ours, theirs in zip(resumed.history_, reference.history_, strict=True):
        for key in ("train_loss", "val_loss", "val_accuracy", "lr"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-7), (ours["epoch"], key)
    for key, value in reference.model_.state_dict().items():
        torch.testing.assert_close(resumed.model_.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_resume_after_an_epoch_ends_as_the_uninterrupted_run(tmp_path, data, uninterrupted):
    X, y, X_val, y_val = data
    path = tmp_path / "run.pt"

    def die_after_first_epoch(log):
        if log["epoch"] == 0:
            raise Stop  # after the epoch's checkpoint, as a crash would

    with pytest.raises(Stop):
        classifier().fit(X, y, X_val, y_val, on_epoch=die_after_first_epoch, checkpoint=path)
    saved = checkpoints.load(path)
    assert (saved["epoch"], saved["step"], saved["done"]) == (1, 0, False)
    assert {"model", "optimizer", "scheduler", "scaler", "ranks", "history", "best"} <= saved.keys()
    assert {"python", "numpy", "torch", "cuda"} <= saved["ranks"][0]["rng"].keys()
    assert saved["ranks"][0]["prepare"]  # the augmentation generator's state

    seen = []
    resumed = classifier().fit(X, y, X_val, y_val, on_epoch=lambda log: seen.append(log["epoch"]), checkpoint=path)
    assert seen == [0, 1, 2]  # the restored epoch is reported again (a new MLflow run gets every point)
    assert_same_run(resumed, uninterrupted)
    assert checkpoints.load(path)["done"]
    again = classifier().fit(X, y, X_val, y_val, checkpoint=path)  # finished: nothing trained again
    assert_same_run(again, uninterrupted)


def test_sigterm_mid_epoch_saves_the_step_and_resumes_from_it(tmp_path, data, uninterrupted):
    X, y, X_val, y_val = data
    path = tmp_path / "run.pt"
    clf = classifier()
    real_prepare = clf._prepare
    calls = {"n": 0}

    def prepare_that_signals(augment=None):
        inner = real_prepare(augment)

        class Wrapped:
            def __call__(self, batch, train):
                if train:
                    calls["n"] += 1
                    if calls["n"] == 9:  # epoch 2, step 3 of 6: SIGTERM arrives mid-step
                        os.kill(os.getpid(), signal.SIGTERM)
                return inner(batch, train)

            def state_dict(self):
                return inner.state_dict()

            def load_state_dict(self, state):
                inner.load_state_dict(state)

        return Wrapped()

    clf._prepare = prepare_that_signals

    def handler(signum, frame):
        raise Stop

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(Stop):
            clf.fit(X, y, X_val, y_val, checkpoint=path)
    finally:
        signal.signal(signal.SIGTERM, previous)
    saved = checkpoints.load(path)
    assert (saved["epoch"], saved["step"]) == (1, 3)  # the step in progress finished, then saved
    assert signal.getsignal(signal.SIGTERM) is previous
    assert_same_run(classifier().fit(X, y, X_val, y_val, checkpoint=path), uninterrupted)


def test_checkpoint_files_are_replaced_atomically(tmp_path):
    path = tmp_path / "a" / "c.pt"
    checkpoints.save_atomic({"x": torch.ones(3)}, path)
    checkpoints.save_atomic({"x": torch.zeros(3)}, path)
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]  # no temporary file left
    assert checkpoints.load(path)["x"].sum() == 0


# --- the stage, killed with SIGKILL after its first checkpoint, then resumed --------------------------


def submit(folder: Path, config: Path, data: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "pipeline", "submit", "--config", str(config), "--data-dir",
                             str(data), "-o", "submission.csv", *extra], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def final_metrics(run) -> dict[str, float]:
    client = MlflowClient()
    keys = ("train_loss", "val_loss", "val_accuracy", "refit_train_loss")
    return {k: [m.value for m in sorted(client.get_metric_history(run.info.run_id, k), key=lambda m: m.step)]
            for k in keys} | {"cv_accuracy": [run.data.metrics["cv_accuracy"]]}


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_uninterrupted_metrics(workdir, monkeypatch):
    data = write_digit_folder(workdir / "tiny", n_train=400, n_test=20)
    config = write_config(workdir, "holdout = 0.1", model="lenet_bn",
                          params='epochs = 6\nbatch_size = 16\naugment = "shift"\nseed = 1')
    killed_dir, reference_dir = workdir / "killed", workdir / "reference"
    for folder in (killed_dir, reference_dir):
        folder.mkdir()

    # Uninterrupted, in its own folder (its own .checkpoints) but the same MLflow store.
    reference = submit(reference_dir, config, data)
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]

    victim = submit(killed_dir, config, data)
    deadline = time.monotonic() + 240
    while not list((killed_dir / ".checkpoints").rglob("*.pt")):  # the first epoch's checkpoint
        assert victim.poll() is None, victim.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (killed_dir / "submission.csv").exists()
    left = sorted(p.name for p in (killed_dir / ".checkpoints").rglob("*.pt"))
    print("checkpoints left by the killed run:", left)

    resumed = submit(killed_dir, config, data)  # --resume is the default
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert "resuming from .checkpoints/tiny-digits/" in out, (left, out)

    runs = {r.info.status: r for r in mlflow_runs("tiny-digits")}
    assert len(mlflow_runs("tiny-digits")) == 3 and set(runs) == {"FINISHED", "KILLED"}
    finished = [r for r in mlflow_runs("tiny-digits") if r.info.status == "FINISHED"]
    first, second = final_metrics(finished[0]), final_metrics(finished[1])
    assert first.keys() == second.keys()
    for key in first:
        assert len(first[key]) == len(second[key]), key  # every epoch's point, the restored ones too
        np.testing.assert_allclose(first[key], second[key], rtol=1e-5, atol=1e-7, err_msg=key)
    pd.testing.assert_frame_equal(pd.read_csv(killed_dir / "submission.csv"),
                                  pd.read_csv(reference_dir / "submission.csv"))
    assert not (killed_dir / ".checkpoints").exists()
