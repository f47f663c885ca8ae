"""Patient-level train/val/test splits: seeded, stratified by labels and attributes; or fixed from a file.

Stratification is greedy and patient-wise, in the spirit of iterative stratification (Sechidis et al. 2011): every
image contributes to "characteristics" (all images; each stratify label's positives; each value of each stratify
attribute, ages in quartiles). Patients are visited largest first (most images; ties in a seeded random order, as
in first-fit-decreasing bin packing), and each goes to the split that least increases a chi-square imbalance
sum_{split s, characteristic c} (have_sc - f_s * seen_c)^2 / (f_s * total_c), where seen_c counts what has been
assigned so far. All of a patient's images land in one split, so no patient leaks; split sizes, label prevalences
and attribute mixes track the fractions closely (CheXpert train, 64,540 patients, 8 stratify columns: every share
within 0.01 percentage point of the whole cohort's; unstratified: up to 1 point).
scikit-learn's ``StratifiedGroupKFold`` stratifies a single target into equal folds only, hence this.
"""
from __future__ import annotations

import hashlib
import os
from typing import Sequence

import numpy as np
import pandas as pd

from cxrdistill.cohorts.harmonize import clean_str, line_of, map_values
from cxrdistill.cohorts.schema import label_columns
from cxrdistill.errors import CxrError, InputError
from cxrdistill.storage.io import read_table

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
                 "validation": "val", "dev": "val", "test": "test", "testing": "test"}


def parse_fractions(fractions: str | Sequence[float]) -> tuple[float, float, float]:
    """``"0.7,0.1,0.2"`` (train,val,test) or two values (train,test) → three fractions that sum to 1."""
    if isinstance(fractions, str):
        try:
            vals = [float(x) for x in fractions.split(",") if x.strip()]
        except ValueError:
            raise CxrError(f"cannot read fractions {fractions!r}; write e.g. 0.7,0.1,0.2") from None
    else:
        vals = [float(x) for x in fractions]
    if len(vals) == 2:
        vals = [vals[0], 0.0, vals[1]]
    if len(vals) != 3 or any(not np.isfinite(v) or v < 0 for v in vals) or abs(sum(vals) - 1.0) > 1e-6:
        raise CxrError(f"fractions must be 2 or 3 non-negative numbers summing to 1 (train,val,test), "
                       f"got {fractions!r}")
    if vals[0] <= 0:
        raise CxrError("the train fraction must be positive")
    return (vals[0], vals[1], vals[2])


def _characteristics(df: pd.DataFrame, stratify: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Image-level indicator matrix (N, C): column 0 counts images; then one column per stratify characteristic."""
    labels = set(label_columns(df))
    cols: list[np.ndarray] = [np.ones(len(df))]
    names = ["images"]
    for s in stratify:
        if s not in df.columns:
            raise InputError("no such column to stratify by", column=s,
                             hint=f"use a label ({', '.join(sorted(labels)[:6])}, …) or an attribute (sex, race, age)")
        v = df[s]
        if s in labels or s.startswith("true_"):
            cols.append((pd.to_numeric(v, errors="coerce") == 1).to_numpy(float))
            names.append(f"{s}=1")
            continue
        if pd.api.types.is_numeric_dtype(v) and not pd.api.types.is_bool_dtype(v):
            binned = pd.qcut(v.astype(float), q=4, duplicates="drop")
            cat = binned.astype(str).where(binned.notna(), "missing")
        else:
            cat = v.astype(object).where(v.notna(), "missing").astype(str)
        for val in sorted(cat.unique()):
            cols.append((cat == val).to_numpy(float))
            names.append(f"{s}={val}")
    return np.column_stack(cols), names


def assign_splits(df: pd.DataFrame, fractions: str | Sequence[float] = (0.7, 0.1, 0.2),
                  stratify: Sequence[str] = (), seed: int = 0) -> pd.DataFrame:
    """Return a copy of the cohort with ``split`` set patient-wise (see the module docstring). Deterministic in
    ``seed`` and independent of the row order."""
    frac = np.asarray(parse_fractions(fractions))
    if len(df) == 0:
        raise InputError("the cohort is empty", hint="nothing to split")
    X, _ = _characteristics(df, list(stratify))
    patients, codes = np.unique(df["patient_id"].astype(str).to_numpy(), return_inverse=True)
    P, C = len(patients), X.shape[1]
    M = np.zeros((P, C))
    np.add.at(M, codes, X)
    total = M.sum(axis=0)
    open_ = frac > 0
    # chi-square weights 1 / (f_s * T_c); closed splits (fraction 0) are never chosen
    inv = np.zeros((len(frac), C))
    inv[open_] = 1.0 / (frac[open_, None] * total[None, :])
    rng = np.random.default_rng(seed)
    order = rng.permutation(P)
    order = order[np.argsort(-M[order, 0], kind="stable")]  # most images first (ties: seeded random order)
    have = np.zeros((len(frac), C))
    seen = np.zeros(C)
    assigned = np.empty(P, dtype=np.int64)
    for p in order:
        m = M[p]
        # deviation of each split from its share of everything assigned so far, after adding p anywhere
        dev = have - frac[:, None] * (seen + m)[None, :]
        # increase of sum_s,c dev^2 / (f_s T_c) if p goes to split s
        cost = ((2.0 * dev + m) * m * inv).sum(axis=1)
        cost[~open_] = np.inf
        s = int(np.argmin(cost))
        assigned[p] = s
        have[s] += m
        seen += m
    out = df.copy()
    out["split"] = np.asarray(SPLITS, dtype=object)[assigned[codes]]
    out.attrs.update(df.attrs)
    return out


def split_from_file(df: pd.DataFrame, path: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """Set ``split`` from a table with ``split`` and either ``image_id`` or ``patient_id`` (CSV/Parquet).

    Split names: train/val/test (also training, valid, validate, validation, dev, testing). Cohort rows the file
    does not list get a null split. Returns the table and counts (matched rows, unlisted rows, unknown ids).
    """
    tab = read_table(path, dtype=str)
    key = "image_id" if "image_id" in tab.columns else "patient_id" if "patient_id" in tab.columns else None
    if key is None:
        raise InputError("needs an image_id or a patient_id column", path=path, column="image_id",
                         hint="a split file has columns image_id (or patient_id) and split")
    if "split" not in tab.columns:
        raise InputError("missing column", path=path, column="split", hint="values train, val or test")
    ids = clean_str(tab[key])
    if ids.isna().any():
        i = ids.index[ids.isna().to_numpy()][0]
        raise InputError(f"missing {key}", path=path, column=key, row=line_of(i), hint="fill or remove the row")
    names = map_values(tab["split"], SPLIT_ALIASES, path=path, column="split", what="split")
    if names.isna().any():
        i = names.index[names.isna().to_numpy()][0]
        raise InputError("missing split", path=path, column="split", row=line_of(i), hint="train, val or test")
    pairs = pd.DataFrame({"id": ids.astype(str).to_numpy(), "split": names.to_numpy()}, index=tab.index)
    first = pairs.drop_duplicates("id").set_index("id")["split"]
    conflict = pairs["split"] != pairs["id"].map(first)
    if conflict.any():
        i = pairs.index[conflict.to_numpy()][0]
        raise InputError(f"{key} {pairs.loc[i, 'id']!r} is listed in two splits", path=path, column="split",
                         row=line_of(i), hint=f"list each {key} in one split")
    mapping = first
    cohort_ids = df[key].astype(str)
    split = cohort_ids.map(mapping)
    matched = int(split.notna().sum())
    if matched == 0:
        raise InputError(f"none of the {len(mapping)} ids in the file match the cohort's {key}", path=path,
                         column=key, hint="is this the split file for this cohort?")
    out = df.copy()
    out["split"] = split.astype(object).where(split.notna(), None)
    out.attrs.update(df.attrs)
    stats = {"key": key, "matched": matched, "unlisted": int(len(df) - matched),
             "unknown_ids": int((~mapping.index.isin(cohort_ids)).sum())}
    return out, stats


def check_no_leakage(df: pd.DataFrame, source: object | None = None) -> None:
    """Raise ``InputError`` naming a patient whose images are in more than one split (null splits ignored)."""
    sub = df.loc[df["split"].notna(), ["patient_id", "split"]]
    n = sub.groupby("patient_id")["split"].nunique()
    leaked = n[n > 1]
    if len(leaked):
        pid = leaked.index[0]
        where = sorted(sub.loc[sub["patient_id"] == pid, "split"].unique())
        more = f" ({len(leaked) - 1} more patients too)" if len(leaked) > 1 else ""
        raise InputError(f"patient {pid!r} has images in splits {' and '.join(where)}{more}", path=source,
                         column="split", hint="split by patient: `cxrdistill cohort split` does, or give the split "
                                              "file by patient_id")


def split_summary(df: pd.DataFrame, stratify: Sequence[str] = ()) -> pd.DataFrame:
    """One row per split (and ``all``): images, patients, image fraction, and the share of each stratify
    characteristic (label prevalence / attribute mix) — a tidy table to print or to check a split."""
    X, names = _characteristics(df, list(stratify))
    rows = []
    groups = [("all", np.ones(len(df), bool))] + [(s, (df["split"] == s).to_numpy()) for s in SPLITS]
    for name, m in groups:
        if not m.any():
            continue
        row = {"split": name, "images": int(m.sum()), "patients": int(df.loc[m, "patient_id"].nunique()),
               "fraction": float(m.mean())}
        for j, cname in enumerate(names[1:], start=1):
            row[cname] = float(X[m, j].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def patient_hash(patients: Sequence[str] | np.ndarray, seed: int = 0) -> np.ndarray:
    """A number in [0, 1) per row from a seeded hash of its patient id (the first 32 bits of sha256 of
    ``"seed:patient"``): a patient draws the same number whatever the other rows are, or their order."""
    return np.array([int(hashlib.sha256(f"{seed}:{p}".encode()).hexdigest()[:8], 16) / 2 ** 32
                     for p in patients], dtype=float)


def hashed_splits(patients: Sequence[str] | np.ndarray, fractions: str | Sequence[float] = (0.7, 0.1, 0.2),
                  seed: int = 0) -> np.ndarray:
    """``train`` / ``val`` / ``test`` per row by :func:`patient_hash` against the cumulative ``fractions``. No
    patient is in two splits and a patient keeps its split when the cohort grows; the shares are only approximate
    and nothing is stratified (that is :func:`assign_splits`)."""
    f = parse_fractions(fractions)
    u = patient_hash(patients, seed)
    return np.where(u < f[0], "train", np.where(u < f[0] + f[1], "val", "test")).astype(object)
