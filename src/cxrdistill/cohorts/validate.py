"""Validate a cohort table (see docs/formats.md, "Cohort table") at every boundary: after a reader, and when loading a file.

``validate_cohort`` returns a copy with canonical dtypes and column order, or raises one ``InputError`` that names
the source, the column and the row (``row N (image_id …)``, N counting table rows from 1).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from cxrdistill.cohorts.schema import CORE_COLUMNS, OPTIONAL_META, SEXES, SPLITS, VIEWS, label_columns
from cxrdistill.errors import InputError, show_value
from cxrdistill.storage.io import read_table, write_table

_STRING_COLUMNS = ["image_id", "patient_id", "path"]
_NULLABLE_STRINGS = ["view", "sex", "race", "split", "study_id", "ethnicity", "dataset"]


def _row(df: pd.DataFrame, pos: int) -> str:
    iid = df["image_id"].iloc[pos] if "image_id" in df.columns else None
    return f"{pos + 1} (image_id {iid!r})" if isinstance(iid, str) else str(pos + 1)


def _first(mask) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0])


def _as_strings(df: pd.DataFrame, col: str, source, nullable: bool) -> pd.Series:
    s = df[col]
    if s.isna().all():
        s = pd.Series(None, index=s.index, dtype=object)
    elif pd.api.types.is_integer_dtype(s) and not pd.api.types.is_bool_dtype(s):
        s = s.astype("int64").astype(str)  # integer ids (e.g. MIMIC subject_id) become their decimal text
    elif not (pd.api.types.is_string_dtype(s) and not pd.api.types.is_object_dtype(s)):
        ok = s.isna() | s.map(lambda v: isinstance(v, str))
        if not ok.all():
            pos = _first(~ok)
            raise InputError(f"wrong type: expected text, found {type(s.iloc[pos]).__name__} {show_value(s.iloc[pos])}",
                             path=source, column=col, row=_row(df, pos), hint="store this column as strings")
    s = s.astype(object).where(s.notna(), None)
    if not nullable:
        blank = s.isna() | (s.astype(str).str.strip() == "")
        if blank.any():
            raise InputError("missing value", path=source, column=col, row=_row(df, _first(blank)),
                             hint=f"every row needs a {col}")
    return s


def _check_allowed(df: pd.DataFrame, s: pd.Series, col: str, allowed: set[str], source) -> None:
    bad = s.notna() & ~s.isin(sorted(allowed))
    if bad.any():
        pos = _first(bad)
        raise InputError(f"unknown value {show_value(s.iloc[pos])}", path=source, column=col, row=_row(df, pos),
                         hint=f"expected one of {', '.join(sorted(allowed))} or null")


def _as_float(df: pd.DataFrame, col: str, source) -> pd.Series:
    s = df[col]
    if pd.api.types.is_bool_dtype(s):
        return s.astype(float)
    if not pd.api.types.is_numeric_dtype(s):
        num = pd.to_numeric(s, errors="coerce")
        bad = num.isna() & s.notna()
        if bad.any():
            pos = _first(bad)
            raise InputError(f"wrong type: {show_value(s.iloc[pos])} is not a number", path=source, column=col,
                             row=_row(df, pos), hint="store this column as numbers (floats, NaN for missing)")
        s = num
    return s.astype(float)


def validate_cohort(df: pd.DataFrame, source: object = "cohort") -> pd.DataFrame:
    """Check a cohort table and return it with canonical dtypes and column order.

    Checks: required columns, non-empty, unique non-blank ``image_id``, non-blank ``patient_id``/``path``, allowed
    ``view``/``sex``/``split`` values, ``frontal`` bool and consistent with ``view``, numeric ``age`` ≥ 0, label
    columns in {1, 0, -1, NaN}, ``true_*`` columns in {0, 1, NaN}.
    """
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"expected a table, got {type(df).__name__}", path=source)
    for col in CORE_COLUMNS:
        if col not in df.columns:
            raise InputError("missing column", path=source, column=col,
                             hint=f"a cohort table needs the columns {', '.join(CORE_COLUMNS)}")
    if len(df) == 0:
        raise InputError("the cohort is empty (0 images)", path=source,
                         hint="check the input files and filters; nothing to write")
    dup_cols = df.columns[df.columns.duplicated()]
    if len(dup_cols):
        raise InputError("column appears twice", path=source, column=str(dup_cols[0]), hint="rename or drop one")
    df = df.reset_index(drop=True)
    out: dict[str, pd.Series] = {}
    for col in _STRING_COLUMNS:
        out[col] = _as_strings(df, col, source, nullable=False)
    dup = out["image_id"].duplicated(keep=False)
    if dup.any():
        pos = _first(dup)
        other = _first(dup & (out["image_id"] == out["image_id"].iloc[pos]) & (np.arange(len(df)) != pos))
        raise InputError(f"duplicate image_id (also in row {other + 1})", path=source, column="image_id",
                         row=_row(df, pos), hint="image ids must be unique; remove the duplicate rows")
    for col in _NULLABLE_STRINGS:
        if col in df.columns:
            out[col] = _as_strings(df, col, source, nullable=True)
    _check_allowed(df, out["view"], "view", VIEWS, source)
    _check_allowed(df, out["sex"], "sex", SEXES, source)
    _check_allowed(df, out["split"], "split", SPLITS, source)

    fr = df["frontal"]
    if not pd.api.types.is_bool_dtype(fr):
        ok = fr.map(lambda v: isinstance(v, (bool, np.bool_)))
        if not ok.all():
            pos = _first(~ok)
            raise InputError(f"wrong type: expected true/false, found {show_value(fr.iloc[pos])}", path=source,
                             column="frontal", row=_row(df, pos), hint="frontal must be a boolean column")
    fr = fr.astype(bool)
    known = out["view"].notna()
    incons = known & (fr != out["view"].isin(["PA", "AP"]))
    if incons.any():
        pos = _first(incons)
        raise InputError(f"frontal={bool(fr.iloc[pos])} contradicts view {out['view'].iloc[pos]!r}", path=source,
                         column="frontal", row=_row(df, pos), hint="frontal is true exactly for PA and AP views")
    out["frontal"] = fr

    age = _as_float(df, "age", source)
    neg = age < 0
    if neg.any():
        pos = _first(neg)
        raise InputError(f"negative age {age.iloc[pos]:g}", path=source, column="age", row=_row(df, pos),
                         hint="ages are in years; use NaN when unknown")
    out["age"] = age

    labels = label_columns(df)
    for col in labels:
        v = _as_float(df, col, source)
        bad = ~(v.isin([1.0, 0.0, -1.0]) | v.isna())
        if bad.any():
            pos = _first(bad)
            raise InputError(f"label value {show_value(v.iloc[pos])} is not 1, 0, -1 or NaN", path=source, column=col,
                             row=_row(df, pos), hint="labels: 1 positive, 0 negative, -1 uncertain, NaN unmentioned")
        out[col] = v
    truths = [c for c in df.columns if str(c).startswith("true_")]
    for col in truths:
        v = _as_float(df, col, source)
        bad = ~(v.isin([1.0, 0.0]) | v.isna())
        if bad.any():
            pos = _first(bad)
            raise InputError(f"ground-truth value {show_value(v.iloc[pos])} is not 0 or 1", path=source, column=col,
                             row=_row(df, pos), hint="true_* columns hold 0/1 ground truth")
        out[col] = v
    rest = [c for c in df.columns if c not in out]
    order = (CORE_COLUMNS + [c for c in OPTIONAL_META if c in df.columns] + labels + truths
             + sorted(c for c in rest if str(c).startswith("synth_"))
             + [c for c in rest if not str(c).startswith("synth_")])
    for c in rest:
        out[c] = df[c]
    res = pd.DataFrame({c: out[c] for c in order})
    res.attrs.update(df.attrs)
    return res


def load_cohort(path: str | os.PathLike, *, check: str = "full") -> pd.DataFrame:
    """Read a cohort table (Parquet, or CSV): the one loader of every command and stage.

    ``check="full"`` validates the whole schema (:func:`validate_cohort`: the tables that ``cohort import``,
    ``synth`` and the study write). ``check="ids"`` checks only what a training run needs — a string, unique
    ``image_id`` — so that a table made by another tool with fewer columns can be trained on; later steps check the
    columns they use (``split``, labels, the attribute) and name them when missing.
    """
    if check not in ("full", "ids"):
        raise ValueError(f"check must be 'full' or 'ids', not {check!r}")
    p = Path(path)
    if p.is_dir():
        raise InputError("is a directory, expected a cohort table file", path=p, hint="pass the .parquet file")
    df = read_table(p, dtype={"image_id": str, "patient_id": str, "path": str, "study_id": str}) \
        if p.suffix.lower() in {".csv", ".gz"} else read_table(p)
    if check == "full":
        return validate_cohort(df, p)
    if "image_id" not in df.columns:
        raise InputError("cohort has no image_id column", path=p, column="image_id",
                         hint="build cohorts with `cxrdistill cohort import` or `cxrdistill synth`")
    df = df.copy()
    df["image_id"] = df["image_id"].astype(str)
    dup = df["image_id"].duplicated()
    if dup.any():
        raise InputError(f"image_id {df['image_id'][dup].iloc[0]!r} appears more than once", path=p,
                         column="image_id", hint="one row per image")
    return df.reset_index(drop=True)


def save_cohort(df: pd.DataFrame, path: str | os.PathLike, source: object | None = None) -> pd.DataFrame:
    """Validate and write atomically as Parquet (or CSV by extension); returns the validated table."""
    out = validate_cohort(df, source if source is not None else path)
    write_table(out, path)
    return out
