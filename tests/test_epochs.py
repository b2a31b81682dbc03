"""``epochs="auto"`` and ``time_limit``: the epoch count planned from measured steps and the time allowed."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch
from conftest import run_cli
from test_image_pipeline import synthetic_images, write_config, write_digit_folder

from models import image
from models.image import ImageClassifier, default_time_limit
from models.time_limit import TimeLimit
from pipeline import config, studies, tune
from pipeline.errors import UserError
from pipeline.tasks import image as vision
from pipeline.tasks.image import classifier_params

pytestmark = pytest.mark.usefixtures("one_thread")


class StepClock:
    """A fake clock: seconds pass only as training batches are prepared, ``per_step`` each for
    the first ``after`` (the timing probe's), ``later`` each from then on (the machine got busy)."""

    def __init__(self, per_step: float, *, later: float | None = None, after: int = 0):
        self.steps, self.per_step, self.later, self.after = 0, per_step, later or per_step, after

    def __call__(self) -> float:
        early = min(self.steps, self.after)
        return early * self.per_step + (self.steps - early) * self.later

    def counting(self, make_prepare):
        def make(**options):
            prepare = make_prepare(**options)

            def counted(batch, train):
                self.steps += bool(train)
                return prepare(batch, train)

            return counted

        return make


def test_default_time_grows_with_the_images_within_its_clamp():
    low, high = image.DEFAULT_TIME_LIMIT
    sizes = [16, 1000, 4000, 42000, 60000, 10_000_000]
    seconds = [default_time_limit(n) for n in sizes]
    assert seconds == sorted(seconds) and seconds[0] == low and seconds[-1] == high
    assert default_time_limit(4000) == pytest.approx(4000 * image.SECONDS_PER_IMAGE)


def test_auto_fills_its_time_from_measured_steps(monkeypatch):
    X, y = synthetic_images(64)
    monkeypatch.setattr(image, "AUTO_EPOCHS_MAX", 3)  # the cap, so the test is fast
    clf = ImageClassifier(arch="lenet", epochs="auto", batch_size=16, seed=0).fit(X, y)
    plan = clf.epoch_plan_
    assert plan["requested"] == "auto" and plan["time_limit"] == image.DEFAULT_TIME_LIMIT[0]  # 64 images: the floor
    assert plan["limit_epochs"] >= clf.epochs_ == len(clf.history_) == 3 and plan["step_seconds"] > 0


def test_a_time_limit_plans_the_epochs_from_timed_steps(monkeypatch):
    X, y = synthetic_images(256)
    clock = StepClock(0.1)  # 200 images in batches of 32: 0.6 s an epoch on it
    monkeypatch.setattr(image, "make_prepare", clock.counting(image.make_prepare))
    clf = ImageClassifier(arch="lenet", epochs=500, batch_size=32, seed=0, time_limit=3).fit(
        X[:200], y[:200], X[200:], y[200:], limit=TimeLimit(None, clock(), 0.0, clock))
    # The probe: a warm-up and 3 timed steps (0.4 s). Then (3 - 0.4) * 0.9 / 0.6 s: 3 epochs.
    assert clf.epochs_ == len(clf.history_) == 3 and "3 epochs instead of 500" in clf.epoch_plan_["note"]
    assert clock() <= 3
    # A number of epochs that fits is trained in full, and nothing is said.
    roomy = ImageClassifier(arch="lenet", epochs=1, batch_size=32, seed=0, time_limit=600).fit(X, y)
    assert roomy.epochs_ == 1 and roomy.epoch_plan_["note"] == "" and roomy.epoch_plan_["limit_epochs"] > 1


def test_training_ends_within_its_limit_when_steps_slow_down(monkeypatch):
    X, y = synthetic_images(256)
    clock = StepClock(0.1, later=0.3, after=4)  # planned on 0.6 s epochs, they take 1.8 s
    monkeypatch.setattr(image, "make_prepare", clock.counting(image.make_prepare))
    clf = ImageClassifier(arch="lenet", epochs="auto", batch_size=32, seed=0, time_limit=3).fit(
        X[:200], y[:200], X[200:], y[200:], limit=TimeLimit(None, clock(), 0.0, clock))
    assert clf.epochs_ == 3 and len(clf.history_) == 1  # another 1.8 s epoch would not have fit
    assert clock() <= 3


def test_a_run_limit_bounds_the_fit_as_its_own_does(monkeypatch):
    X, y = synthetic_images(64)
    clock = StepClock(0.25)  # 4 steps an epoch: 1 s
    monkeypatch.setattr(image, "make_prepare", clock.counting(image.make_prepare))
    run = TimeLimit(5, clock(), 0.0, clock)
    clf = ImageClassifier(arch="lenet", epochs=50, batch_size=16, seed=0).fit(X, y, limit=run)
    assert 1 <= len(clf.history_) == clf.epochs_ < 50 and clock() <= run.deadline


def test_early_stopping_keeps_the_best_weights():
    X, y = synthetic_images(160)
    clf = ImageClassifier(arch="lenet", epochs=12, batch_size=16, seed=0, lr=0.3, schedule="constant",
                          early_stopping_patience=2).fit(X[:120], y[:120], X[120:], y[120:])
    losses = [log["val_loss"] for log in clf.history_]
    best = int(np.argmin(losses))
    held = torch.nn.functional.cross_entropy(
        torch.as_tensor(np.log(np.clip(clf.predict_proba(X[120:]), 1e-12, None))), torch.as_tensor(y[120:]))
    assert float(held) == pytest.approx(losses[best], rel=1e-3)  # the best epoch's model, not the last one's


def test_timing_probe_leaves_the_run_unchanged():
    X, y = synthetic_images(64)
    kw = dict(arch="lenet_bn", epochs=2, batch_size=16, seed=0, augment="shift")
    plain = ImageClassifier(**kw).fit(X, y).predict_proba(X)
    probed = ImageClassifier(**kw, time_limit=600).fit(X, y).predict_proba(X)
    np.testing.assert_allclose(probed, plain, rtol=1e-5, atol=1e-6)


def test_a_resumed_time_limited_run_keeps_its_planned_epochs(tmp_path):
    X, y = synthetic_images(64)
    path = tmp_path / "run.pt"

    def stop_after_first(log):
        raise KeyboardInterrupt

    first = ImageClassifier(arch="lenet", epochs=3, batch_size=16, seed=0, time_limit=600)
    with pytest.raises(KeyboardInterrupt):
        first.fit(X, y, on_epoch=stop_after_first, checkpoint=path)
    assert first.epochs_ == 3
    resumed = ImageClassifier(arch="lenet", epochs=500, batch_size=16, seed=0, time_limit=600).fit(
        X, y, checkpoint=path)  # a count and a limit that would plan far more if it were timed again
    assert resumed.epochs_ == 3 and len(resumed.history_) == 3 and "resumed" in resumed.epoch_plan_["note"]


@pytest.mark.parametrize(("param", "shown"), [
    ("epochs=0", "epochs=0"), ("epochs=fast", "epochs='fast'"), ("epochs=2.5", "epochs=2.5"),
    ("time_limit=0", "time_limit=0"), ("time_limit=-3", "time_limit=-3"),
    ("time_limit=soon", "time_limit='soon'"), ("time_limit=True", "time_limit=True"),
])
def test_bad_epochs_and_time_limits_are_one_line_exit_2(workdir, param, shown):
    data = write_digit_folder(workdir / "tiny")
    result = run_cli("submit", "--config", write_config(workdir, "holdout = 0.2"), "--data-dir", data, "-p", param)
    assert result.code == 2 and len(result.err_lines) == 1 and shown in result.err


def test_param_checks_accept_auto_and_time_limits():
    assert classifier_params({"epochs": "auto", "time_limit": 30})["epochs"] == "auto"
    assert classifier_params({"time_limit": 0.5, "epochs": 3})["time_limit"] == 0.5
    assert classifier_params({"time_limit": None}) == {"time_limit": None}
    with pytest.raises(UserError, match="must be a positive whole number or 'auto'"):
        classifier_params({"epochs": "Auto"})


@pytest.mark.slow
def test_submit_with_auto_epochs_and_a_time_limit(workdir):
    data = write_digit_folder(workdir / "tiny")
    cfg = write_config(workdir, "holdout = 0.2", params="epochs = \"auto\"\nbatch_size = 16")
    result = run_cli("submit", "--config", cfg, "--data-dir", data, "-p", "time_limit=0.3", "-o", "sub.csv")
    assert result.code == 0, result.err
    assert "epochs in 0 s" in result.out and "refit on all 90 training images" in result.out


def test_a_study_starts_from_the_auto_count(workdir, monkeypatch):
    monkeypatch.setenv("OPTUNA_STORAGE", str(workdir / "journal.log"))
    data = write_digit_folder(workdir / "tiny", n_train=60, n_test=10)
    cfg = write_config(workdir, "holdout = 0.25", params='epochs = "auto"\nbatch_size = 16\ntime_limit = 2')
    comp = config.load("tiny-digits", config_file=cfg)
    outcome = tune.tune(comp, data, model="lenet", n_trials=1)
    assert outcome.counts["COMPLETE"] == 1
    study = optuna.load_study(study_name="tiny-digits/lenet", storage=studies.open_storage(studies.storage_url(), create=False))
    assert study.trials[0].params["epochs"] == vision.STUDY_FIRST_EPOCHS
