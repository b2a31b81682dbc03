"""Checks of a tabular competition's frames beyond their column names, all before any work.

The sample submission's shape, enough rows for the folds, a target that varies, finite numbers
of a size that can be computed with, and one type per column across train and test (a column
that train leaves empty takes the type of its test values). :func:`align` then puts the test
columns in train's order, as the fitted pipeline expects them. Each failure is a
:class:`UserError` naming the file, the column and the first row at fault (rows count as in the
file: the header is row 1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.tabular import category_label
from pipeline.errors import UserError

# A text column is taken for a numeric one with junk in it when at least this share parses.
NUMERIC_SHARE = 0.9
# Larger numbers overflow float64 once squared and summed (variances, products of features).
LARGEST = 1e100
_PARSED_AT_ONCE = 2000  # distinct values of a text column parsed at a time (is_numeric_column)


def file_row(position: int) -> int:
    return position + 2  # the header is row 1


def is_numeric_column(train_col: pd.Series, test_col: pd.Series) -> bool:
    """Whether a feature holds numbers (text in it is then junk), judged on the values of train or,
    where train has none, of test: at least ``NUMERIC_SHARE`` of them parse as numbers.

    Each distinct value is parsed once, the most frequent first, and a column stops being looked
    at once too many have failed: a text column of 300,000 rows costs a few thousand parses, not
    300,000 (``pd.to_numeric`` on text is slow), with the same answer."""
    if pd.api.types.is_numeric_dtype(train_col) and pd.api.types.is_numeric_dtype(test_col):
        return True  # as read: 5,000 number columns cost 3 s of gap counts otherwise
    values = train_col if train_col.notna().any() else test_col
    present = int(values.notna().sum())
    if present == 0 or pd.api.types.is_numeric_dtype(values):
        return pd.api.types.is_numeric_dtype(values)
    counts = values.value_counts()  # distinct values, most frequent first; NaN left out
    failed = 0
    for start in range(0, len(counts), _PARSED_AT_ONCE):
        part = counts.iloc[start:start + _PARSED_AT_ONCE]
        parsed = pd.to_numeric(pd.Series(part.index.to_numpy(dtype=object), dtype=object), errors="coerce")
        failed += int(part.to_numpy()[parsed.isna().to_numpy()].sum())
        if present - failed < NUMERIC_SHARE * present:
            return False
    return True


def names_classes(columns: list[str], target: pd.Series) -> bool:
    """Whether sample columns are one probability column per class: each named by a class of the
    target, or ``<target>_<class>`` (pipeline.submission.class_columns maps them)."""
    labels = {category_label(v) for v in target.dropna().unique()}
    prefix = f"{target.name}_"
    return all(c in labels or (c.startswith(prefix) and c[len(prefix):] in labels) for c in columns)


def check_sample(sample: pd.DataFrame, id_column: str, name: str, target: pd.Series | None = None) -> None:
    targets = [str(c) for c in sample.columns if c != id_column]
    if len(targets) > 1 and target is not None and names_classes(targets, target):
        return  # class probabilities
    if len(targets) != 1:
        listed = f": {', '.join(targets[:5])}" if targets else ""
        raise UserError(f"{name}: needs one target column besides {id_column!r}, has {len(targets)}{listed}")


def check_rows(train: pd.DataFrame, folds: int, name: str) -> None:
    if len(train) < folds:
        raise UserError(f"{name}: {len(train)} row{'s' if len(train) != 1 else ''}, "
                        f"too few for {folds}-fold cross-validation")


def check_target_varies(y: pd.Series, name: str) -> None:
    values = y.dropna().unique().tolist()
    if len(values) == 1:
        raise UserError(f"{name}: target {y.name!r} is {values[0]!r} in every row: nothing to learn")


def check_finite(frame: pd.DataFrame, name: str) -> None:
    """Every number finite and at most LARGEST in size: the first bad cell, by file, column and row."""
    for column in frame.columns:
        series = frame[column]
        if not pd.api.types.is_float_dtype(series):
            continue  # integers cannot overflow float64; text is checked elsewhere
        values = series.to_numpy(dtype=float, na_value=np.nan)
        bad = np.isinf(values) | (np.abs(np.nan_to_num(values)) > LARGEST)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = values[row]
            why = ("numbers must be finite (leave the cell empty for a missing value)" if np.isinf(value)
                   else f"too large to compute with (at most {LARGEST:g} in size)")
            raise UserError(f"{name}: column {column!r} holds {value:g} at row {file_row(row)}: {why}")


def align(train: pd.DataFrame, test: pd.DataFrame, *, target: str,
          categorical: tuple[str, ...] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Test columns in train's order (the sets were checked equal), and one type per column: numbers
    read as text become numbers, and a column empty in one file takes the other file's type."""
    test = test[[c for c in train.columns if c != target]]
    train_types, test_types = {}, {}
    for column in test.columns:
        if column in categorical:
            continue
        tr, te = train[column], test[column]
        if is_numeric_column(tr, te):
            for series, types in ((tr, train_types), (te, test_types)):
                if not pd.api.types.is_numeric_dtype(series):
                    types[column] = pd.to_numeric(series)  # every value parses: checked
        elif pd.api.types.is_numeric_dtype(tr) and tr.isna().all() and not te.isna().all():
            train_types[column] = tr.astype(te.dtype)  # empty in train, text in test: text
        elif pd.api.types.is_numeric_dtype(te) and te.isna().all() and not tr.isna().all():
            test_types[column] = te.astype(tr.dtype)
    return (train.assign(**train_types) if train_types else train,
            test.assign(**test_types) if test_types else test)


# --- checks of the config and the plan against the files (pipeline.tasks.tabular calls them) ------

COLUMN_LISTS = ("categorical", "numeric", "drop", "text", "date", "high_cardinality")
REGRESSION_METRICS = frozenset({"rmse", "log_rmse", "rmsle", "mae", "r2"})


def check_config_columns(comp, train: pd.DataFrame, name: str) -> None:
    """Every column a ``[columns]`` list names is in the training file: a typo is not ignored."""
    for key in COLUMN_LISTS:
        unknown = [column for column in getattr(comp, key) if column not in train.columns]
        if unknown:
            many = "s" if len(unknown) > 1 else ""
            raise UserError(f"{comp.name}: [columns] {key} names unknown column{many} "
                            f"{', '.join(map(repr, unknown[:5]))} (not in {name})")


def check_features_left(comp, train: pd.DataFrame, name: str) -> None:
    left = [c for c in train.columns if c not in (comp.target, comp.id, *comp.drop)]
    if not left:
        raise UserError(f"{name}: no feature columns left besides id {comp.id!r} and target {comp.target!r}"
                        + (" once [columns] drop is applied" if comp.drop else ""))


def check_numeric_target(y: pd.Series, name: str, task: str | None) -> None:
    """A column of numbers with a stray word in it is junk at that row, not a multiclass target."""
    if pd.api.types.is_numeric_dtype(y) or not is_numeric_column(y, y):
        return
    parsed = pd.to_numeric(y.astype(object), errors="coerce")
    row = int(np.flatnonzero((y.notna() & parsed.isna()).to_numpy())[0])
    raise UserError(f"{name}: column {y.name!r} is numeric except at row {file_row(row)} "
                    f"(value {y.iloc[row]!r})" + (": a regression target is numbers" if task == "regression"
                                                 else ': fix it, or set task = "multiclass" for labels'))


def check_task(y: pd.Series, task: str, name: str) -> None:
    """A task given (``--task``) that the target cannot be: regression on text, binary on more
    than two classes."""
    if task == "regression" and not pd.api.types.is_numeric_dtype(y):
        parsed = pd.to_numeric(y.astype(object), errors="coerce")
        row = int(np.flatnonzero((y.notna() & parsed.isna()).to_numpy())[0])
        raise UserError(f"{name}: task regression needs numbers, but column {y.name!r} holds {y.iloc[row]!r} "
                        f"at row {file_row(row)} (give --task multiclass, or drop --task)")
    classes = y.nunique()
    if task == "binary" and classes > 2:
        raise UserError(f"{name}: task binary needs two classes, but column {y.name!r} holds {classes} "
                        "(give --task multiclass, or drop --task)")


def check_plan(comp, train: pd.DataFrame, sample_targets: list[str], task: str, metric, names: tuple[str, str]) -> None:
    """The task, metric and folds against the files, before the MLflow run starts: a metric of the
    other kind of task, a multiclass probability metric with one sample column, a class with
    fewer rows than folds, a target out of the range of its transform or metric."""
    train_name, sample_name = names
    y = train[comp.target]
    check_task(y, task, train_name)
    regression_metric = metric.name in REGRESSION_METRICS
    if regression_metric != (task == "regression"):
        hint = "--task regression" if regression_metric else "a classification metric or --task binary/multiclass"
        raise UserError(f"{train_name}: metric {metric.name} is for "
                        f"{'regression' if regression_metric else 'classification'}, but the target "
                        f"{comp.target!r} is {task} (give {hint})")
    if task == "multiclass" and metric.needs_proba and metric.top_k is None and len(sample_targets) == 1:
        classes = y.nunique()
        raise UserError(f"{sample_name}: metric {metric.name} scores one probability column per class "
                        f"({classes} classes), but the sample has one column {sample_targets[0]!r}")
    if task != "regression":
        counts = y.value_counts()
        if counts.min() < comp.cv.folds:
            label = counts.idxmin()
            raise UserError(f"{train_name}: class {category_label(label)!r} of {comp.target!r} has "
                            f"{counts.min()} row{'s' if counts.min() != 1 else ''}, fewer than the "
                            f"{comp.cv.folds} folds (lower [cv] folds)")
        return
    values = y.to_numpy(dtype=float)
    for why, bad in (("log1p needs targets above -1", comp.target_transform == "log1p" and values <= -1),
                     ("rmsle needs targets of 0 or more", metric.name == "rmsle" and values < 0)):
        if np.any(bad):
            row = int(np.flatnonzero(bad)[0])
            raise UserError(f"{train_name}: column {comp.target!r} holds {values[row]:g} at row {file_row(row)}: {why}")
