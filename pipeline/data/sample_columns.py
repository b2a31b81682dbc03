"""A folder is enough: the id and target columns of a competition without a config, from its files.

The sample submission names them: its first column is the id, and where it has one other column,
that is the target (else the one training column the test file lacks). A column given with the
wrong case is found, and the run says so; a misspelt one is an error that suggests the nearest
(``did_you_mean``, in the files' checks).
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pandas as pd

from pipeline.console import say

TRAIN, TEST, SAMPLE = "train.csv", "test.csv", "sample_submission.csv"


def header(path: Path) -> list[str]:
    try:
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except (OSError, ValueError, pd.errors.ParserError):
        return []


def infer(data_dir: Path, *, target: str | None = None, id_column: str | None = None) -> tuple[str, str] | None:
    """The (id, target) of the tabular files in ``data_dir``, those given kept; None where the
    folder does not hold train, test and sample files whose sample's first column is a test column
    (an image folder, or no files yet)."""
    folder = Path(data_dir)
    train, test, sample = (header(folder / name) for name in (TRAIN, TEST, SAMPLE))
    if not (train and test and sample) or sample[0] not in test:
        return None
    found_id = id_column or sample[0]
    found_target = target
    if found_target is None:
        others = [c for c in sample if c != found_id]
        missing_in_test = [c for c in train if c not in test and c != found_id]
        if len(others) == 1:
            found_target = resolve(others[0], train, f"{folder / TRAIN}", "target")
        elif len(missing_in_test) == 1:
            found_target = missing_in_test[0]
        else:
            return None
    return found_id, found_target


def say_inferred(found: tuple[str, str], *, target: str | None, id_column: str | None) -> None:
    """One line: the columns ``infer`` took from the sample, those not given."""
    taken = [f"{role} {value!r}" for role, value, given in (("id", found[0], id_column),
                                                              ("target", found[1], target)) if not given]
    say(f"columns: {' and '.join(taken)} from {SAMPLE} (give TARGET= and ID= to choose others)")


def resolve(given: str, columns: list[str], name: str, role: str) -> str:
    """``given`` as a column of ``columns``: itself, or the one column equal to it but for case
    (said in one line); else ``given`` unchanged, for the file checks to report."""
    if given in columns:
        return given
    same = [c for c in columns if c.casefold() == given.casefold()]
    if len(same) == 1:
        say(f"{role}: column {given!r} is {same[0]!r} in {Path(name).name}")
        return same[0]
    return given


def did_you_mean(given: str, columns) -> str:
    """`` (did you mean 'x'?)`` with the nearest of ``columns`` to a misspelt ``given``, or ``""``."""
    columns = [str(c) for c in columns]
    folded = {c.casefold(): c for c in columns}
    near = difflib.get_close_matches(given.casefold(), list(folded), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(folded[c]) for c in near)}?)" if near else ""


def resolve_in_folder(data_dir: Path, target: str, id_column: str) -> tuple[str, str]:
    """``target`` and ``id_column`` with the case of ``data_dir``'s training and test files."""
    folder = Path(data_dir)
    train, test = header(folder / TRAIN), header(folder / TEST)
    return (resolve(target, train, str(folder / TRAIN), "target") if train else target,
            resolve(id_column, test, str(folder / TEST), "id") if test else id_column)
