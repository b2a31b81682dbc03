"""What a net trained from scratch by pytabkit (RealMLP, TabM; Holzmüller et al., TabArena's
strongest nets that need no downloaded weights) adds to the portfolio: bench/portfolio_members.py
with those nets registered beside our own ``mlp``, on the same folds, no time limit.

    pip install pytabkit pytorch-lightning torchmetrics   # beside torch; not a dependency of ours
    PYTHONPATH=. .venv/bin/python bench/net_members.py --task hpc_class \\
        --configs lightgbm xgboost hist_gbm extra_trees mlp --new realmlp tabm

Printed as portfolio_members prints: each one's out-of-fold score and seconds, the ensemble with
and without each ``--new`` one, and the weight it earns. The nets take the one-hot features (numbers
imputed and scaled), as our ``mlp`` does; each holds out a fifth of its training fold to pick its
best epoch, as its library does by default.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

try:
    import pytabkit
except ImportError as exc:
    raise SystemExit("bench/net_members.py needs pytabkit: pip install pytabkit pytorch-lightning torchmetrics") from exc

import portfolio_members  # noqa: E402

from models import registry, threads  # noqa: E402
from pipeline.tasks import configuration  # noqa: E402

NETS = {  # our name: (regressor, classifier), pytabkit's tuned defaults ("TD")
    "realmlp": (pytabkit.RealMLP_TD_Regressor, pytabkit.RealMLP_TD_Classifier),
    "tabm": (pytabkit.TabM_D_Regressor, pytabkit.TabM_D_Classifier),
}
NET = registry.Capabilities(seed_param="random_state")


def _register() -> None:
    for name, (regressor, classifier) in NETS.items():
        for suffix, estimator, tasks in (("", regressor, ("regression",)),
                                         ("_classifier", classifier, ("binary", "multiclass"))):
            def factory(estimator=estimator, random_state: int = 0):
                return estimator(device="cpu", random_state=random_state, n_threads=threads.budget(), verbosity=0)
            registry.register(f"{name}{suffix}", tasks=tasks, capabilities=NET,
                              same_as=name if suffix else None)(factory)


def main(argv: list[str] | None = None) -> int:
    registry.get("mlp", "tabular")  # the built-in entries first: registering twice is refused
    _register()
    load = configuration.load

    def with_nets(kind: str, metric: str):
        nets = tuple(configuration.Configuration(name, name if kind == "regression" else f"{name}_classifier")
                     for name in NETS)
        return (*load(kind, metric), *nets)

    configuration.load = with_nets
    return portfolio_members.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
