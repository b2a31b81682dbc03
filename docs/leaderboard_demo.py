"""The README's leaderboard table and chart, from the tests' fake Kaggle client (tests/fake_kaggle.py):
six runs submitted to a generated competition, scored by the fake against held-back labels.

    python docs/leaderboard_demo.py WORK_FOLDER   # then: docs/cv_vs_public.png, the table on stdout
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from fake_kaggle import FakeKaggle, install  # noqa: E402

SLUG = "playground-demo"
RUNS = [("linear",), ("ridge", "--param", "alpha=3000"), ("hist_gbm", "--param", "max_iter=15"), ("hist_gbm",),
        ("gbm",), ()]


class _Env:
    def setenv(self, name, value):
        os.environ[name] = value


def main(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    os.environ.update(KAGGLE_USERNAME="demo", KAGGLE_KEY="demo", MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
                      PYTHONPATH=str(ROOT))
    fake: FakeKaggle = install(work / "fake-kaggle", _Env())
    rng = np.random.default_rng(7)
    n = 5000
    frame = pd.DataFrame({"id": np.arange(n), "x1": rng.normal(size=n), "x2": rng.normal(size=n),
                          "colour": rng.choice(["red", "green", "blue"], n)})
    y = 3 * np.sin(2 * frame["x1"]) + frame["x2"] ** 2 + (frame["colour"] == "red") + rng.normal(0, 0.5, n)
    train, test = frame.iloc[:3000].assign(target=y[:3000]), frame.iloc[3000:]
    fake.competition(SLUG, {"train.csv": train, "test.csv": test,
                            "sample_submission.csv": pd.DataFrame({"id": test["id"], "target": 0.0})},
                     pd.DataFrame({"id": test["id"], "target": y[3000:]}), delay=1)
    python = [sys.executable, "-m", "pipeline"]
    subprocess.run([*python, "data", "-c", SLUG], check=True)
    for model in RUNS:
        subprocess.run([*python, "submit", "-c", SLUG, "--target", "target", "--id", "id",
                        *(("--model", *model) if model else ()), "--upload", "--wait", "0"], check=True)
    board = subprocess.run([*python, "leaderboard", "-c", SLUG], check=True, capture_output=True, text=True)
    print(board.stdout)
    run = mlflow.search_runs(experiment_names=[SLUG], filter_string="tags.stage = 'leaderboard'",
                             output_format="list")[0]
    shutil.copy(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="cv_vs_public.png",
                                                    dst_path=str(work / "dl")), ROOT / "docs" / "cv_vs_public.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
