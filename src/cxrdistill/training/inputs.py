"""Assemble training inputs from a run's files: cohort table → splits, targets, cached images, teacher embeddings.

The image fast path :class:`ImageBatches` gathers a batch of cached uint8 images by index and normalises it in one
tensor operation (no per-item Dataset + collate), like ``ArrayDataset`` for embeddings; augmentation uses the
``CxrDataset`` (DataLoader) path instead.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cxrdistill.cohorts.policies import build_targets
from cxrdistill.cohorts.schema import label_columns
from cxrdistill.errors import CxrError, InputError
from cxrdistill.images.cache import ImageCache, source_hash
from cxrdistill.images.preprocess import MEAN, STD


class ImageBatches:
    """Items ``{x: float32 (1,H,W), <name>: arrays[name][i]}`` for ``images[rows[i]]`` (uint8 (N,H,W), memmap ok).

    ``get_batch(idx)`` returns a whole batch at once; the trainer uses it instead of a DataLoader.
    """

    def __init__(self, images, rows=None, mean: float = MEAN, std: float = STD, **arrays: Any):
        import torch

        self.images = images
        self.rows = np.arange(len(images), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        self.mean, self.std = float(mean), float(std)
        self.arrays: dict[str, torch.Tensor] = {}
        for k, v in arrays.items():
            if v is None:
                continue
            t = v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))
            if t.dtype in (torch.float64, torch.float16):
                t = t.float()
            if t.shape[0] != len(self.rows):
                raise ValueError(f"array {k!r} has {t.shape[0]} rows, expected {len(self.rows)}")
            self.arrays[k] = t

    def __len__(self) -> int:
        return len(self.rows)

    def pixels(self, idx) -> "Any":
        import torch

        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        rows = self.rows[idx]
        if isinstance(self.images, np.memmap) and len(rows) > 1:  # read the memory map in file order
            order = np.argsort(rows, kind="stable")
            u8 = np.empty((len(rows), *self.images.shape[1:]), dtype=np.uint8)
            u8[order] = self.images[rows[order]]
        else:
            u8 = np.asarray(self.images[rows])
        x = torch.from_numpy(u8).unsqueeze(1).float()
        return x.mul_(1.0 / (255.0 * self.std)).sub_(self.mean / self.std)

    def get_batch(self, idx) -> dict:
        import torch

        idx_t = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        out = {"x": self.pixels(idx_t.numpy())}
        for k, v in self.arrays.items():
            out[k] = v[idx_t]
        return out

    def __getitem__(self, i: int) -> dict:
        b = self.get_batch([int(i)])
        return {k: v[0] for k, v in b.items()}

    def subset(self, idx) -> "ImageBatches":
        idx = np.asarray(idx, dtype=np.int64)
        return ImageBatches(self.images, self.rows[idx], self.mean, self.std,
                            **{k: v[idx] for k, v in self.arrays.items()})


# ---------------------------------------------------------------------------------------------------- cohort
def split_index(df, split: str, path=None, required: bool = True) -> np.ndarray:
    """Row positions of ``split`` (train/val/test); empty or missing is an error when ``required``."""
    if "split" not in df.columns:
        raise InputError("cohort has no split column", path=path, column="split",
                         hint="split it first: `cxrdistill cohort split`")
    idx = np.flatnonzero((df["split"].astype(str) == split).to_numpy())
    if required and len(idx) == 0:
        have = sorted(map(str, df["split"].dropna().unique()))
        raise InputError(f"no rows in split {split!r}", path=path, column="split",
                         hint=f"splits present: {', '.join(have) or 'none'}")
    return idx


def default_tasks(df, tasks: Sequence[str] | None = None, path=None) -> list[str]:
    """The requested tasks (checked), or every label column with at least one positive."""
    labels = label_columns(df)
    if tasks:
        for t in tasks:
            if t not in df.columns:
                raise InputError("no such label column in the cohort", path=path, column=t,
                                 hint=f"labels here: {', '.join(labels) or '(none)'}")
        return list(tasks)
    out = [c for c in labels if np.issubdtype(df[c].dtype, np.number) and (df[c] == 1).any()]
    if not out:
        raise InputError("cohort has no label column with a positive", path=path,
                         hint="give --tasks, or check the labels")
    return out


def targets(df, tasks: Sequence[str], policy="u-ignore", blank: str = "zero") -> np.ndarray:
    return build_targets(df, list(tasks), policy, blank=blank)


# ---------------------------------------------------------------------------------------------------- images
def default_cache_root() -> Path:
    return Path(os.environ.get("CXRDISTILL_CACHE", Path.home() / ".cache" / "cxrdistill")) / "images"


def image_cache(df, images_root: str | os.PathLike, size: int, cache_root: str | os.PathLike | None = None,
                mode: str = "resize", workers: int | None = None, progress: bool = True):
    """The uint8 cache of every image of ``df`` at ``size`` px, built once and shared by every stage and run
    (its directory is named by a hash of ids, paths, size and mode). ``workers``: decoding processes (default 2,
    or 1 for small cohorts, where starting processes costs more than it saves)."""
    if "path" not in df.columns:
        raise InputError("cohort has no path column", column="path", hint="image stages need image paths")
    h = source_hash(df["image_id"].astype(str).tolist(), df["path"].astype(str).tolist(), int(size), mode)
    root = Path(cache_root) if cache_root else default_cache_root()
    if workers is None:
        workers = 1 if len(df) < 2000 else 2
    return ImageCache.build(df, images_root, int(size), root / f"{int(size)}px-{mode}-{h[:16]}", mode=mode,
                            workers=workers, progress=progress)


# ---------------------------------------------------------------------------------------------------- embeddings
def check_finite(a: np.ndarray, what: str, path=None) -> None:
    bad = ~np.isfinite(np.asarray(a, dtype=np.float32).reshape(len(a), -1)).all(1)
    if bad.any():
        raise InputError(f"{int(bad.sum())} {what} contain NaN or inf (first at row {int(np.flatnonzero(bad)[0])})",
                         path=path, hint="re-extract them or drop those images")


def require(cond: bool, message: str) -> None:
    if not cond:
        raise CxrError(message)
