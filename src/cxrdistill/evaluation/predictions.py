"""Read and validate the predictions table (one row per image; ``y_T`` 0/1 or blank, ``p_T`` score,
optional ``ytrue_T``; attribute columns). Every problem a user can cause becomes an ``InputError`` naming the
file, column and row, with what to do."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from cxrdistill.errors import InputError
from cxrdistill.storage.io import read_table

LABEL_KINDS = ("observed", "true", "both")
_PREFIX = {"observed": "y_", "true": "ytrue_"}


def label_column(task: str, kind: str) -> str:
    """``y_T`` for observed labels, ``ytrue_T`` for ground truth."""
    return _PREFIX[kind] + task


def read_predictions(path: str | Path):
    """Read a predictions table (CSV, optionally gzipped, or Parquet) and check it is non-empty with unique ids."""
    df = read_table(path)
    if len(df) == 0:
        raise InputError("predictions table has no rows", path=path, hint="audit a non-empty predictions file")
    check_ids(df, path=path)
    return df


def check_ids(df, path=None, require: bool = False) -> None:
    """``image_id`` must be unique (a duplicated image would be counted twice)."""
    if "image_id" not in df.columns:
        if require:
            raise InputError("missing column", path=path, column="image_id",
                             hint="the predictions table needs one row per image with its image_id")
        return
    dup = df["image_id"].duplicated(keep="first")
    if dup.any():
        first = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(f"duplicate image_id {df['image_id'].iloc[first]!r} ({int(dup.sum())} duplicated rows)",
                         path=path, column="image_id", row=first + 2,
                         hint="keep one prediction per image (aggregate views first if needed)")


def find_tasks(df, tasks: Iterable[str] | None = None, labels: str = "observed", path=None) -> list[str]:
    """Tasks to audit: the requested ones (checked) or every ``T`` with both a ``p_T`` and a label column."""
    if labels not in LABEL_KINDS:
        raise InputError(f"unknown labels {labels!r}", hint=f"choose one of {', '.join(LABEL_KINDS)}")
    kinds = ["observed", "true"] if labels == "both" else [labels]
    cols = set(map(str, df.columns))
    available = sorted(c[2:] for c in cols if c.startswith("p_") and all(label_column(c[2:], k) in cols for k in kinds))
    if tasks:
        tasks = list(dict.fromkeys(tasks))
        for t in tasks:
            need = ["p_" + t] + [label_column(t, k) for k in kinds]
            for c in need:
                if c not in cols:
                    hint = (f"tasks available: {', '.join(available)}" if available else
                            "each task T needs a score column p_T and a label column y_T")
                    if c.startswith("ytrue_"):
                        hint = "ground-truth columns ytrue_T exist only for synthetic cohorts; use --labels observed"
                    raise InputError(f"task {t!r} has no column {c!r}", path=path, column=c, hint=hint)
        return tasks
    if not available:
        scored = sorted(c[2:] for c in cols if c.startswith("p_"))
        if "true" in kinds and scored:
            raise InputError(f"no ground-truth column ytrue_T for the scored tasks ({', '.join(scored)})", path=path,
                             column="ytrue_" + scored[0],
                             hint="ytrue_T exists only for synthetic cohorts; use --labels observed")
        what = " and ".join(["y_T"] * ("observed" in kinds) + ["ytrue_T"] * ("true" in kinds))
        raise InputError(f"no task found: need score columns p_T with matching {what} columns", path=path,
                         hint=f"columns present: {', '.join(sorted(cols)[:12])}")
    return available


def _labels_array(df, col: str, path=None) -> np.ndarray:
    """Labels as float 0/1/NaN; anything else (e.g. CheXpert's -1 uncertain) is an error naming the row."""
    import pandas as pd

    s = df[col]
    if s.dtype == bool:
        return s.to_numpy(dtype=float)
    v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)
    bad_text = np.isnan(v) & s.notna().to_numpy() & (s.astype(str).str.strip() != "").to_numpy()
    bad_value = ~np.isnan(v) & (v != 0) & (v != 1)
    bad = bad_text | bad_value
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"label {str(s.iloc[i])!r} is not 0, 1 or blank ({int(bad.sum())} such rows)", path=path,
                         column=col, row=i + 2,
                         hint="labels must be binary; apply a label policy (e.g. U-Zeros/U-Ones/U-Ignore) first")
    return v


def _scores_array(df, col: str, path=None) -> np.ndarray:
    import pandas as pd

    s = df[col]
    v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)
    nonnum = np.isnan(v) & s.notna().to_numpy()
    if s.dtype == object:
        nonnum &= (s.astype(str).str.strip() != "").to_numpy()
    if nonnum.any():
        i = int(np.flatnonzero(nonnum)[0])
        raise InputError(f"score {s.iloc[i]!r} is not a number", path=path, column=col, row=i + 2,
                         hint="scores must be numeric (probabilities or logits)")
    if np.isinf(v).any():
        i = int(np.flatnonzero(np.isinf(v))[0])
        raise InputError("score is infinite", path=path, column=col, row=i + 2, hint="write finite scores")
    return v


def task_arrays(df, task: str, label_col: str | None = None, drop_missing_scores: bool = False, path=None):
    """(y, p, keep) for one task: rows with a known label; ``keep`` is the boolean row mask into ``df``.

    A missing score on a labelled row is an error, or — with ``drop_missing_scores`` — the row is left out (the
    caller reports how many).
    """
    label_col = label_col or label_column(task, "observed")
    y = _labels_array(df, label_col, path)
    p = _scores_array(df, "p_" + task, path)
    labelled = ~np.isnan(y)
    missing = labelled & np.isnan(p)
    if missing.any() and not drop_missing_scores:
        i = int(np.flatnonzero(missing)[0])
        raise InputError(f"{int(missing.sum())} labelled rows have no score (NaN)", path=path, column="p_" + task,
                         row=i + 2, hint="fix the predictions, or pass --on-error skip to leave those rows out")
    keep = labelled & ~np.isnan(p)
    return y[keep].astype(np.int32), p[keep], keep


def check_attributes(df, attributes: Iterable[str], path=None) -> None:
    cols = list(map(str, df.columns))
    for a in attributes:
        if a not in cols:
            meta = [c for c in cols if not c.startswith(("y_", "p_", "ytrue_"))]
            raise InputError(f"attribute column {a!r} not found", path=path, column=a,
                             hint=f"columns that could be attributes: {', '.join(meta) or 'none'}")
