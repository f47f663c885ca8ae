"""A torch Dataset over cached uint8 images plus aligned per-item arrays (targets, groups, teacher embeddings)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cxrdistill.images.augment import build_augment
from cxrdistill.images.preprocess import MEAN, STD


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1, dtype=np.uint64)[0]
               & 0x7FFF_FFFF_FFFF_FFFF)


class CxrDataset(torch.utils.data.Dataset):
    """Item ``i`` is image ``images[rows[i]]`` with ``targets[i]``, ``groups[i]``, ``teacher[i]``.

    ``images``: an ``ImageCache``, a (N, H, W) uint8 array or ``np.memmap``. ``rows``: cache rows of the items
    (``cache.index_of(cohort.image_id)``); default all. ``targets`` (len(rows), K) float with NaN = unknown;
    ``groups`` (len(rows),) int; ``teacher`` (len(rows), D) or (len(rows), T, D) — any indexable array, e.g.
    ``store.get(ids)``. Pixels become ``(u8 / 255 - mean) / std``. ``augment``: None, a name from
    ``images.augment.AUGMENTS`` (``light``, ``ssl``), a dict ``{"name": ..., **params}`` or a callable
    ``(x, generator) -> x``. ``two_views=True`` adds ``x2``, a second independent augmentation (Barlow Twins).
    Augmentation randomness depends only on ``(seed, epoch, i)`` — call ``set_epoch`` every epoch.

    Items: ``{"x": float32 (1,H,W), "x2"?, "y": float32 (K,), "g": int64, "t": float32 (D,)|(T,D), "idx": int64 i}``
    (keys present only when their input is given). Picklable for DataLoader workers: an ``ImageCache`` or
    ``np.memmap`` is reopened in each worker instead of being copied.
    """

    def __init__(self, images: Any, rows: np.ndarray | None = None, targets: Any = None, groups: Any = None,
                 teacher: Any = None, augment: Any = None, mean: float = MEAN, std: float = STD, *,
                 two_views: bool = False, seed: int = 0):
        self.images = images
        n_images = len(images)
        self.rows = np.arange(n_images, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        if self.rows.ndim != 1:
            raise ValueError(f"rows must be 1-D, got shape {self.rows.shape}")
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= n_images):
            raise IndexError(f"rows out of range for {n_images} images")
        n = len(self.rows)
        for name, arr in (("targets", targets), ("groups", groups), ("teacher", teacher)):
            if arr is not None and len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} rows but there are {n} items (align it with rows)")
        self.targets = None if targets is None else np.asarray(targets, dtype=np.float32).reshape(n, -1)
        self.groups = None if groups is None else np.asarray(groups, dtype=np.int64).reshape(n)
        self.teacher = teacher
        self.augment = build_augment(augment)
        self.mean, self.std = float(mean), float(std)
        if self.std <= 0:
            raise ValueError("std must be > 0")
        self.two_views = bool(two_views)
        if self.two_views and self.augment is None:
            raise ValueError("two_views=True needs an augmentation (e.g. augment='ssl')")
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the augmentation stream of this epoch (same seed + epoch + item → same pixels)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def _pixels(self, r: int) -> torch.Tensor:
        img = np.asarray(self.images[r], dtype=np.float32)  # copies out of the memory map
        if img.ndim != 2:
            raise ValueError(f"images must be (N, H, W); item has shape {img.shape}")
        return torch.from_numpy(img).div_(255.0).unsqueeze(0)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return x.sub_(self.mean).div_(self.std) if x.is_contiguous() else (x - self.mean) / self.std

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        i = int(i)
        if i < 0:
            i += len(self)
        base = self._pixels(int(self.rows[i]))
        out: dict[str, torch.Tensor] = {}
        if self.augment is not None:
            g = torch.Generator().manual_seed(_seed(self.seed, self.epoch, i, 0))
            out["x"] = self._norm(self.augment(base.clone() if self.two_views else base, g).contiguous())
            if self.two_views:
                g2 = torch.Generator().manual_seed(_seed(self.seed, self.epoch, i, 1))
                out["x2"] = self._norm(self.augment(base, g2).contiguous())
        else:
            out["x"] = self._norm(base)
        if self.targets is not None:
            out["y"] = torch.from_numpy(self.targets[i].copy())
        if self.groups is not None:
            out["g"] = torch.tensor(self.groups[i], dtype=torch.int64)
        if self.teacher is not None:
            out["t"] = torch.from_numpy(np.array(self.teacher[i], dtype=np.float32))
        out["idx"] = torch.tensor(i, dtype=torch.int64)
        return out

    def __getstate__(self) -> dict:
        d = self.__dict__.copy()
        for k in ("images", "teacher"):
            if isinstance(d[k], np.memmap):  # reopened from its file in the worker, not pickled by value
                m = d[k]
                d[k] = _MemmapRef(str(m.filename), m.dtype.str, tuple(m.shape), int(m.offset))
        return d

    def __setstate__(self, d: dict) -> None:
        for k in ("images", "teacher"):
            if isinstance(d.get(k), _MemmapRef):
                d[k] = d[k].open()
        self.__dict__.update(d)


class _MemmapRef:
    """What is needed to reopen a read-only ``np.memmap`` in another process."""

    def __init__(self, filename: str, dtype: str, shape: tuple, offset: int):
        self.filename, self.dtype, self.shape, self.offset = filename, dtype, shape, offset

    def open(self) -> np.memmap:
        return np.memmap(self.filename, dtype=np.dtype(self.dtype), mode="r", shape=self.shape, offset=self.offset)
