"""Competitions are configuration: one declarative TOML file each, in ``pipeline/competitions``.

A competition with no file runs too, given ``--target`` and ``--id``: the task and metric are
then inferred from the target column, and its name is its Kaggle slug (``kaggle``) for downloads
and uploads.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features.engineering import make_feature_steps
from features.rules import RowRule
from models.time_limit import check_seconds
from pipeline.errors import UserError

CONFIG_DIR = Path(__file__).parent / "competitions"
DEFAULT_COMPETITION = "house-prices"  # `make submit` with nothing else: the bundled house-price run
TASKS = ("regression", "binary", "multiclass")
TARGET_TRANSFORMS = (None, "log", "log1p")
CLUSTER_ADDRESS = re.compile(r"(tcp|tls|ws|wss)://[^\s/:]+:\d{1,5}")


@dataclass(frozen=True)
class CVConfig:
    folds: int = 5
    seed: int = 42
    repeats: int = 1  # repeated k-fold: each repeat reshuffles (seed + repeat); scores show the spread
    seeds: int = 1  # each model fit with this many seeds (random_state + s), their predictions averaged
    holdout: float | None = None  # a fraction held out once, instead of k folds (image models)
    fold_workers: int = 1  # folds fit at once, in local processes (pipeline/tasks/executor.py)
    cluster: str | None = None  # a Dask scheduler's address (tcp://host:port): the folds fit there


@dataclass(frozen=True)
class ModelConfig:
    name: str | None = None  # None: the default for the task
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EnsembleConfig:
    models: tuple[str, ...] = ()  # base models, each cross-validated on the same folds
    method: str = "best"  # "select" (greedy), "blend", "stack", or "best": whichever cross-fits better
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per base model
    refit: bool = False  # fit the selected members again on every row, instead of averaging the fold models
    stack: bool = False  # a second layer, where a holdout check says it helps (pipeline/tasks/stack.py)


@dataclass(frozen=True)
class Competition:
    name: str
    target: str
    id: str
    kaggle: str | None = None
    kind: str = "tabular"
    layout: str | None = None  # file layout of image competitions; None: inferred from the files
    # Image competitions of files: the side every image is resized to; "fixed": one size, kept;
    # None: inferred (pipeline/data/image_decode.py).
    image_size: int | str | None = None
    task: str | None = None  # None: inferred from the target
    metric: str | None = None  # None: inferred from the task
    target_transform: str | None = None
    bundled: str | None = None
    train_file: str = "train.csv"
    test_file: str = "test.csv"
    sample_submission_file: str = "sample_submission.csv"
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    text: tuple[str, ...] = ()  # free text: length and word-count features (features/roles.py)
    date: tuple[str, ...] = ()  # dates and timestamps: year, month, day of week, hour, elapsed days
    high_cardinality: tuple[str, ...] = ()  # many-level categories: frequency and target encoding
    # Guess the roles of ordinary columns too (number codes as categories, constants and id
    # sequences dropped): on for a competition without a config file, off unless set in one.
    infer_roles: bool = False
    # Rows dropped from training folds only: a rule (features.rules), given as text or as
    # [[outliers]] tables of column, op, value; kept as its canonical text.
    outliers: str | None = None
    features: dict[str, Any] = field(default_factory=dict)
    cv: CVConfig = field(default_factory=CVConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    # Seconds for a whole train or submit run, start to end; None: no limit. The portfolio fits
    # configurations until it (pipeline/tasks/portfolio.py; models.time_limit.TimeLimit).
    time_limit: float | None = None
    # Image competitions: a state dict (.safetensors or .pt) the zoo model starts from
    # (models/weights.py; ``--weights PATH``); a relative path is from the working directory.
    weights: str | None = None

    def as_params(self) -> dict[str, str]:
        """The resolved config flattened to ``section.key`` strings, for MLflow params."""
        flat: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict) and value:
                for key, item in value.items():
                    walk(f"{prefix}.{key}" if prefix else str(key), item)
            else:
                flat[prefix] = str(value)

        walk("", dataclasses.asdict(self))
        return flat


_SECTIONS = {"files", "columns", "cv", "model", "features", "ensemble"}
_TOP_KEYS = {f.name for f in dataclasses.fields(Competition)} - {
    "train_file", "test_file", "sample_submission_file", "categorical", "numeric", "drop", "cv", "model", "features", "ensemble",
    "text", "date", "high_cardinality", "infer_roles",
}
_FILE_KEYS = {"train": "train_file", "test": "test_file", "sample_submission": "sample_submission_file"}
_COLUMN_KEYS = {"categorical", "numeric", "drop", "text", "date", "high_cardinality", "infer"}


def available() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def _check_keys(where: str, given: dict, allowed: set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def from_dict(raw: dict[str, Any], source: str) -> Competition:
    _check_keys(source, raw, _TOP_KEYS | _SECTIONS)
    for section in _SECTIONS:
        if section in raw and not isinstance(raw[section], dict):
            raise UserError(f"{source}: [{section}] must be a table")
    files, columns = raw.get("files", {}), raw.get("columns", {})
    cv, model, ensemble = raw.get("cv", {}), raw.get("model", {}), raw.get("ensemble", {})
    _check_keys(f"{source} [files]", files, set(_FILE_KEYS))
    _check_keys(f"{source} [columns]", columns, _COLUMN_KEYS)
    _check_keys(f"{source} [cv]", cv, {f.name for f in dataclasses.fields(CVConfig)})
    _check_keys(f"{source} [model]", model, {"name", "params"})
    _check_keys(f"{source} [ensemble]", ensemble, {"models", "method", "params", "refit", "stack"})
    for key in ("name", "target", "id"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise UserError(f"{source}: {key!r} is required and must be a string")
    _check_lists(source, columns, ensemble)
    top = {k: v for k, v in raw.items() if k not in _SECTIONS}
    if top.get("outliers") is not None:  # kept as the rule's canonical text: a string, whichever form
        try:
            top["outliers"] = str(RowRule.parse(top["outliers"]))
        except ValueError as exc:
            raise UserError(f"{source}: outliers: {exc}") from None
    try:
        comp = Competition(
            **top,
            **{_FILE_KEYS[k]: v for k, v in files.items()},
            **{k: tuple(v) for k, v in columns.items() if k != "infer"},
            **({"infer_roles": columns["infer"]} if "infer" in columns else {}),
            features=raw.get("features", {}),
            cv=CVConfig(**cv),
            model=ModelConfig(**model),
            ensemble=EnsembleConfig(**{**ensemble, "models": tuple(ensemble.get("models", ()))}),
        )
    except TypeError as exc:
        raise UserError(f"{source}: {exc}") from None
    check(comp, source)
    return comp


def _check_lists(source: str, columns: dict, ensemble: dict) -> None:
    """A list given as one string (``categorical = "colour"``) would become its characters."""
    given = [(f"[columns] {key}", value) for key, value in columns.items() if key != "infer"]
    if "models" in ensemble:
        given.append(("[ensemble] models", ensemble["models"]))
    for where, value in given:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise UserError(f"{source}: {where} must be a list of names, e.g. [{value!r}], got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check(comp: Competition, source: str) -> None:
    """Every field's value, before any work: a wrong config is one line naming the field."""
    if comp.task is not None and comp.task not in TASKS:
        raise UserError(f"{source}: task {comp.task!r} is not one of {', '.join(TASKS)}")
    if comp.target_transform not in TARGET_TRANSFORMS:
        raise UserError(f"{source}: target_transform {comp.target_transform!r} is not 'log', 'log1p' or absent")
    if not isinstance(comp.infer_roles, bool):
        raise UserError(f"{source}: [columns] infer must be true or false")
    if comp.kind not in ("tabular", "image"):
        raise UserError(f"{source}: kind {comp.kind!r} is not 'tabular' or 'image'")
    if not _is_int(comp.cv.seed) or comp.cv.seed < 0:
        raise UserError(f"{source}: [cv] seed must be an integer >= 0, got {comp.cv.seed!r}")
    if not _is_int(comp.cv.folds) or comp.cv.folds < 2:
        raise UserError(f"{source}: [cv] folds must be an integer >= 2, got {comp.cv.folds!r}")
    for key in ("repeats", "seeds", "fold_workers"):
        value = getattr(comp.cv, key)
        if not _is_int(value) or value < 1:
            raise UserError(f"{source}: [cv] {key} must be an integer >= 1, got {value!r}")
    cluster = comp.cv.cluster
    if cluster is not None and (not isinstance(cluster, str) or not CLUSTER_ADDRESS.fullmatch(cluster)):
        raise UserError(f"{source}: [cv] cluster must be a Dask scheduler's address such as tcp://10.0.0.5:8786, "
                        f"got {cluster!r}")
    try:
        check_seconds(comp.time_limit)
    except ValueError as exc:
        raise UserError(f"{source}: {exc}") from None
    if comp.weights is not None and (not isinstance(comp.weights, str) or not comp.weights):
        raise UserError(f"{source}: weights must be the path of a .safetensors or .pt file, got {comp.weights!r}")
    if comp.ensemble.method not in ("best", "select", "blend", "stack"):
        raise UserError(f"{source}: [ensemble] method must be best, select, blend or stack")
    for key in ("refit", "stack"):
        if not isinstance(getattr(comp.ensemble, key), bool):
            raise UserError(f"{source}: [ensemble] {key} must be true or false, got {getattr(comp.ensemble, key)!r}")
    size = comp.image_size
    if size is not None and size != "fixed" and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise UserError(f'{source}: image_size must be a positive whole number or "fixed", got {size!r}')
    holdout = comp.cv.holdout
    if holdout is not None and (isinstance(holdout, bool) or not isinstance(holdout, int | float) or not 0 < holdout < 1):
        raise UserError(f"{source}: [cv] holdout must be a fraction between 0 and 1")
    if comp.features:  # a wrong [features] table is a config error, found before any work starts
        try:
            make_feature_steps(comp.features)
        except ValueError as exc:
            raise UserError(f"{source} [features]: {exc}") from None


def competition_name(given: str | None, *, data_dir: Path | None = None, config_file: Path | None = None,
                     columns_given: bool = False) -> str:
    """The competition's name: the one given, else the config file's, else the data folder's when
    a config has that name or when ``--target``/``--id`` are given (``columns_given``: a competition
    without a config file), else the bundled default, house prices.

    Never another competition's: ``--data-dir titanic/ --target Survived`` is ``titanic``, not
    house prices with its target replaced.
    """
    if given:
        return given
    if config_file is not None:
        return Path(config_file).stem
    if data_dir is not None:
        folder = Path(data_dir).resolve().name
        if columns_given or folder in available():
            return folder
    return DEFAULT_COMPETITION


def load(
    name: str,
    *,
    config_file: Path | None = None,
    target: str | None = None,
    id_column: str | None = None,
    repeats: int | None = None,
    seeds: int | None = None,
    fold_workers: int | None = None,
    cluster: str | None = None,
    **overrides: Any,
) -> Competition:
    """The competition ``name`` from its TOML file, or an ad-hoc one from ``--target``/``--id``.

    ``overrides`` replace top-level fields (``task``, ``metric``, ``time_limit``, ...), ``repeats``,
    ``seeds``, ``fold_workers`` and ``cluster`` the ``[cv]`` ones; ``None`` values are ignored.
    """
    path = config_file or CONFIG_DIR / f"{name}.toml"
    if path.is_file():
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"{path.name}: invalid TOML: {exc}") from None
    elif config_file is not None:
        raise UserError(f"config file not found: {config_file}")
    elif target and id_column:  # no config: the name is the competition's Kaggle slug
        raw = {"name": name, "kaggle": name, "columns": {"infer": True}}
    else:
        raise UserError(
            f"no config for competition {name!r} (known: {', '.join(available())}); "
            "give --target and --id to run without one"
        )
    if target:
        raw["target"] = target
    if id_column:
        raw["id"] = id_column
    raw.update({k: v for k, v in overrides.items() if v is not None})
    if raw.get("target") is not None and raw.get("target") == raw.get("id"):
        raise UserError(f"{path.name if path.is_file() else f'competition {name!r}'}: the target and the id are "
                        f"the same column {raw['target']!r}: the id names rows, the target is what is predicted")
    cv = {k: v for k, v in (("repeats", repeats), ("seeds", seeds), ("fold_workers", fold_workers),
                            ("cluster", cluster)) if v is not None}
    if cv and isinstance(raw.get("cv", {}), dict):  # not a table: from_dict says so
        raw["cv"] = {**raw.get("cv", {}), **cv}
    return from_dict(raw, path.name if path.is_file() else f"competition {name!r}")
