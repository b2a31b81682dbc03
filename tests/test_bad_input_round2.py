"""Issue 31's bad input: the store and the study are never outputs, labels stay labels, make runs
no shell, and the medium and low cases of its audit, one test each.

A bad case: one ``error:`` line, exit 2, no fit started, no MLflow run, every file in the working
folder byte-identical (an earlier submission, the MLflow store and the Optuna journal included).
The cases that must work are checked for their exact output. In-process CLI calls
(``conftest.run_cli``) with ridge or logistic on tiny tables keep it to seconds.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import shlex
import shutil
import socket
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, mlflow_runs, run_cli, snapshot, synthetic_frames
from test_bad_input import OLD_SUBMISSION, house, spy_on_fits, submit  # noqa: F401 (house: a fixture)
from test_bad_input_runs import AD_HOC, write_plain

from pipeline import submission
from pipeline.data import csvfiles, image_decode, image_folders
from pipeline.metrics import infer_metric

BAD_LINE = "error: "


@pytest.fixture
def trained(monkeypatch) -> list[str]:
    return spy_on_fits(monkeypatch)


def assert_refused(result, fragments, workdir, before, trained, runs: int = 0) -> None:
    """One line, exit 2, no fit, no new MLflow run, every file as it was."""
    assert result.code == 2, (result.out, result.err)
    assert len(result.err_lines) == 1 and result.err.startswith(BAD_LINE), result.err
    for fragment in fragments:
        assert fragment in result.err, (fragment, result.err)
    assert trained == []
    assert len(mlflow_runs()) == runs
    assert snapshot(workdir) == before


def plain(workdir, task="regression", change=lambda train, test: (train, test), sample=None):
    """A competition without a config in ``workdir/data``, an earlier submission beside it."""
    data = workdir / "data"
    train, test, _ = synthetic_frames(task)
    write_plain(data, *change(train, test), sample=sample)
    (workdir / "submission.csv").write_bytes(OLD_SUBMISSION)
    return data


# --- High 1, 2: nothing the package keeps is an output ---------------------------------------------

def test_1_submit_onto_the_mlflow_store_after_a_run_is_refused(house):  # noqa: F811
    workdir, data, _, config_file, trained = house
    first, _ = submit(data, config_file)
    assert first.code == 0, first.err
    trained.clear()
    before = snapshot(workdir)
    result = run_cli("submit", "--config", config_file, "--data-dir", data, "-m", "ridge", "-o", "mlflow.db")
    assert_refused(result, ["--output mlflow.db is the MLflow store"], workdir, before, trained, runs=1)


def _link(name):
    def make(work):
        (work / "link").symlink_to(work / name)
        return "link"
    return make


KEPT = {
    "the store through ../": (lambda work: "data/../mlflow.db", "the MLflow store"),
    "the store in another case": (lambda work: "MLflow.DB", "the MLflow store"),
    "the store through a symlink": (_link("mlflow.db"), "the MLflow store"),
    "the store's SQLite journal": (lambda work: "mlflow.db-journal", "the MLflow store"),
    "the artifact root": (lambda work: "mlartifacts/1/submission.csv", "in the MLflow artifact store"),
    "the Optuna journal": (lambda work: ".optuna/journal.log", "the Optuna storage"),
    "the checkpoints": (lambda work: ".checkpoints/house-prices/sub.csv", "the checkpoints folder"),
    "the image cache": (lambda work: "data/.image_cache/train-0.npy", "the image cache"),
    "the virtual environment": (lambda work: ".venv/bin/python", "the Python environment"),
}


@pytest.mark.parametrize("case", list(KEPT))
def test_1_2_nothing_the_package_keeps_is_an_output(house, case):  # noqa: F811
    workdir, data, _, config_file, trained = house
    output, fragment = KEPT[case]
    target = output(workdir)
    before = snapshot(workdir)
    result = run_cli("submit", "--config", config_file, "--data-dir", data, "-m", "ridge", "-o", target)
    assert_refused(result, [f"--output {target} is", fragment], workdir, before, trained)


def test_1_an_optuna_sqlite_storage_and_predict_and_blend_are_guarded_too(house, monkeypatch):  # noqa: F811
    workdir, data, _, config_file, trained = house
    monkeypatch.setenv("OPTUNA_STORAGE", f"sqlite:///{workdir / 'studies.db'}")
    before = snapshot(workdir)
    result = run_cli("submit", "--config", config_file, "--data-dir", data, "-m", "ridge", "-o", "studies.db")
    assert_refused(result, ["is the Optuna storage"], workdir, before, trained)
    predicted = run_cli("predict", "--model", "runs:/0123/model", "-o", "mlflow.db")
    assert_refused(predicted, ["--output mlflow.db is the MLflow store"], workdir, before, trained)
    blended = run_cli("blend", "a", "b", "-o", "./studies.db")
    assert_refused(blended, ["is the Optuna storage"], workdir, before, trained)


def test_2_submit_onto_the_journal_of_its_own_study_is_refused(house):  # noqa: F811
    workdir, data, _, config_file, trained = house
    tuned = run_cli("tune", "--config", config_file, "--data-dir", data, "-m", "ridge", "--trials", "1")
    assert tuned.code == 0, tuned.err
    assert (workdir / ".optuna" / "journal.log").is_file()
    trained.clear()
    runs = len(mlflow_runs())
    before = snapshot(workdir)
    result = run_cli("submit", "--config", config_file, "--data-dir", data, "-m", "ridge", "-o", ".optuna/journal.log")
    assert_refused(result, ["--output .optuna/journal.log is the Optuna storage"], workdir, before, trained, runs)


# --- High 3, 5: a metric is never inferred from a label's spaces; a label metric writes labels ----

CITIES = {"high": "New York", "low": "Los Angeles", "middle": "Chicago"}


def test_3_labels_with_spaces_are_labels_not_a_ranking(workdir):
    data = plain(workdir, "multiclass", lambda train, test: (train.assign(target=train["target"].map(CITIES)), test),
                 sample=None)
    test = pd.read_csv(data / "test.csv")
    pd.DataFrame({"id": test["id"], "target": "New York"}).to_csv(data / "sample_submission.csv", index=False)
    result = run_cli("submit", "--data-dir", data, *AD_HOC, "-m", "logistic", "-o", "submission.csv")
    assert result.code == 0, result.err
    assert "metric: accuracy (inferred)" in result.out
    written = pd.read_csv("submission.csv", dtype=str)
    assert set(written["target"]) <= set(CITIES.values()) and len(written) == len(test)


def test_3_map_is_inferred_only_from_lists_of_known_labels():
    labels = pd.Series(["New York", "Chicago", "Los Angeles"])
    assert infer_metric("multiclass", pd.Series(["New York"] * 3), labels) == "accuracy"
    assert infer_metric("multiclass", pd.Series(["a b c"] * 3), pd.Series(["a", "b", "c", "d"])) == "map@3"
    assert infer_metric("multiclass", pd.Series(["a b x"] * 3), pd.Series(["a", "b", "c"])) == "accuracy"


def test_5_map_at_3_on_a_binary_0_1_column_writes_labels(workdir):
    data = plain(workdir, "binary")
    result = run_cli("submit", "--data-dir", data, *AD_HOC, "-m", "logistic", "--metric", "map@3", "-o", "submission.csv")
    assert result.code == 0, result.err
    assert "one label is written, scored by accuracy" in result.out
    written = pd.read_csv("submission.csv")
    assert pd.api.types.is_integer_dtype(written["target"]) and set(written["target"]) <= {0, 1}
    cv = next(line for line in result.out.splitlines() if "cv accuracy" in line.lower() or "accuracy" in line)
    assert "0.00000" not in cv


# --- High 4: CSV by the csv module's rules ----------------------------------------------------------

ODD = {"high": "\r=2+2", "low": 'say "hi", then', "middle": "two\nlines"}


def test_4_labels_with_cr_quotes_or_commas_read_back_as_written(workdir):
    data = workdir / "data"
    train, test, _ = synthetic_frames("multiclass")
    data.mkdir()
    train.assign(target=train["target"].map(ODD)).to_csv(data / "train.csv", index=False, quoting=csv.QUOTE_NONNUMERIC)
    test.to_csv(data / "test.csv", index=False)
    pd.DataFrame({"id": test["id"], "target": "x"}).to_csv(data / "sample_submission.csv", index=False)
    result = run_cli("submit", "--data-dir", data, *AD_HOC, "-m", "logistic", "-o", "submission.csv")
    assert result.code == 0, result.err
    with open("submission.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    frame = pd.read_csv("submission.csv", dtype=str, keep_default_na=False)
    assert len(rows) == len(test) + 1 and len(frame) == len(test)
    assert [row[1] for row in rows[1:]] == frame["target"].tolist()
    assert [row[0] for row in rows[1:]] == frame["id"].tolist() == [str(i) for i in test["id"]]
    assert set(frame["target"]) <= {"'\r=2+2", 'say "hi", then', "two\nlines"}
    assert "=2+2" not in frame["id"].tolist()


@pytest.mark.parametrize("layout", ["comma", "semicolon", "gzip", "zip"])
def test_4_a_quoted_field_with_cr_or_lf_is_read_as_one_field(tmp_path, layout):
    rows = [["id", "x", "target"], *[[str(i), f"{i}.5", "a"] for i in range(6)]]
    rows[2][2], rows[3][2], rows[4][2] = "\r=2+2", "x\ny", "\r\n=3"
    text = io.StringIO()
    csv.writer(text, delimiter=";" if layout == "semicolon" else ",", lineterminator="\n",
               quoting=csv.QUOTE_ALL).writerows(rows)
    path = tmp_path / "train.csv"
    if layout == "gzip":
        import gzip
        path.write_bytes(gzip.compress(text.getvalue().encode()))
    elif layout == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("train.csv", text.getvalue())
    else:
        path.write_text(text.getvalue(), newline="")
    frame = csvfiles.read(path, dtype={"id": "str"})
    assert frame["id"].tolist() == [row[0] for row in rows[1:]]
    assert frame["target"].tolist() == [row[2] for row in rows[1:]]


def test_4_the_formula_escape_comes_after_leading_spaces_and_controls():
    values = np.array([" =1+1", "\x00=cmd", "\n@x", " -1.5", "plain", "\r=2+2"], dtype=object)
    assert submission.escape_formulas(values).tolist() == ["' =1+1", "'\x00=cmd", "'\n@x", " -1.5", "plain", "'\r=2+2"]


# --- High 6: the Makefile passes values, never code -------------------------------------------------

HOSTILE = "x'; touch pwned1; echo \"$(shell touch pwned2)\" `touch pwned3` $$(touch pwned4) #"
ONE_VALUE = {  # variable: (target, flag), the value one argument after the flag
    "COMPETITION": ("submit", "--competition"), "DATA_DIR": ("submit", "--data-dir"),
    "TARGET": ("submit", "--target"), "ID": ("submit", "--id"), "METRIC": ("submit", "--metric"),
    "TIME": ("submit", "--time-limit"), "REPEATS": ("submit", "--repeats"), "SEEDS": ("submit", "--seeds"),
    "FOLD_WORKERS": ("submit", "--fold-workers"), "CLUSTER": ("submit", "--cluster"),
    "OUTPUT": ("submit", "--output"), "MODEL": ("submit", "--model"), "STUDY": ("submit", "--study"),
    "DROP_SHIFTED": ("submit", "--drop-shifted"), "NPROC": ("submit", "--nproc"), "NNODES": ("submit", "--nnodes"),
    "NODE_RANK": ("submit", "--node-rank"), "MASTER_ADDR": ("submit", "--master-addr"),
    "MASTER_PORT": ("submit", "--master-port"), "MESSAGE": ("submit", "--message"), "WAIT": ("submit", "--wait"),
    "PORT": ("ui", "--port"), "TRIALS": ("tune", "--trials"), "JOBS": ("tune", "--jobs"),
    "STORAGE": ("tune", "--storage"), "DASHBOARD_PORT": ("dashboard", "--port"), "MODEL_URI": ("predict", "--model"),
    "INPUT": ("predict", "--input"), "SERVE_PORT": ("serve", "--port"), "RUN": ("leaderboard", "--run"),
    "SUBMISSION": ("leaderboard", "--submission"), "BUDGET": ("bench-tune", "--budget-minutes"),
    "TASKS": ("bench-image-suite", "--tasks"),
}
LISTS = {"PARAMS": ("submit", "--param"), "RUNS": ("blend", None), "BENCH_ARGS": ("bench-images", None)}


def _dry(folder: Path, target: str, *assignments: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-n", "-s", "-f", str(REPO / "Makefile"), "-o", ".venv/.installed", "PY=python",
                           target, "SUBMIT=1", *assignments], cwd=folder, capture_output=True, text=True,
                          env=env or {"PATH": os.environ["PATH"]})


def _command(made: subprocess.CompletedProcess) -> list[str]:
    assert made.returncode == 0, made.stderr
    [line] = [line for line in made.stdout.splitlines() if line.startswith("python ")]
    return shlex.split(line)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_6_each_make_variable_reaches_the_cli_as_one_argument(tmp_path):
    expected = HOSTILE.replace("$$", "$")
    for name, (target, flag) in ONE_VALUE.items():
        argv = _command(_dry(tmp_path, target, f"{name}={HOSTILE}"))
        assert argv[argv.index(flag) + 1] == expected, (name, argv)
    words = "a=1 b=';touch${IFS}pwned5' c=$(shell${IFS}touch${IFS}pwned6)"
    for name, (target, flag) in LISTS.items():
        argv = _command(_dry(tmp_path, target, f"{name}={words}"))
        given = [w for w in argv if w.startswith(("a=", "b=", "c="))]
        assert given == ["a=1", "b=';touch${IFS}pwned5'", "c=$(shell${IFS}touch${IFS}pwned6)"], (name, argv)
        if flag:
            assert all(argv[argv.index(w) - 1] == flag for w in given)
    helped = subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "help", f"COMPETITION={HOSTILE}",
                             f"OUTPUT={HOSTILE}", f"NPROC={HOSTILE}"], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": os.environ["PATH"]})
    assert helped.returncode == 0 and f"COMPETITION={expected} " in helped.stdout, helped.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # make ran nothing, and neither would the shell


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_6_competition_is_not_read_from_the_environment(tmp_path):
    made = _dry(tmp_path, "submit", env={"PATH": os.environ["PATH"], "COMPETITION": "titanic"})
    assert "--competition" not in _command(made)
    assert "COMPETITION in the environment is ignored" in made.stderr
    given = _command(_dry(tmp_path, "submit", "COMPETITION=titanic", env={"PATH": os.environ["PATH"]}))
    assert given[given.index("--competition") + 1] == "titanic"


# --- Medium ----------------------------------------------------------------------------------------

def test_medium_a_full_disk_under_the_store_closes_the_run_failed_in_one_line(house, monkeypatch):  # noqa: F811
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    workdir, data, _, config_file, _ = house

    def full(self, local_file, artifact_path=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(workdir / "mlartifacts"))

    monkeypatch.setattr(LocalArtifactRepository, "log_artifact", full)
    monkeypatch.setattr(LocalArtifactRepository, "log_artifacts", full)
    result, _ = submit(data, config_file)
    assert result.code == 2, result.err
    assert len(result.err_lines) == 1 and result.err.startswith("error: disk full: no space left on /"), result.err
    assert "the run is closed FAILED" in result.err
    assert [r.info.status for r in mlflow_runs()] == ["FAILED"]
    assert (workdir / "submission.csv").read_bytes() == OLD_SUBMISSION


@pytest.fixture
def no_exec(monkeypatch):
    def refuse(*args):
        raise AssertionError(f"started {args}")

    monkeypatch.setattr(os, "execv", refuse)


def test_medium_nproc_on_a_table_is_refused_before_torchrun(house, no_exec):  # noqa: F811
    workdir, data, _, config_file, trained = house
    before = snapshot(workdir)
    result, _ = submit(data, config_file, "--nproc", "2")
    assert_refused(result, ["--nproc 2", "is a table", "NPROC=1"], workdir, before, trained)


@pytest.mark.parametrize("case", ["-p learning_rate=abc", "--drop-shifted 100"])
def test_medium_checked_before_the_run_starts(house, case):  # noqa: F811
    workdir, data, _, config_file, trained = house
    before = snapshot(workdir)
    extra = {"-p learning_rate=abc": ["-m", "lightgbm", "-p", "learning_rate=abc"],
             "--drop-shifted 100": ["--drop-shifted", "100"]}[case]
    result = run_cli("submit", "--config", config_file, "--data-dir", data, *(extra if "-m" in extra else
                     ["-m", "ridge", *extra]), "-o", "submission.csv")
    fragment = {"-p learning_rate=abc": "learning_rate='abc' (command line) is not a number",
                "--drop-shifted 100": "--drop-shifted 100: the table has only"}[case]
    assert_refused(result, [fragment], workdir, before, trained)


def test_medium_a_sums_feature_named_with_quotes_and_brackets_runs(workdir):
    data = plain(workdir)
    config_file = workdir / "plain.toml"
    config_file.write_text('name = "plain"\ntarget = "target"\nid = "id"\n'
                           '[features.sums]\n\'Sum "of" (x1 + x2)\' = ["x1", "x2"]\n')
    result = run_cli("submit", "--config", config_file, "--data-dir", data, "-m", "ridge", "-o", "submission.csv")
    assert result.code == 0, result.err
    [run] = mlflow_runs()
    assert run.info.status == "FINISHED"
    assert any("Sum _of_ _x1 _ x2_" in key for key in run.data.params), sorted(run.data.params)


# --- Low -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_low_a_time_limit_that_is_no_finite_number_is_refused(house, value):  # noqa: F811
    workdir, data, _, config_file, trained = house
    before = snapshot(workdir)
    result, _ = submit(data, config_file, f"--time-limit={value}")
    assert_refused(result, ["--time-limit", "finite number"], workdir, before, trained)


def test_low_task_regression_on_a_text_target(workdir, trained):
    data = plain(workdir, "multiclass")
    before = snapshot(workdir)
    result = run_cli("submit", "--data-dir", data, *AD_HOC, "-m", "ridge", "--task", "regression")
    assert_refused(result, ["train.csv: task regression needs numbers", "'target'", "at row 2"],
                   workdir, before, trained)


def test_low_task_binary_on_three_classes(workdir, trained):
    data = plain(workdir, "multiclass")
    before = snapshot(workdir)
    result = run_cli("submit", "--data-dir", data, *AD_HOC, "-m", "logistic", "--task", "binary")
    assert_refused(result, ["task binary needs two classes", "holds 3"], workdir, before, trained)


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_low_a_folder_or_fifo_named_train_csv(house, kind):  # noqa: F811
    workdir, data, _, config_file, trained = house
    (data / "train.csv").unlink()
    (data / "train.csv").mkdir() if kind == "folder" else os.mkfifo(data / "train.csv")
    before = snapshot(workdir)
    result, _ = submit(data, config_file)
    fragment = "is a folder, not a CSV file" if kind == "folder" else "is not a regular file (a FIFO"
    assert_refused(result, ["train.csv", fragment], workdir, before, trained)


def test_low_a_zip_holding_one_xml_member(house):  # noqa: F811
    workdir, data, _, config_file, trained = house
    with zipfile.ZipFile(data / "train.csv", "w") as archive:
        archive.writestr("train.xml", '<?xml version="1.0"?>\n<rows><row Id="1"/></rows>\n')
    before = snapshot(workdir)
    result, _ = submit(data, config_file)
    assert_refused(result, ["train.csv", "markup (XML or HTML)"], workdir, before, trained)


def test_low_the_target_is_the_id(workdir, trained):
    data = plain(workdir)
    before = snapshot(workdir)
    result = run_cli("submit", "--data-dir", data, "--target", "id", "--id", "id", "-m", "ridge")
    assert_refused(result, ["the target and the id are the same column 'id'"], workdir, before, trained)


def test_low_more_repeats_than_the_time_limit_holds(house):  # noqa: F811
    workdir, data, _, config_file, trained = house
    before = snapshot(workdir)
    result, _ = submit(data, config_file, "--repeats", "1000", "--time-limit", "30")
    assert_refused(result, ["time limit 30 s:", "1000 repeats of 2 folds need 2000 s at least", "fewer --repeats"],
                   workdir, before, trained)


def test_low_tune_storage_where_nothing_can_be_written(house):  # noqa: F811
    workdir, data, _, config_file, trained = house
    before = snapshot(workdir)
    result = run_cli("tune", "--config", config_file, "--data-dir", data, "-m", "ridge", "--trials", "1",
                     "--storage", "/sys/kaggle-pipeline/journal.log")  # sysfs: no file can be made there
    assert_refused(result, ["Optuna storage /sys/kaggle-pipeline/journal.log"], workdir, before, trained)


def _png_header(width: int, height: int) -> bytes:
    """A PNG that says it is ``width`` × ``height`` pixels (Pillow reads the size before the pixels)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.fixture
def images(workdir, monkeypatch):
    """A folder of PNG files (``test_image_folder_submit.write_folder``), and a spy on image fits."""
    from test_image_folder_submit import write_folder

    from models.image import ImageClassifier

    fits = []
    real = ImageClassifier.fit
    monkeypatch.setattr(ImageClassifier, "fit", lambda self, *a, **k: fits.append(1) or real(self, *a, **k))
    (workdir / "submission.csv").write_bytes(OLD_SUBMISSION)
    return write_folder, fits


def test_low_an_image_too_large_to_decode_is_named(workdir, images):
    write_folder, fits = images
    write_folder(workdir / "colours", ["cat", "dog"], {"label": "cat"}, n_train=8, n_test=4)
    (workdir / "colours" / "train" / "img3.png").write_bytes(_png_header(20000, 20000))
    before = snapshot(workdir)
    result = run_cli("submit", "--data-dir", workdir / "colours", "--target", "label", "--id", "id")
    assert_refused(result, ["img3.png: not a readable image (DecompressionBombError"], workdir, before, fits)


def test_low_an_image_competition_with_one_class(workdir, images):
    write_folder, fits = images
    write_folder(workdir / "colours", ["cat"], {"label": "cat"}, n_train=8, n_test=4)
    before = snapshot(workdir)
    result = run_cli("submit", "--data-dir", workdir / "colours", "--target", "label", "--id", "id")
    assert_refused(result, ["target 'label' is 'cat' in every row: nothing to learn"], workdir, before, fits)


def test_low_a_stage_folder_a_killed_run_left_is_removed_by_the_next(house):  # noqa: F811
    workdir, data, _, config_file, _ = house
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = workdir / f".submission.csv.{dead.pid}.k1ll3d"
    left.mkdir()
    (left / "submission.csv").write_text("half a file")
    alive = workdir / f".submission.csv.{os.getpid()}.l1v3"  # another run's, still writing
    alive.mkdir()
    result, _ = submit(data, config_file)
    assert result.code == 0, result.err
    assert not left.exists() and alive.is_dir()
    assert sorted(p.name for p in workdir.iterdir() if p.name.startswith(".submission")) == [alive.name]


def test_low_an_unreachable_tracking_server_fails_at_once(house, monkeypatch):  # noqa: F811
    workdir, data, _, config_file, trained = house
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    timeouts = []
    real = socket.create_connection
    monkeypatch.setattr(socket, "create_connection",
                        lambda address, timeout=None, *a, **k: timeouts.append(timeout) or real(address, timeout, *a, **k))
    store = os.environ["MLFLOW_TRACKING_URI"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    before = snapshot(workdir)
    result, _ = submit(data, config_file)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    assert_refused(result, [f"MLflow tracking server http://127.0.0.1:{port} cannot be reached"],
                   workdir, before, trained)
    assert timeouts and all(t is not None and t <= 10 for t in timeouts)


@pytest.mark.parametrize("slug", ["../../x", "/tmp/x", "-x", "a/../../b"])
def test_low_a_slug_stays_inside_data_and_never_reads_as_an_option(workdir, fake_kaggle, kaggle_credentials,
                                                                    trained, slug):
    before, outside = snapshot(workdir), sorted(p.name for p in workdir.parent.iterdir())
    result = run_cli("data", f"--competition={slug}")
    assert_refused(result, [repr(slug)], workdir, before, trained)
    assert fake_kaggle.calls == [] and sorted(p.name for p in workdir.parent.iterdir()) == outside


def test_low_user_values_follow_double_dash_in_kaggle_calls(workdir, fake_kaggle, kaggle_credentials):
    result = run_cli("data", "--competition", "some-slug")
    assert result.code == 0, result.err
    [call] = fake_kaggle.calls
    assert call[-2:] == ["--", "some-slug"] and "-c" not in call


class _Touch:
    """Unpickled, creates ``path``: a model folder that is code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (Path(self.path),)


@pytest.mark.parametrize("mlmodel", [None, "flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n"
                                           "    model_path: model.pkl\n"])
def test_low_predict_checks_the_mlmodel_file_before_unpickling(workdir, trained, mlmodel):
    import pickle

    folder = workdir / "model"
    folder.mkdir()
    (folder / "model.pkl").write_bytes(pickle.dumps(_Touch(workdir / "ran")))
    if mlmodel is not None:
        (folder / "MLmodel").write_text(mlmodel)
    (workdir / "submission.csv").write_bytes(OLD_SUBMISSION)
    before = snapshot(workdir)
    result = run_cli("predict", "--model", folder, "-o", "submission.csv")
    fragment = "MLmodel is missing" if mlmodel is None else "was not logged by this pipeline"
    assert_refused(result, [fragment], workdir, before, trained)
    assert not (workdir / "ran").exists()


def test_low_symlinks_out_of_a_class_folder_are_not_followed(tmp_path):
    from PIL import Image

    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("L", (4, 4)).save(outside / "secret.png")
    train = tmp_path / "train"
    (train / "cat").mkdir(parents=True)
    Image.new("L", (4, 4)).save(train / "cat" / "a.png")
    (train / "cat" / "b.png").symlink_to(train / "cat" / "a.png")  # inside: followed
    (train / "cat" / "c.png").symlink_to(outside / "secret.png")
    (train / "dog").symlink_to(outside, target_is_directory=True)
    assert [p.name for p in image_decode.image_files(train / "cat")] == ["a.png", "b.png"]
    assert [p.name for p in image_folders._class_dirs(train)] == ["cat"]
