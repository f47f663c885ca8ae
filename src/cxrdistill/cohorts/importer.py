"""Import a dataset: reader → optional image check → validated cohort written atomically; and a cohort summary."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrdistill.cohorts.imagecheck import ImageCheckReport, check_images, guess_images_root
from cxrdistill.cohorts.readers import READERS
from cxrdistill.cohorts.schema import label_columns
from cxrdistill.cohorts.validate import save_cohort


def import_cohort(reader: str, out: str | os.PathLike | None = None, *, images_root: str | os.PathLike | None = None,
                  image_check: bool = True, missing: str = "error", sample: int = 32,
                  **reader_kw: Any) -> tuple[pd.DataFrame, ImageCheckReport | None]:
    """Run ``READERS[reader](**reader_kw)``; check images under ``images_root`` (default: next to the metadata
    csv); write ``out`` (Parquet) atomically. Nothing is written when anything fails.

    The absolute images root is kept in the table's metadata (``df.attrs["images_root"]``, saved in the Parquet
    file) so later stages can find the images without being told again.
    """
    df = READERS.create(reader, **reader_kw)
    report = None
    root = Path(images_root) if images_root is not None else None
    if image_check:
        if root is None:
            anchor = reader_kw.get("csv") or reader_kw.get("metadata")
            root = guess_images_root(anchor, df) if anchor is not None else Path.cwd()
        df, report = check_images(df, root, missing=missing, sample=sample)
    if root is not None:
        df.attrs["images_root"] = str(root.resolve())
    if report is not None and report.n_dropped:
        df.attrs.setdefault("notes", []).append(f"dropped {report.n_dropped} images: missing/empty/unreadable files")
    if out is not None:
        df = save_cohort(df, out, source=df.attrs.get("source"))
    return df, report


def cohort_summary(df: pd.DataFrame) -> dict[str, Any]:
    """Counts for ``cohort info``: sizes, views, sex, race, splits, per-label value counts and prevalence."""
    def counts(col: str) -> dict[str, int]:
        if col not in df.columns:
            return {}
        v = df[col].astype(object).where(df[col].notna(), "(null)")
        return {str(k): int(n) for k, n in v.value_counts().sort_index().items()}

    labels = {}
    for c in label_columns(df):
        v = df[c].to_numpy(dtype=float)
        n_pos = int((v == 1).sum())
        labels[c] = {"pos": n_pos, "neg": int((v == 0).sum()), "uncertain": int((v == -1).sum()),
                     "blank": int(np.isnan(v).sum()), "prevalence": n_pos / len(v) if len(v) else float("nan")}
    age = df["age"].astype(float)
    return {
        "images": int(len(df)),
        "patients": int(df["patient_id"].nunique()),
        "studies": int(df["study_id"].nunique()) if "study_id" in df.columns else None,
        "datasets": counts("dataset"),
        "views": counts("view"),
        "frontal": int(df["frontal"].sum()),
        "sex": counts("sex"),
        "race": counts("race"),
        "split": counts("split"),
        "age": {"mean": float(age.mean()) if age.notna().any() else None,
                "min": float(age.min()) if age.notna().any() else None,
                "max": float(age.max()) if age.notna().any() else None, "missing": int(age.isna().sum())},
        "labels": labels,
        "images_root": df.attrs.get("images_root"),
        "notes": list(df.attrs.get("notes", [])),
    }
