"""A folder of PNG files runs end to end with no config (``submit --data-dir D --target T --id I``):
labels as names, one probability column per class (log loss, both column conventions), and a
binary probability (AUC); the metric and task come from the sample submission as for tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import mlflow_runs, run_cli
from PIL import Image

from pipeline.tasks import image_setup as vision

pytestmark = pytest.mark.usefixtures("one_thread")

COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "frog": (40, 40, 200), "0": (90, 90, 90), "1": (40, 160, 40)}
ANIMALS = ["cat", "dog", "frog"]
FAST = ["-p", "epochs=4", "-p", "batch_size=8"]


def picture(rng, rgb) -> np.ndarray:
    """A 10×10 image of one colour, with noise: a class anyone can tell from the others."""
    noise = rng.integers(-30, 31, (10, 10, 3))
    return np.clip(np.array(rgb)[None, None] + noise, 0, 255).astype(np.uint8)


def write_folder(root: Path, classes: list[str], sample_columns, *, target="label", id_column="id",
                 n_train=48, n_test=12, seed=0) -> np.ndarray:
    """``train/<id>.png`` with ``labels.csv``, ``test/<id>.png`` and a sample; returns the test labels."""
    rng = np.random.default_rng(seed)
    labels = np.array(classes)[np.arange(n_train + n_test) % len(classes)]
    rng.shuffle(labels)
    for folder, ids in (("train", range(n_train)), ("test", range(n_train, n_train + n_test))):
        (root / folder).mkdir(parents=True)
        for i in ids:
            Image.fromarray(picture(rng, COLOURS[labels[i]])).save(root / folder / f"img{i}.png")
    pd.DataFrame({id_column: [f"img{i}" for i in range(n_train)], target: labels[:n_train]}).to_csv(
        root / "labels.csv", index=False)
    test_ids = [f"img{i}" for i in range(n_train, n_train + n_test)][::-1]
    pd.DataFrame({id_column: test_ids, **sample_columns}).to_csv(root / "sample_submission.csv", index=False)
    return labels[n_train:][::-1]


def submit(data: Path, target: str, id_column: str = "id"):
    result = run_cli("submit", "--data-dir", data, "--target", target, "--id", id_column, *FAST,
                     "-o", "submission.csv")
    assert result.code == 0, result.err
    return result, pd.read_csv("submission.csv", dtype={id_column: str})


def test_label_names_come_back_as_names(workdir):
    truth = write_folder(workdir / "colours", ANIMALS, {"label": "cat"})
    result, frame = submit(workdir / "colours", "label")
    assert "layout image-folder" in result.out and "validation accuracy" in result.out
    assert "10×10×3: small colour photos (default whitenet)" in result.out
    assert list(frame.columns) == ["id", "label"] and list(frame.id) == [f"img{i}" for i in range(59, 47, -1)]
    assert set(frame.label) <= set(ANIMALS)
    assert (frame.label.to_numpy() == truth).mean() >= 0.75  # learnt, not guessed (chance: 1/3)
    (run,) = mlflow_runs("colours")
    assert "cv_accuracy" in run.data.metrics


@pytest.mark.parametrize("naming", ["class", "target_class"])
def test_log_loss_with_a_probability_column_per_class(workdir, naming):
    columns = {(c if naming == "class" else f"breed_{c}"): 1 / 3 for c in ANIMALS}
    write_folder(workdir / "breeds", ANIMALS, columns, target="breed")
    result, frame = submit(workdir / "breeds", "breed")
    assert "validation log_loss" in result.out
    assert list(frame.columns) == ["id", *columns]
    proba = frame[list(columns)].to_numpy()
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-4) and (proba >= 0).all()
    assert "cv_log_loss" in mlflow_runs("breeds")[0].data.metrics


def test_binary_auc_with_a_probability_column(workdir):
    truth = write_folder(workdir / "cactus", ["0", "1"], {"has_cactus": 0.5}, target="has_cactus")
    result, frame = submit(workdir / "cactus", "has_cactus")
    assert "validation roc_auc" in result.out
    assert list(frame.columns) == ["id", "has_cactus"]
    p = frame.has_cactus.to_numpy()
    assert ((p >= 0) & (p <= 1)).all()
    positive = truth == "1"
    assert p[positive].mean() > p[~positive].mean()  # P(has_cactus = 1), not of the other class


@pytest.mark.parametrize(("shape", "kind", "model"), [
    ((5, 28, 28), "small gray glyphs", "whitenet"), ((5, 3, 32, 32), "small colour photos", "whitenet"),
    ((5, 3, 64, 64), "larger photos", "whitenet"), ((5, 96, 96), "larger photos", "whitenet"),
])
def test_each_kind_of_image_gets_its_default(shape, kind, model):
    assert vision.image_kind(np.zeros(shape, np.uint8)) == kind and vision.KIND_DEFAULTS[kind][0] == model


def test_a_bad_image_is_one_line_before_any_run(workdir):
    write_folder(workdir / "broken", ANIMALS, {"label": "cat"})
    (workdir / "broken" / "train" / "img3.png").write_bytes(b"\x89PNG truncated")
    result = run_cli("submit", "--data-dir", workdir / "broken", "--target", "label", "--id", "id", *FAST)
    assert result.code == 2 and result.err_lines == [f"error: {workdir / 'broken' / 'train' / 'img3.png'}: "
                                                     "not a readable image (UnidentifiedImageError)"]
    assert mlflow_runs("broken") == [] and not Path("submission.csv").exists()
