"""Which recipe learns colour photos fastest on a CPU: accuracy against CPU seconds.

    python bench/photo_recipes.py [--task cifar-kaggle] [--seconds 60] [--seeds 0,1,2] [--recipes a,b]

Each recipe (``RECIPES``: an architecture and its training parameters) trains a
``models.image.ImageClassifier`` with ``epochs="auto"`` for ``--seconds`` of CPU time (the fit's
``TimeLimit`` reads ``time.process_time``, so that the budget is the same however loaded the
machine is: each recipe gets the same work, and only the wall time stretches) on the training images
of a task that ``bench/image_suite.py build`` wrote (CIFAR-10 in Kaggle's layout by default), in a
process of its own with ``--threads`` torch threads, and is scored on the task's held-back test
labels. It prints, per recipe and seed: the test accuracy (and with mirror TTA), the CPU seconds the process spent, the
wall seconds, the epochs it fitted, and the training images it saw per CPU second; then, per
recipe, the mean ± standard deviation over the seeds. ``--task`` is a folder, or the name of a
task under ``bench/.results/images/`` (``cifar-kaggle``, ``natural-kaggle``, ...). The machine's
load average is printed first: on a shared machine every figure is slower than on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SGD = {"optimizer": "sgd", "lr": 0.2, "weight_decay": 5e-4, "schedule": "onecycle", "label_smoothing": 0.2}
RECIPES = {
    "whitenet32": ("whitenet", {**SGD, "arch_params": {"width": 32}, "augment": "photo"}),
    "whitenet24": ("whitenet", {**SGD, "arch_params": {"width": 24}, "augment": "photo"}),
    "whitenet16": ("whitenet", {**SGD, "arch_params": {"width": 16}, "augment": "photo"}),
    "whitenet32-learned": ("whitenet", {**SGD, "arch_params": {"width": 32, "whiten": False}, "augment": "photo"}),
    "whitenet16-learned": ("whitenet", {**SGD, "arch_params": {"width": 16, "whiten": False}, "augment": "photo"}),
    "whitenet32-adamw": ("whitenet", {"optimizer": "adamw", "lr": 1e-2, "weight_decay": 5e-4, "schedule": "onecycle",
                                      "label_smoothing": 0.2, "arch_params": {"width": 32}, "augment": "photo"}),
    "resnet18w16": ("resnet18", {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 5e-4, "schedule": "onecycle",
                                 "label_smoothing": 0.1, "arch_params": {"width": 16}, "augment": "photo"}),
    "cnn5w32": ("cnn5", {"optimizer": "adamw", "lr": 1e-2, "weight_decay": 5e-4, "schedule": "onecycle",
                         "label_smoothing": 0.1, "arch_params": {"width": 32}, "augment": "photo"}),
    # The glyph recipes, for ``--task .../digits-png`` (no mirrors: the probe says none for digits)
    "glyphs-cnn5": ("cnn5", {"optimizer": "adamw", "lr": 1e-2, "weight_decay": 5e-4, "schedule": "onecycle",
                             "label_smoothing": 0.1, "augment": "shift"}),
    "glyphs-whitenet16": ("whitenet", {**SGD, "arch_params": {"width": 16}, "augment": "shift"}),
}
RESULT = "photo-recipe: "
TASKS = ROOT / "bench" / ".results" / "images"


def task_folder(given: str) -> Path:
    """A task folder as given, else the task of that name that ``bench/image_suite.py build`` wrote."""
    return Path(given) if Path(given).is_dir() or not (TASKS / given).is_dir() else TASKS / given


def spread(results: list[dict]) -> list[str]:
    """Per recipe: mean ± standard deviation over its seeds of the accuracy, with TTA, and the CPU cost."""
    import numpy as np

    lines = []
    for recipe in dict.fromkeys(r["recipe"] for r in results):
        runs = [r for r in results if r["recipe"] == recipe]

        def stat(key: str, digits: int, runs=runs) -> str:
            values = [r[key] for r in runs]
            deviation = np.std(values, ddof=1) if len(values) > 1 else 0.0
            return f"{np.mean(values):.{digits}f} ± {deviation:.{digits}f}"

        lines.append(f"{recipe:20s} over {len(runs)} seed(s): accuracy {stat('accuracy', 4)} (mirror TTA "
                     f"{stat('tta_accuracy', 4)}), {stat('cpu_s', 0)} CPU s, {stat('images_per_cpu_s', 0)} images/CPU s")
    return lines


def one(task: Path, recipe: str, seconds: float, seed: int) -> dict:
    import numpy as np
    import pandas as pd

    from models.image import ImageClassifier
    from models.time_limit import TimeLimit
    from pipeline.config import Competition
    from pipeline.data import images

    comp = Competition(name=task.name, target="label", id="id", kind="image")
    data = images.load(comp, task).data
    truth = pd.read_csv(task / "test_labels.csv", dtype=str).set_index("id")["label"]
    arch, params = RECIPES[recipe]
    clf = ImageClassifier(arch=arch, epochs="auto", seed=seed, **params)
    cpu, wall = time.process_time(), time.perf_counter()
    clf.fit(data.X_train, data.y_train, limit=TimeLimit(seconds, reserve=0.0, clock=time.process_time,
                                                        started=time.process_time()))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    expected = truth.loc[[str(i) for i in data.test_ids]].to_numpy()
    accuracy = float(np.mean(clf.predict(data.X_test).astype(str) == expected))
    clf.tta = True  # the same weights, each test image scored with its mirror image too
    tta_accuracy = float(np.mean(clf.predict(data.X_test).astype(str) == expected))
    return {"recipe": recipe, "seed": seed, "accuracy": accuracy, "tta_accuracy": tta_accuracy, "cpu_s": cpu,
            "wall_s": wall,
            "epochs": len(clf.history_), "images_per_cpu_s": len(clf.history_) * len(data.X_train) / cpu}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", type=task_folder, default=TASKS / "cifar-kaggle")
    parser.add_argument("--seconds", type=float, default=60.0, help="each fit's CPU seconds")
    parser.add_argument("--seeds", default="0", help="comma-separated")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # recipe,seed: run in this process
    args = parser.parse_args(argv)
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        recipe, seed = args.one.split(",")
        print(RESULT + json.dumps(one(args.task, recipe, args.seconds, int(seed))), flush=True)
        return
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {args.seconds:g} CPU s a fit, "
          f"{args.threads} thread(s), task {args.task.name}", flush=True)
    results = []
    for seed in args.seeds.split(","):
        for recipe in args.recipes.split(","):
            done = subprocess.run([sys.executable, __file__, "--task", str(args.task), "--seconds", str(args.seconds),
                                   "--threads", str(args.threads), "--one", f"{recipe},{seed}"],
                                  capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
            if not lines:
                print(f"{recipe} seed {seed}: failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}", flush=True)
                continue
            r = json.loads(lines[0][len(RESULT):])
            results.append(r)
            print(f"{r['recipe']:20s} seed {r['seed']}: accuracy {r['accuracy']:.4f} (mirror TTA "
                  f"{r['tta_accuracy']:.4f}), {r['cpu_s']:.0f} CPU s, "
                  f"{r['wall_s']:.0f} s wall, {r['epochs']} epochs, {r['images_per_cpu_s']:.0f} images/CPU s "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
    print("\n".join(spread(results)), flush=True)


if __name__ == "__main__":
    main()
