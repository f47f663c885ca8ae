"""Shared helpers for readers: strict value maps, label parsing, race/sex/view harmonization, row numbers in errors.

Row numbers in error messages are line numbers of the source file (the header is line 1), so ``sed -n 5p FILE``
shows the offending row.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from cxrdistill.cohorts.schema import CHEXPERT_FINDINGS
from cxrdistill.cohorts.validate import validate_cohort
from cxrdistill.errors import InputError, show_value

LABEL_VALUES = (1.0, 0.0, -1.0)


def snake_case(name: str) -> str:
    """``'Pleural Effusion'`` → ``'pleural_effusion'``; ``'Pleural_Thickening'`` → ``'pleural_thickening'``."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")


def line_of(index: int) -> int:
    """File line of a 0-based data row read with a one-line header."""
    return int(index) + 2


def require_columns(df: pd.DataFrame, columns: Iterable[str], path: object, what: str = "file") -> None:
    """Fail with the first missing column, listing what the file has."""
    have = list(df.columns)
    for c in columns:
        if c not in df.columns:
            shown = ", ".join(map(str, have[:12])) + (", …" if len(have) > 12 else "")
            raise InputError(f"missing column in {what} (found: {shown})", path=path, column=c,
                             hint=f"is this the right file? it needs the column {c!r}")


def clean_str(series: pd.Series) -> pd.Series:
    """Strings stripped, blanks → missing; keeps the index."""
    s = series.astype("string").str.strip()
    return s.mask(s == "")


def required_text(series: pd.Series, *, path: object, column: str, message: str,
                  hint: str = "fill or remove the row") -> pd.Series:
    """Trimmed text of a column that must be filled in every row; the first blank row is an InputError."""
    s = clean_str(series)
    if s.isna().any():
        i = s.index[s.isna().to_numpy()][0]
        raise InputError(message, path=path, column=column, row=line_of(i), hint=hint)
    return s.astype(str)


def to_object(series: pd.Series) -> pd.Series:
    """Object column with None for missing (the cohort's convention for nullable text)."""
    return series.astype(object).where(series.notna(), None)


def map_values(series: pd.Series, mapping: Mapping[str, object], *, path: object, column: str, what: str,
               case_insensitive: bool = True) -> pd.Series:
    """Map raw strings through ``mapping`` (blank → None); an unknown value is an error naming its row."""
    s = clean_str(series)
    key = s.str.lower() if case_insensitive else s
    table = {(k.lower() if case_insensitive else k): v for k, v in mapping.items()}
    known = key.isin(list(table)) | key.isna()
    if not known.all():
        i = known.index[~known.to_numpy()][0]
        allowed = ", ".join(sorted({str(k) for k in mapping}))
        raise InputError(f"unknown {what} {s.loc[i]!r}", path=path, column=column, row=line_of(i),
                         hint=f"expected one of: {allowed} (or blank)")
    out = key.map(table)
    return out.astype(object).where(out.notna(), None)


def parse_labels(series: pd.Series, *, path: object, column: str, binary: bool = False) -> pd.Series:
    """Raw label values → float 1/0/-1/NaN; anything else is an error naming the row."""
    if pd.api.types.is_bool_dtype(series):
        return series.astype(float)
    num = pd.to_numeric(series, errors="coerce") if not pd.api.types.is_numeric_dtype(series) else series
    num = num.astype(float)
    raw_blank = clean_str(series).isna() if not pd.api.types.is_numeric_dtype(series) else series.isna()
    allowed = (1.0, 0.0) if binary else LABEL_VALUES
    bad = ~(num.isin(allowed) | (num.isna() & raw_blank))
    if bad.any():
        i = bad.index[bad.to_numpy()][0]
        shown = ", ".join(f"{v:g}" for v in allowed)
        raise InputError(f"label value {show_value(series.loc[i])} is not one of {shown} or blank",
                         path=path, column=column, row=line_of(i),
                         hint="labels must be 1 (positive), 0 (negative), -1 (uncertain) or blank (not mentioned)")
    return num


def parse_number(series: pd.Series, *, path: object, column: str, what: str = "number",
                 minimum: float | None = 0.0) -> pd.Series:
    """Numeric column (blank → NaN); text or values below ``minimum`` are errors naming the row."""
    num = pd.to_numeric(series, errors="coerce").astype(float) if not pd.api.types.is_numeric_dtype(series) \
        else series.astype(float)
    blank = series.isna() if pd.api.types.is_numeric_dtype(series) else clean_str(series).isna()
    bad = num.isna() & ~blank
    if bad.any():
        i = bad.index[bad.to_numpy()][0]
        raise InputError(f"{what} {show_value(series.loc[i])} is not a number", path=path, column=column, row=line_of(i),
                         hint="fix the value or leave it blank")
    if minimum is not None:
        low = num < minimum
        if low.any():
            i = low.index[low.to_numpy()][0]
            raise InputError(f"{what} {show_value(series.loc[i])} is below {minimum:g}", path=path, column=column,
                             row=line_of(i), hint="fix the value or leave it blank")
    return num


def check_unique(series: pd.Series, *, path: object, column: str, what: str = "image id") -> None:
    """Duplicate ids are an error naming both rows."""
    dup = series.duplicated(keep=False)
    if dup.any():
        first = series[dup].iloc[0]
        rows = series.index[(series == first).to_numpy()][:2]
        raise InputError(f"duplicate {what} {first!r} (also in row {line_of(rows[1])})", path=path, column=column,
                         row=line_of(rows[0]), hint=f"each {what} must appear once; remove the duplicate rows")


# --- sex ---------------------------------------------------------------------------------------------------------
SEX_MAP: dict[str, str | None] = {"m": "M", "male": "M", "f": "F", "female": "F", "unknown": None}


# --- race / ethnicity -------------------------------------------------------------------------------------------
RACES = ("White", "Black", "Asian", "Other")
_UNKNOWN_RACE = re.compile(r"unknown|unable|declined|refused|not (?:specified|reported|recorded)", re.I)


def harmonize_race(raw: pd.Series) -> pd.Series:
    """Free-text race → White / Black / Asian / Other / None.

    Follows Glocker et al. 2023 (CheXpert ``PRIMARY_RACE``): a value containing "Black" → Black, then "White" →
    White, then "Asian" → Asian (a later match wins, as in their code). Matching whole words, case-insensitive
    ("White or Caucasian" is White, not Asian), the same rule serves
    MIMIC-IV's ``race`` strings ("BLACK/AFRICAN AMERICAN", "WHITE - RUSSIAN", "ASIAN - CHINESE"). Unknown, declined,
    refused or blank → None; every other recorded value (Native American, Pacific Islander, Hispanic/Latino-only,
    multiple, "Other", …) → Other.
    """
    s = clean_str(raw)
    low = s.str.lower()
    out = pd.Series(np.where(s.isna(), None, "Other"), index=raw.index, dtype=object)
    for word in ("black", "white", "asian"):
        out[low.str.contains(rf"\b{word}\b", na=False).to_numpy()] = word.capitalize()
    named = out.isin(["Black", "White", "Asian"]).to_numpy()
    out[s.str.contains(_UNKNOWN_RACE, na=False).to_numpy() & ~named] = None
    return out


def harmonize_ethnicity(raw: pd.Series) -> pd.Series:
    """CheXpert ``ETHNICITY`` → ``Hispanic`` / ``Non-Hispanic`` / None ("Non-Hispanic/Non-Latino" and
    "Not Hispanic" are the values Glocker et al. kept)."""
    low = clean_str(raw).str.lower()
    out = pd.Series(None, index=raw.index, dtype=object)
    out[low.str.contains("hispanic|latino", na=False).to_numpy()] = "Hispanic"
    out[low.str.contains(r"non-hispanic|non hispanic|not hispanic|non-latino", na=False).to_numpy()] = "Non-Hispanic"
    return out


# --- assembling the table ---------------------------------------------------------------------------------------
def frontal_from_view(view: pd.Series) -> pd.Series:
    return view.isin(["PA", "AP"]).astype(bool)


def label_order(names) -> list[str]:
    """Canonical label order: CheXpert's 14 in CheXpert's order, then the others alphabetically."""
    rank = {n: i for i, n in enumerate(CHEXPERT_FINDINGS)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def assemble(*, image_id, patient_id, path, view, sex, age, race=None, ethnicity=None, study_id=None,
             frontal=None, dataset: str, labels: Mapping[str, pd.Series] | pd.DataFrame,
             extra: Mapping[str, pd.Series] | None = None,
             index=None) -> pd.DataFrame:
    """Build a cohort table from aligned series (all with the same index) in the canonical column order."""
    def col(v):
        if v is None:
            return pd.Series(None, index=index, dtype=object)
        return v

    index = index if index is not None else image_id.index
    view = col(view)
    data = {
        "image_id": image_id, "patient_id": patient_id, "path": path, "view": view,
        "frontal": frontal_from_view(view) if frontal is None else frontal.astype(bool), "sex": col(sex),
        "age": age if age is not None else np.nan,
        "race": col(race), "split": col(None),
    }
    if study_id is not None:
        data["study_id"] = study_id
    data["ethnicity"] = col(ethnicity)
    data["dataset"] = dataset
    df = pd.DataFrame(data, index=index)
    lab = pd.DataFrame(dict(labels), index=index) if not isinstance(labels, pd.DataFrame) else labels
    lab = lab[label_order(list(lab.columns))]
    parts = [df, lab.astype(float)]
    if extra:
        parts.append(pd.DataFrame(dict(extra), index=index))
    return pd.concat(parts, axis=1)


def finish(df: pd.DataFrame, source: object, notes: list[str] | None = None) -> pd.DataFrame:
    """Sort by image id, validate, attach provenance notes (kept in the Parquet metadata)."""
    df = df.sort_values("image_id", kind="stable").reset_index(drop=True)
    out = validate_cohort(df, source)
    out.attrs["source"] = str(source)
    out.attrs["notes"] = list(notes or [])
    return out

