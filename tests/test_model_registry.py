"""Each run's model in MLflow's format (issue 13): logged with its signature, input example and
metadata, loaded back to score raw test rows exactly as the run did, registered with a
``@champion`` that moves only on a better score, ``predict`` without training, and ``blend``.

One MLflow store for the module: a few tiny runs (2 folds, 60 houses; 90 digits, 1 epoch) that
every test reads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, run_cli, synthetic_frames, write_competition, write_house_prices
from mlflow.tracking import MlflowClient
from sklearn.pipeline import Pipeline

from features.columns import SelectColumns

# Each test submits (trains, registers) or reads the submits of the shared store: long trainings.
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

HOUSES_TOML = """\
name = "{name}"
target = "SalePrice"
id = "Id"
task = "regression"
metric = "log_rmse"
target_transform = "log"
outliers = "GrLivArea > 2600 and SalePrice < 230000"
[columns]
categorical = ["MSSubClass"]
[cv]
folds = {folds}
seed = 42
[model]
name = "ensemble"
[ensemble]
models = ["ridge", "lasso"]
method = "best"
[features.differences]
HouseAge = ["YrSold", "YearBuilt"]
"""

DIGITS_TOML = """\
name = "tiny-digits"
kind = "image"
layout = "digit-recognizer"
target = "label"
id = "ImageId"
task = "multiclass"
metric = "accuracy"
[cv]
holdout = 0.2
seed = 0
[model]
name = "lenet"
[model.params]
epochs = 1
"""


def write_houses(folder: Path) -> Path:
    return write_house_prices(folder, seed=3, n_train=60)


def write_digits(folder: Path, n_train: int = 90, n_test: int = 20) -> Path:
    """Learnable 28x28 digits in Kaggle's layout: a blocky template per class plus noise."""
    rng = np.random.default_rng(0)
    templates = np.kron(np.random.default_rng(99).integers(0, 256, (10, 7, 7)), np.ones((4, 4))).astype(np.uint8)
    y = np.arange(n_train + n_test) % 10
    rng.shuffle(y)
    images = (templates[y] // 5 * 4 + rng.integers(0, 256, (len(y), 28, 28), dtype=np.uint8) // 5).reshape(len(y), -1)
    columns = [f"pixel{i}" for i in range(784)]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(images[:n_train], columns=columns).assign(label=y[:n_train])[["label", *columns]].to_csv(
        folder / "train.csv", index=False)
    pd.DataFrame(images[n_train:], columns=columns).to_csv(folder / "test.csv", index=False)
    pd.DataFrame({"ImageId": np.arange(1, n_test + 1), "Label": 0}).to_csv(folder / "sample_submission.csv", index=False)
    return folder


def submit(*args) -> str:
    """``submit ARGS`` in this process; returns the run id."""
    result = run_cli("submit", "--study", "ignore", *args)
    assert result.code == 0, result.err
    return re.search(r"mlflow run (\w+) in", result.out).group(1)


def client() -> MlflowClient:
    return MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])


def champion(name: str) -> str:
    return str(client().get_model_version_by_alias(name, "champion").version)


@pytest.fixture(scope="module")
def store(module_workdir):
    """The runs, in this order: ridge, lasso, the ensemble of both, mlp (each registered as a
    version of house-prices, the champion noted after each), lasso on 3 folds (registered, not
    comparable), a ``train`` (not registered); an image run (tiny-digits)."""
    folder, _ = module_workdir
    houses, digits = write_houses(folder / "houses"), write_digits(folder / "digits")
    config = folder / "houses.toml"
    config.write_text(HOUSES_TOML.format(name="house-prices", folds=2))
    three_folds = folder / "houses-3.toml"
    three_folds.write_text(HOUSES_TOML.format(name="house-prices", folds=3))
    (folder / "digits.toml").write_text(DIGITS_TOML)
    common = ["--config", config, "--data-dir", houses]
    runs, champions = {}, []
    for name, extra in (("ridge", ["--model", "ridge"]), ("lasso", ["--model", "lasso"]), ("ensemble", []),
                        ("mlp", ["--model", "mlp", "-p", "epochs=5", "-p", "hidden=(16,)"])):
        runs[name] = submit(*common, *extra, "--output", folder / f"{name}.csv")
        champions.append(champion("house-prices"))
    runs["lasso-3"] = submit("--config", three_folds, "--data-dir", houses, "--model", "lasso",
                             "--output", folder / "lasso-3.csv")
    champions.append(champion("house-prices"))
    trained = run_cli("train", *common, "--model", "ridge", "--study", "ignore")
    assert trained.code == 0, trained.err
    runs["image"] = submit("--config", folder / "digits.toml", "--data-dir", digits, "--output", folder / "image.csv")
    return SimpleNamespace(folder=folder, houses=houses, digits=digits, runs=runs, champions=champions, config=config)


def _score(run_id: str) -> float:
    return client().get_run(run_id).data.metrics["cv_log_rmse"]


# --- the logged model ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ensemble", "mlp", "image"])
def test_the_logged_model_scores_raw_test_rows_as_the_run_did(store, name):
    """Loaded back by MLflow alone, the model takes test.csv as it is and gives the submission."""
    data, (id_column, target) = (store.digits, ("ImageId", "Label")) if name == "image" else (store.houses, ("Id", "SalePrice"))
    model = mlflow.pyfunc.load_model(f"runs:/{store.runs[name]}/model")
    raw = pd.read_csv(data / "test.csv")
    predicted = np.asarray(model.predict(raw))
    written = pd.read_csv(store.folder / f"{name}.csv")
    ids = raw[id_column] if id_column in raw.columns else np.arange(1, len(raw) + 1)
    expected = written.set_index(id_column)[target].loc[ids].to_numpy()
    if name == "image":
        np.testing.assert_array_equal(predicted, expected)
    else:
        rtol = 1e-6 if name == "mlp" else 1e-9  # a torch net predicts float32, written as its shortest repr
        np.testing.assert_allclose(predicted, expected, rtol=rtol)
        assert model.predict(raw.iloc[[3]])[0] == pytest.approx(expected[3], rel=rtol)  # one row alone too


@pytest.mark.parametrize("name", ["ensemble", "image"])
def test_the_model_has_a_signature_an_input_example_and_the_pipelines_metadata(store, name):
    info = mlflow.models.get_model_info(f"runs:/{store.runs[name]}/model")
    data = store.digits if name == "image" else store.houses
    test_columns = list(pd.read_csv(data / "test.csv", nrows=1).columns)
    inputs = info.signature.inputs.to_dict()
    assert [c["name"] for c in inputs] == test_columns
    assert info.signature.outputs is not None and info.saved_input_example_info is not None
    assert info.metadata["competition"] == ("tiny-digits" if name == "image" else "house-prices")
    assert info.run_id == store.runs[name]
    if name == "ensemble":
        types = {c["name"]: c["type"] for c in inputs}
        assert types["Neighborhood"] == "string" and types["LotArea"] == "any"
        assert info.metadata["output"] == "values" and info.metadata["positive"] is True
        fitted = mlflow.sklearn.load_model(f"runs:/{store.runs[name]}/model")
        assert isinstance(fitted, Pipeline) and isinstance(fitted.steps[0][1], SelectColumns)
    else:
        assert info.flavors["python_function"]["loader_module"] == "pipeline.models_io"
        assert info.metadata["output"] == "labels"


def test_the_image_model_is_weights_and_json_loaded_without_unpickling(store, tmp_path):
    local = Path(mlflow.artifacts.download_artifacts(f"runs:/{store.runs['image']}/model", dst_path=str(tmp_path)))
    files = {p.name for p in local.rglob("*") if p.is_file()}
    assert {"model.pt", "model.json", "MLmodel"} <= files
    assert not any(name.endswith((".pkl", ".pickle", ".joblib")) for name in files)
    state = torch.load(next(local.rglob("model.pt")), weights_only=True)  # plain tensors and numbers
    described = json.loads(next(local.rglob("model.json")).read_text())
    assert described["arch"] == "lenet" and described["columns"][:2] == ["pixel0", "pixel1"]
    assert set(state) >= {"model", "classes"}


@pytest.mark.parametrize("task, placeholder, model, output", [
    ("binary", 0.5, "logistic", "proba"),  # roc_auc: the model's pyfunc gives probabilities
    ("multiclass", 0, "hist_gbm_classifier", "labels"),  # text labels
])
def test_a_classifier_predicts_what_its_submission_holds(workdir, task, placeholder, model, output):
    train, test, _ = synthetic_frames(task)
    data = write_competition(workdir / "data", train, test, placeholder=placeholder)
    common = ["-c", f"synthetic-{task}", "--target", "target", "--id", "id", "--data-dir", data]
    result = run_cli("submit", *common, "--model", model, "-p", "max_iter=20" if model != "logistic" else "C=1.0",
                     "-o", workdir / "submission.csv")
    assert result.code == 0, result.err
    uri = f"models:/synthetic-{task}@champion"
    assert mlflow.models.get_model_info(uri).metadata["output"] == output
    raw = np.asarray(mlflow.pyfunc.load_model(uri).predict(pd.read_csv(data / "test.csv")))
    assert raw.shape == ((len(test), 2) if output == "proba" else (len(test),))
    result = run_cli("predict", "--model", uri, "--input", data / "test.csv", "--output", workdir / "predicted.csv")
    assert result.code == 0, result.err
    assert (workdir / "predicted.csv").read_bytes() == (workdir / "submission.csv").read_bytes()


# --- the registry ----------------------------------------------------------------------------


def test_each_submit_is_a_version_and_the_champion_moves_only_on_a_better_score(store):
    names = ["ridge", "lasso", "ensemble", "mlp"]
    scores = {name: _score(store.runs[name]) for name in names}
    versions = {str(v.version): v for v in client().search_model_versions("name='house-prices'")}
    assert len(versions) == 5  # four 2-fold submits, one 3-fold; the train registered nothing
    by_run = {v.run_id: str(v.version) for v in versions.values()}
    best, expected = None, []
    for name in names:  # the champion after each: the best 2-fold score so far
        if best is None or scores[name] < scores[best]:
            best = name
        expected.append(by_run[store.runs[best]])
    assert store.champions[:4] == expected
    assert store.champions[4] == store.champions[3]  # 3 folds: not comparable, whatever its score
    assert len(set(store.champions[:4])) >= 2  # it moved...
    assert any(a == b for a, b in zip(store.champions[:3], store.champions[1:4], strict=True))  # ...and it stayed
    champion_version = versions[store.champions[-1]]
    assert champion_version.tags["metric"] == "log_rmse" and champion_version.tags["folds"] == "2-fold, seed 42"
    assert float(champion_version.tags["cv_score"]) == pytest.approx(min(scores.values()))


def test_the_run_and_its_model_version_point_at_each_other(store):
    for name in ("ensemble", "image"):
        run = client().get_run(store.runs[name])
        model_name, version = run.data.tags["registered_model"], run.data.tags["registered_model_version"]
        found = client().get_model_version(model_name, version)
        assert found.run_id == run.info.run_id and found.tags["run_id"] == run.info.run_id
    assert champion("tiny-digits") == "1"


# --- predict ---------------------------------------------------------------------------------


def test_predict_with_the_champion_writes_the_champions_submission(store):
    out = store.folder / "predicted.csv"
    result = run_cli("predict", "--model", "models:/house-prices@champion", "--input", store.houses / "test.csv",
                     "--output", out)
    assert result.code == 0, result.err
    run_id = client().get_model_version_by_alias("house-prices", "champion").run_id
    name = next(name for name, found in store.runs.items() if found == run_id)
    assert out.read_bytes() == (store.folder / f"{name}.csv").read_bytes()


def test_make_predict_with_a_run_uri_and_the_default_input(store):
    if shutil.which("make") is None:
        pytest.skip("no make")
    out = store.folder / "make-predicted.csv"
    done = subprocess.run(
        ["make", "--no-print-directory", "-f", str(REPO / "Makefile"), "-o", ".venv/.installed", f"PY={sys.executable}",
         "predict", f"MODEL_URI=runs:/{store.runs['image']}/model", "COMPETITION=tiny-digits",
         f"DATA_DIR={store.digits}", f"OUTPUT={out}"],
        cwd=store.folder, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == (store.folder / "image.csv").read_bytes()


def _bad_houses(store, edit) -> Path:
    frame = pd.read_csv(store.houses / "test.csv")
    path = store.folder / "bad" / "test.csv"
    path.parent.mkdir(exist_ok=True)
    edit(frame).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("case, message", [
    ("missing column", "test.csv: missing column 'LotArea' (the model's input)"),
    ("wrong type", "test.csv: column 'GrLivArea' is numeric but row 4 holds 'big'"),
    ("another competition", "is a model of 'tiny-digits', not of 'house-prices'"),
    ("no such model", "no model at models:/house-prices@nobody"),
    ("no such file", "missing file:"),
])
def test_predict_on_bad_input_says_one_line_and_leaves_the_earlier_submission(store, case, message):
    earlier = store.folder / "earlier.csv"
    earlier.write_text("Id,SalePrice\n1,100000\n")
    model, args = "models:/house-prices@champion", []
    if case == "missing column":
        args = ["--input", _bad_houses(store, lambda f: f.drop(columns=["LotArea"]))]
    elif case == "wrong type":
        args = ["--input", _bad_houses(store, lambda f: f.astype({"GrLivArea": object}).assign(
            GrLivArea=lambda g: g["GrLivArea"].where(g.index != 2, "big")))]
    elif case == "another competition":
        model, args = f"runs:/{store.runs['image']}/model", ["--competition", "house-prices"]
    elif case == "no such model":
        model = "models:/house-prices@nobody"
    else:
        args = ["--input", store.folder / "nowhere" / "test.csv"]
    result = run_cli("predict", "--model", model, *args, "--output", earlier)
    assert result.code == 2, result.err
    assert len(result.err_lines) == 1 and result.err_lines[0].startswith("error: ") and message in result.err
    assert earlier.read_text() == "Id,SalePrice\n1,100000\n"


# --- blend -----------------------------------------------------------------------------------


def test_blending_the_members_runs_gives_the_ensembles_weights_score_and_submission(store):
    out = store.folder / "blend.csv"
    result = run_cli("blend", store.runs["ridge"], store.runs["lasso"], "--data-dir", store.houses, "--output", out)
    assert result.code == 0, result.err
    ensemble = client().get_run(store.runs["ensemble"])
    blend_run = client().get_run(re.search(r"mlflow run (\w+) in", result.out).group(1))
    assert blend_run.data.tags["stage"] == "blend" and blend_run.info.status == "FINISHED"
    for name in ("ridge", "lasso"):
        assert float(blend_run.data.params[f"weight.{store.runs[name]}"]) == pytest.approx(
            float(ensemble.data.params[f"weight.{name}"]), abs=1e-4)
    assert blend_run.data.metrics["cv_log_rmse"] == pytest.approx(ensemble.data.metrics["cv_log_rmse"], rel=1e-9)
    blended, stacked = pd.read_csv(out), pd.read_csv(store.folder / "ensemble.csv")
    np.testing.assert_allclose(blended["SalePrice"], stacked["SalePrice"], rtol=1e-6)


def test_blend_refuses_runs_it_cannot_combine(store):
    cases = [([store.runs["ridge"]], "at least two"),
             ([store.runs["ridge"], store.runs["image"]], "no out-of-fold predictions to blend"),
             ([store.runs["ridge"], store.runs["lasso-3"]], "different rows or folds")]
    for run_ids, message in cases:
        result = run_cli("blend", *run_ids, "--data-dir", store.houses, "--output", store.folder / "never.csv")
        assert result.code == 2 and len(result.err_lines) == 1 and message in result.err, result.err
    assert not (store.folder / "never.csv").exists()
