"""Image inputs of the pretraining stages: a cohort table plus its pixels (an ``ImageCache`` or a uint8 array aligned
with the table), split rows, positive pairs for multi-instance self-supervision, and extra per-item arrays."""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from cxrdistill.errors import InputError
from cxrdistill.images.augment import build_augment
from cxrdistill.images.preprocess import MEAN, STD


def cohort_fingerprint(df, pixels, rows) -> str:
    """A short hash of the image ids and pixel array shape (identifies a run's inputs for resume checks)."""
    h = hashlib.sha256()
    h.update("\n".join(df["image_id"].astype(str)).encode("utf-8"))
    h.update(repr((tuple(pixels.shape), int(len(rows)))).encode())
    return h.hexdigest()[:16]


def resolve_images(images: Any, df) -> tuple[Any, np.ndarray]:
    """``(pixels (M, H, W) uint8, rows)`` where ``pixels[rows[i]]`` is the image of ``df`` row ``i``.

    ``images``: an :class:`~cxrdistill.images.cache.ImageCache` (rows looked up by ``image_id``) or an array of
    ``len(df)`` images in the table's order (e.g. from ``cxrdistill.synth.render_batch``).
    """
    if hasattr(images, "index_of") and hasattr(images, "array"):
        return images.array, np.asarray(images.index_of(df["image_id"].astype(str).tolist()), dtype=np.int64)
    arr = np.asarray(images) if not isinstance(images, np.memmap) else images
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise InputError(f"images must be uint8 (N, H, W), got {arr.dtype} {tuple(arr.shape)}",
                         hint="pass an ImageCache or the uint8 array from synth.render_batch")
    if len(arr) != len(df):
        raise InputError(f"{len(arr)} images for {len(df)} cohort rows",
                         hint="the image array must hold one image per cohort row, in the table's order")
    if arr.shape[1] != arr.shape[2]:
        raise InputError(f"images must be square, got {arr.shape[1]}x{arr.shape[2]}")
    return arr, np.arange(len(df), dtype=np.int64)


def image_size(pixels) -> int:
    return int(pixels.shape[-1])


def split_rows(df, split: str) -> np.ndarray:
    """Table positions of ``split`` (empty when the table has no ``split`` column or no such rows)."""
    if "split" not in df.columns:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero((df["split"].astype(str) == split).to_numpy())


def train_val_rows(df) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation positions; a table without splits trains on every row (no validation)."""
    tr = split_rows(df, "train")
    if len(tr) == 0:
        if "split" in df.columns and df["split"].notna().any():
            raise InputError("no rows in split 'train'", column="split",
                             hint="split the cohort (`cxrdistill cohort split`) or drop the split column")
        return np.arange(len(df), dtype=np.int64), np.zeros(0, dtype=np.int64)
    return tr, split_rows(df, "val")


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1, dtype=np.uint64)[0]
               & 0x7FFF_FFFF_FFFF_FFFF)


def partner_groups(keys) -> list[np.ndarray]:
    """For every item, the positions of the *other* items with the same key (patient or study); NaN/None keys get
    no partners."""
    import pandas as pd

    s = pd.Series(list(keys), dtype=object)
    out: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(s)
    ok = s.notna()
    for _, idx in s[ok].groupby(s[ok].astype(str)).groups.items():
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) < 2:
            continue
        for i in idx:
            out[i] = idx[idx != i]
    return out


class PairDataset:
    """Two augmented views per item, ``x`` and ``x2`` (Barlow Twins). With ``partners`` (multi-instance, Azizi et
    al. 2021), ``x2`` is another image of the same patient or study when there is one — chosen afresh each epoch,
    deterministically in (seed, epoch, item) — else a second augmentation of the same image."""

    def __init__(self, pixels, rows, augment, partners: list[np.ndarray] | None = None, seed: int = 0,
                 mean: float = MEAN, std: float = STD):
        self.pixels = pixels
        self.rows = np.asarray(rows, dtype=np.int64)
        self.augment = build_augment(augment)
        if self.augment is None:
            raise InputError("Barlow Twins needs an augmentation", hint="e.g. augment: barlow")
        if partners is not None and len(partners) != len(self.rows):
            raise ValueError("partners must have one entry per item")
        self.partners = partners
        self.seed, self.epoch = int(seed), 0
        self.mean, self.std = float(mean), float(std)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def partner(self, i: int) -> int:
        """The item whose image is ``i``'s second view this epoch (``i`` itself without a partner)."""
        if not self.partners or len(self.partners[i]) == 0:
            return i
        rng = np.random.default_rng(_seed(self.seed, self.epoch, i, 2))
        return int(self.partners[i][rng.integers(len(self.partners[i]))])

    def _view(self, j: int, i: int, k: int):
        import torch

        x = torch.from_numpy(np.asarray(self.pixels[int(self.rows[j])], dtype=np.float32) / 255.0).unsqueeze(0)
        g = torch.Generator().manual_seed(_seed(self.seed, self.epoch, i, k))
        return (self.augment(x, g) - self.mean) / self.std

    def __getitem__(self, i: int) -> dict:
        import torch

        i = int(i)
        return {"x": self._view(i, i, 0), "x2": self._view(self.partner(i), i, 1),
                "idx": torch.tensor(i, dtype=torch.int64)}


class WithArrays:
    """A map-style dataset plus aligned per-item arrays added to every item (e.g. auxiliary targets ``m``)."""

    def __init__(self, base, **arrays: Any):
        self.base = base
        self.arrays = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items() if v is not None}
        for k, v in self.arrays.items():
            if len(v) != len(base):
                raise ValueError(f"array {k!r} has {len(v)} rows, the dataset {len(base)}")

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        import torch

        item = dict(self.base[i])
        for k, v in self.arrays.items():
            item[k] = torch.from_numpy(v[int(i)].copy())
        return item
