"""Check that a cohort's image files exist and are non-empty (a fast ``stat`` of every file), and that a seeded
sample of them opens as an image (header only: PIL, or pydicom for DICOM). Missing or unreadable files are reported
(count + first few paths) and either fatal or dropped."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxrdistill.errors import InputError

MISSING_MODES = ("error", "drop")
_SHOW = 5


@dataclass
class ImageCheckReport:
    """What the check found. ``problems`` maps relative path → reason, in table order."""

    root: str
    n_checked: int = 0
    n_opened: int = 0
    n_missing: int = 0
    n_empty: int = 0
    n_unreadable: int = 0
    n_dropped: int = 0
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def n_bad(self) -> int:
        return self.n_missing + self.n_empty + self.n_unreadable

    def summary(self) -> str:
        if not self.n_bad:
            return f"images: all {self.n_checked} files present ({self.n_opened} opened) under {self.root}"
        first = "; ".join(f"{p} ({why})" for p, why in list(self.problems.items())[:_SHOW])
        more = f" and {self.n_bad - _SHOW} more" if self.n_bad > _SHOW else ""
        return (f"{self.n_bad} of {self.n_checked} image files are missing, empty or unreadable under {self.root} "
                f"({self.n_missing} missing, {self.n_empty} empty, {self.n_unreadable} unreadable): {first}{more}")


def _open_header(path: Path) -> str | None:
    """None when the file's header reads as an image; else a short reason."""
    try:
        if path.suffix.lower() in (".dcm", ".dicom"):
            import pydicom

            pydicom.dcmread(path, stop_before_pixels=True)
            return None
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
        return None if w > 0 and h > 0 else "zero size"
    except Exception as e:  # any decoder failure means "not an image we can read"
        return f"not an image: {type(e).__name__}"


def check_images(df: pd.DataFrame, images_root: str | os.PathLike, *, missing: str = "error", sample: int = 32,
                 seed: int = 0) -> tuple[pd.DataFrame, ImageCheckReport]:
    """Stat every ``root/path``; open ``sample`` of them (all when ``sample < 0``).

    ``missing="error"`` raises one ``InputError`` listing the first few bad paths; ``"drop"`` removes those rows
    (an empty result is still an error). Returns the (possibly reduced) table and the report.
    """
    if missing not in MISSING_MODES:
        raise InputError(f"unknown --missing mode {missing!r}", hint="use 'error' or 'drop'")
    root = Path(images_root)
    if not root.is_dir():
        raise InputError("images root is not a directory", path=root,
                         hint="pass --images-root DIR (the folder the cohort's paths are relative to), "
                              "or --no-image-check")
    rep = ImageCheckReport(root=str(root), n_checked=len(df))
    paths = df["path"].astype(str).tolist()
    bad = np.zeros(len(paths), dtype=bool)
    for i, rel in enumerate(paths):
        try:
            st = os.stat(root / rel)
        except OSError:
            bad[i] = True
            rep.n_missing += 1
            rep.problems[rel] = "missing"
            continue
        if st.st_size == 0:
            bad[i] = True
            rep.n_empty += 1
            rep.problems[rel] = "empty"
    ok_idx = np.flatnonzero(~bad)
    if sample != 0 and len(ok_idx):
        pick = ok_idx if sample < 0 or sample >= len(ok_idx) else \
            np.sort(np.random.default_rng(seed).choice(ok_idx, size=sample, replace=False))
        for i in pick:
            why = _open_header(root / paths[i])
            rep.n_opened += 1
            if why:
                bad[i] = True
                rep.n_unreadable += 1
                rep.problems[paths[i]] = why
    if not rep.n_bad:
        return df, rep
    if missing == "error":
        raise InputError(rep.summary(), hint="fix the files or --images-root, or pass --on-error skip to leave "
                                             "them out (--no-image-check skips the check)")
    rep.n_dropped = int(bad.sum())
    out = df[~bad].reset_index(drop=True)
    out.attrs.update(df.attrs)
    if len(out) == 0:
        raise InputError(f"no usable images remain: {rep.summary()}", path=root,
                         hint="check --images-root: cohort paths are relative to it")
    return out, rep


def guess_images_root(csv: str | os.PathLike, df: pd.DataFrame) -> Path:
    """Default images root: the csv's folder, or its parent when the paths start with the csv's folder name
    (CheXpert's ``CheXpert-v1.0-small/train/...`` paths next to ``CheXpert-v1.0-small/train.csv``)."""
    here = Path(csv).resolve().parent
    first = str(df["path"].iloc[0]) if len(df) else ""
    if "/" in first and first.split("/", 1)[0] == here.name and not (here / first).exists():
        return here.parent
    return here
