"""The competitor's loop against a fake Kaggle: any competition by its slug, public scores back in
the runs, CV against the leaderboard, polling that gives up on time."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import artifact_names, mlflow_runs, run_cli, synthetic_frames
from fake_kaggle import install

from models.time_limit import TimeLimit
from pipeline import kaggle_api, leaderboard, tracking
from pipeline.data.files import SOURCE_FILE

SLUG = "playground-series-s9e9"


@pytest.fixture
def kaggle(workdir, monkeypatch, kaggle_credentials):
    """A fake Kaggle with one regression competition, no config for it, and credentials."""
    fake = install(workdir / "fake-kaggle", monkeypatch)
    train, test, truth = synthetic_frames("regression", n_train=80, n_test=40)
    sample = pd.DataFrame({"id": test["id"], "target": 0.0})
    fake.competition(SLUG, {"train.csv": train, "test.csv": test, "sample_submission.csv": sample},
                     pd.DataFrame({"id": test["id"], "target": truth}), delay=2)
    monkeypatch.setattr(leaderboard, "POLL_SECONDS", 0.01)
    return fake


def _submit(*extra: str):
    return run_cli("submit", "-c", SLUG, "--target", "target", "--id", "id", "--model", "ridge",
                   "--output", "submission.csv", "--upload", *extra)


def _refused(fake, slug):
    fake.competition(slug, {}, pd.DataFrame({"id": [1], "target": [1.0]}))
    fake.refuse(slug)


# --- the client's answers ------------------------------------------------------------------------


def test_the_submission_listing_is_read_with_or_without_a_ref_column():
    new = ("ref,fileName,date,description,status,publicScore,privateScore\n"
           "51,sub.csv,2026-12-01,try (run abc),SubmissionStatus.COMPLETE,0.71,\n"
           "50,sub.csv,2026-11-30,first,SubmissionStatus.PENDING,,\n")
    first, second = kaggle_api.parse_submissions(new)
    assert (first.ref, first.status, first.public, first.private, first.scored) == ("51", "complete", 0.71, None, True)
    assert (second.status, second.public, second.scored) == ("pending", None, False)
    old = "Using competition: x\nfileName,date,description,status,publicScore,privateScore\n" \
          "sub.csv,2020-01-01,m,complete,0.5,0.6\n"
    (only,) = kaggle_api.parse_submissions(old)
    assert (only.ref, only.public, only.private) == ("2020-01-01 sub.csv", 0.5, 0.6)
    assert kaggle_api.parse_submissions("No submissions found\n") == []


@pytest.mark.parametrize(("output", "words"), [
    ("403 Client Error: Forbidden for url", ["accept its rules", "kaggle.com/competitions/s/rules"]),
    ("404 Client Error: Not Found for url", ["no Kaggle competition 's'"]),
    ("429 Client Error: Too Many Requests", ["rate-limited"]),
    ("401 Client Error: Unauthorized", ["credentials"]),
    ("Could not find kaggle.json. Make sure", ["credentials", "KAGGLE_USERNAME"]),
])
def test_each_client_failure_is_explained_in_one_line(output, words):
    line = kaggle_api.explain(output, "s")
    assert "\n" not in line and all(word in line for word in words)
    assert kaggle_api.explain("something else went wrong", "s") is None


# --- any competition by its slug -----------------------------------------------------------------


@pytest.mark.slow
def test_data_downloads_a_competition_that_has_no_config(kaggle, workdir):
    result = run_cli("data", "--competition", SLUG)
    assert result.code == 0, result.err
    assert sorted(p.name for p in (workdir / "data" / SLUG).iterdir()) == [
        SOURCE_FILE, "sample_submission.csv", "test.csv", "train.csv"]
    assert kaggle.calls[-1][:2] == ["competitions", "download"] and kaggle.calls[-1][-2:] == ["--", SLUG]


@pytest.mark.slow
@pytest.mark.parametrize(("break_it", "words"), [
    (lambda fake, mp: None, ["no Kaggle competition 'no-such-slug'"]),
    (lambda fake, mp: _refused(fake, "no-such-slug"), ["accept its rules"]),
    (lambda fake, mp: mp.delenv("KAGGLE_KEY"), ["no Kaggle credentials"]),
    (lambda fake, mp: fake.rate_limit(), ["rate-limited"]),
    (lambda fake, mp: mp.setenv("KAGGLE_CLI", "/nonexistent/kaggle"), ["cannot run the kaggle client"]),
], ids=["missing competition", "rules not accepted", "no credentials", "rate-limited", "no client"])
def test_data_from_kaggle_fails_in_one_line(kaggle, workdir, monkeypatch, break_it, words):
    break_it(kaggle, monkeypatch)
    result = run_cli("data", "--competition", "no-such-slug")
    assert result.code == 2
    assert len(result.err_lines) == 1 and result.err.startswith("error: ")
    assert all(word in result.err for word in words), result.err
    assert not (workdir / "data" / "no-such-slug").exists() or not any((workdir / "data" / "no-such-slug").iterdir())


# --- public scores into the run ------------------------------------------------------------------


@pytest.mark.slow
def test_submit_uploads_to_the_slug_and_logs_the_public_score(kaggle):
    result = _submit()
    assert result.code == 0, result.err
    (run,) = mlflow_runs(SLUG)
    (entry,) = kaggle.submissions(SLUG)
    assert run.data.tags[leaderboard.SUBMISSION_TAG] == entry["ref"]
    assert run.info.run_id in entry["description"]
    assert run.data.metrics["public_rmse"] == pytest.approx(entry["publicScore"])
    assert "private_rmse" not in run.data.metrics  # the fake competition shows no private score
    listings = [c for c in kaggle.calls if c[1] == "submissions"]
    assert len(listings) == 3  # pending twice (delay=2), then scored
    assert f"public rmse: {entry['publicScore']:.5f}" in result.out


def test_polling_gives_up_after_its_time_limit(kaggle, workdir):
    kaggle.competition("slow-one", {}, pd.DataFrame({"id": [1, 2], "target": [1.0, 2.0]}), delay=10**6)
    pd.DataFrame({"id": [1, 2], "target": [1.0, 2.0]}).to_csv(workdir / "s.csv", index=False)
    now = [0.0]
    naps = []

    def sleep(seconds):
        naps.append(seconds)
        now[0] += seconds

    with tracking.run("slow-one", "submit-ridge") as active:
        run_id = active.info.run_id
    kaggle_api.upload(workdir / "s.csv", "slow-one", leaderboard.upload_message("m", run_id))
    limit = TimeLimit(30.0, started=0.0, reserve=0.0, clock=lambda: now[0])
    found = leaderboard.follow("slow-one", run_id, "rmse", limit, interval=10.0, sleep=sleep)
    assert found is not None and found.status == "pending"
    assert naps == [10.0, 10.0, 10.0]  # asked at 0, 10, 20 and 30 s, then stopped
    (run,) = mlflow_runs("slow-one")
    assert run.data.tags[leaderboard.SUBMISSION_TAG] == found.ref and "public_rmse" not in run.data.metrics


@pytest.mark.slow
def test_leaderboard_prints_cv_public_and_their_rank_correlation(kaggle):
    for alpha in ("0.01", "30", "3000"):  # three runs whose CV differs
        assert _submit("--param", f"alpha={alpha}", "--wait", "0").code == 0
    assert not any("public_rmse" in r.data.metrics for r in mlflow_runs(SLUG))  # nobody waited
    early = run_cli("leaderboard", "-c", SLUG)  # the last upload is still pending (delay=2 listings)
    assert early.code == 0 and "2 run(s) with a public score" in early.out, early.err
    result = run_cli("leaderboard", "-c", SLUG)
    assert result.code == 0 and "3 run(s) with a public score" in result.out, result.err
    runs = {r.info.run_id: r for r in mlflow_runs(SLUG)}
    submitted = [r for r in runs.values() if r.data.tags.get("stage") == "submit"]
    assert len(submitted) == 3 and all("public_rmse" in r.data.metrics for r in submitted)
    for run in submitted:
        row = next(line for line in result.out.splitlines() if line.startswith(run.info.run_id[:8]))
        assert f"{run.data.metrics['cv_rmse']:.5f}" in row and f"{run.data.metrics['public_rmse']:.5f}" in row
    assert "Spearman rank correlation of cv and public rmse over 3 runs: +1.000" in result.out
    board = max((r for r in runs.values() if r.data.tags.get("stage") == "leaderboard"),
                key=lambda r: r.info.start_time)
    assert board.data.metrics["cv_public_spearman"] == pytest.approx(1.0)
    assert "cv_vs_public.png" in artifact_names(board)


@pytest.mark.slow
def test_a_hand_made_submission_is_linked_to_its_run(kaggle, workdir):
    assert run_cli("train", "-c", SLUG, "--target", "target", "--id", "id", "--model", "ridge").code == 0
    (run,) = mlflow_runs(SLUG)
    pd.DataFrame({"id": synthetic_frames("regression", n_train=80, n_test=40)[1]["id"], "target": 50.0}).to_csv(
        workdir / "by-hand.csv", index=False)
    kaggle.delay(SLUG, 0)
    kaggle_api.upload(workdir / "by-hand.csv", SLUG, "made in a notebook")
    ref = kaggle.submissions(SLUG)[0]["ref"]
    result = run_cli("leaderboard", "-c", SLUG, "--run", run.info.run_id[:8], "--submission", ref)
    assert result.code == 0, result.err
    linked = next(r for r in mlflow_runs(SLUG) if r.info.run_id == run.info.run_id)
    assert linked.data.tags[leaderboard.SUBMISSION_TAG] == ref and "public_rmse" in linked.data.metrics
    assert "n/a" in result.out  # one run with a public score: no correlation yet
    wrong = run_cli("leaderboard", "-c", SLUG, "--run", run.info.run_id[:8], "--submission", "nope")
    assert wrong.code == 2 and "--submission nope" in wrong.err and len(wrong.err_lines) == 1


def test_a_private_score_is_logged_once_the_competition_shows_one(kaggle, workdir):
    answers = pd.DataFrame({"id": [1, 2, 3, 4], "target": [1.0, 2.0, 3.0, 4.0]})
    kaggle.competition("closed-one", {}, answers, delay=0, private=True)
    answers.assign(target=[1.0, 2.0, 3.0, 6.0]).to_csv(workdir / "s.csv", index=False)
    with tracking.run("closed-one", "submit-ridge") as active:
        tracking.log_params({"metric": "rmse"})
        tracking.log_metrics({"cv_rmse": 0.5, "cv_rmse_std": 0.1})
    kaggle_api.upload(workdir / "s.csv", "closed-one", leaderboard.upload_message("m", active.info.run_id))
    found = leaderboard.follow("closed-one", active.info.run_id, "rmse", None)
    assert (found.public, found.private) == (0.0, 1.41421)  # rows 1, 3 public; 2, 4 private: sqrt((0 + 4) / 2)
    (run,) = mlflow_runs("closed-one")
    assert run.data.metrics["public_rmse"] == 0.0 and run.data.metrics["private_rmse"] == 1.41421
    header, _, line = leaderboard.format_table(leaderboard.rows("closed-one"), "rmse")
    assert header.split()[-1] == "private" and line.split()[-1] == "1.41421"
