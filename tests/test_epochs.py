"""``epochs="auto"`` and ``time_budget``: the epoch count from the data's size and the time allowed."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from conftest import run_cli
from test_image_pipeline import synthetic_images, write_config, write_digit_folder

from models import image
from models.image import ImageClassifier, auto_epochs
from pipeline import config, studies, tune
from pipeline.errors import UserError
from pipeline.tasks.image import classifier_params

pytestmark = pytest.mark.usefixtures("one_thread")


def test_auto_epochs_shrink_with_the_data_within_the_clamp():
    lo, hi = image.AUTO_EPOCHS
    sizes = [16, 100, 360, 719, 1438, 5000, 42000, 60000, 1_000_000]
    counts = [auto_epochs(n, 128) for n in sizes]
    assert all(lo <= c <= hi for c in counts)
    assert counts == sorted(counts, reverse=True)  # non-increasing in the number of images
    assert counts[0] == hi and counts[-1] == lo  # both ends of the clamp are reached
    assert auto_epochs(1438, 128) == pytest.approx(15, abs=6)  # the bundled digits: near the old fixed count


def test_auto_resolves_at_fit_and_is_recorded(monkeypatch):
    X, y = synthetic_images(64)
    monkeypatch.setattr(image, "AUTO_STEPS", 6)  # a tiny target, so the test is fast
    monkeypatch.setattr(image, "AUTO_EPOCHS", (1, 3))
    clf = ImageClassifier(arch="lenet", epochs="auto", batch_size=16, seed=0).fit(X, y)
    assert clf.epochs_ == 2 and len(clf.history_) == 2  # 6 steps at 4 a epoch
    assert clf.epoch_plan_["requested"] == "auto" and clf.epoch_plan_["note"] == ""


def test_time_budget_cuts_epochs_and_is_respected():
    X, y = synthetic_images(256)
    budget = 1.5
    clf = ImageClassifier(arch="lenet", epochs=500, batch_size=32, seed=0, time_budget=budget).fit(X[:200], y[:200],
                                                                                                   X[200:], y[200:])
    plan = clf.epoch_plan_
    assert 1 <= clf.epochs_ < 500 and len(clf.history_) == clf.epochs_ == plan["budget_epochs"]
    assert plan["planned"] == 500 and f"{clf.epochs_} epochs instead of 500" in plan["note"]
    # The epochs run are those the measured epoch cost fits in the budget (its margin kept), one
    # at least: a count from the fit's own timing, not a bound on the shared machine's clock.
    assert clf.epochs_ == 1 or clf.epochs_ * plan["epoch_seconds"] <= budget * image.BUDGET_MARGIN
    # A loose budget cuts nothing and says nothing.
    roomy = ImageClassifier(arch="lenet", epochs=1, batch_size=32, seed=0, time_budget=600).fit(X, y)
    assert roomy.epochs_ == 1 and roomy.epoch_plan_["note"] == "" and roomy.epoch_plan_["budget_epochs"] > 1


def test_timing_probe_leaves_the_run_unchanged():
    X, y = synthetic_images(64)
    kw = dict(arch="lenet_bn", epochs=2, batch_size=16, seed=0, augment="shift")
    plain = ImageClassifier(**kw).fit(X, y).predict_proba(X)
    probed = ImageClassifier(**kw, time_budget=600).fit(X, y).predict_proba(X)
    np.testing.assert_allclose(probed, plain, rtol=1e-5, atol=1e-6)


def test_a_resumed_budgeted_run_keeps_its_planned_epochs(tmp_path):
    X, y = synthetic_images(64)
    path = tmp_path / "run.pt"

    def stop_after_first(log):
        raise KeyboardInterrupt

    first = ImageClassifier(arch="lenet", epochs=3, batch_size=16, seed=0, time_budget=600)
    with pytest.raises(KeyboardInterrupt):
        first.fit(X, y, on_epoch=stop_after_first, checkpoint=path)
    assert first.epochs_ == 3
    resumed = ImageClassifier(arch="lenet", epochs=3, batch_size=16, seed=0, time_budget=1e-6).fit(
        X, y, checkpoint=path)  # a budget that would cut to one epoch if it were timed again
    assert resumed.epochs_ == 3 and len(resumed.history_) == 3 and "resumed" in resumed.epoch_plan_["note"]


@pytest.mark.parametrize(("param", "shown"), [
    ("epochs=0", "epochs=0"), ("epochs=fast", "epochs='fast'"), ("epochs=2.5", "epochs=2.5"),
    ("time_budget=0", "time_budget=0"), ("time_budget=-3", "time_budget=-3"),
    ("time_budget=soon", "time_budget='soon'"), ("time_budget=True", "time_budget=True"),
])
def test_bad_epochs_and_budgets_are_one_line_exit_2(workdir, param, shown):
    data = write_digit_folder(workdir / "tiny")
    result = run_cli("submit", "--config", write_config(workdir, "holdout = 0.2"), "--data-dir", data, "-p", param)
    assert result.code == 2 and len(result.err_lines) == 1 and shown in result.err


def test_param_checks_accept_auto_and_budgets():
    assert classifier_params({"epochs": "auto", "time_budget": 30})["epochs"] == "auto"
    assert classifier_params({"time_budget": 0.5, "epochs": 3})["time_budget"] == 0.5
    assert classifier_params({"time_budget": None}) == {"time_budget": None}
    with pytest.raises(UserError, match="must be a positive whole number or 'auto'"):
        classifier_params({"epochs": "Auto"})


@pytest.mark.slow
def test_submit_with_auto_epochs_and_a_budget(workdir):
    data = write_digit_folder(workdir / "tiny")
    cfg = write_config(workdir, "holdout = 0.2", params="epochs = \"auto\"\nbatch_size = 16")
    result = run_cli("submit", "--config", cfg, "--data-dir", data, "-p", "time_budget=0.3", "-o", "sub.csv")
    assert result.code == 0, result.err
    assert "time_budget 0.3 s:" in result.out and "refit on all 90 training images" in result.out


def test_a_study_starts_from_the_auto_count(workdir, monkeypatch):
    monkeypatch.setenv("OPTUNA_STORAGE", str(workdir / "journal.log"))
    data = write_digit_folder(workdir / "tiny", n_train=60, n_test=10)
    cfg = write_config(workdir, "holdout = 0.25", params='epochs = "auto"\nbatch_size = 16\ntime_budget = 2')
    comp = config.load("tiny-digits", config_file=cfg)
    outcome = tune.tune(comp, data, model="lenet", n_trials=1)
    assert outcome.counts["COMPLETE"] == 1
    study = optuna.load_study(study_name="tiny-digits/lenet", storage=studies.open_storage(studies.storage_url(), create=False))
    assert study.trials[0].params["epochs"] == auto_epochs(45, 16) == image.AUTO_EPOCHS[1]
