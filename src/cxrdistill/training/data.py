"""In-memory datasets for the fast path (frozen embeddings): batches are gathered by tensor indexing, no collate."""
from __future__ import annotations

from typing import Any


class ArrayDataset:
    """Named aligned arrays (``x``, ``y``, ``g``, ``t`` …) of equal length; ``get_batch(idx)`` returns a dict batch."""

    def __init__(self, **arrays: Any):
        import numpy as np
        import torch

        if not arrays:
            raise ValueError("ArrayDataset needs at least one array")
        self.arrays: dict[str, torch.Tensor] = {}
        n = None
        for k, v in arrays.items():
            if v is None:
                continue
            t = v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))
            if t.dtype == torch.float64:
                t = t.float()
            if n is None:
                n = t.shape[0]
            elif t.shape[0] != n:
                raise ValueError(f"array {k!r} has {t.shape[0]} rows, expected {n}")
            self.arrays[k] = t
        self.n = int(n or 0)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.arrays.items()}

    def get_batch(self, idx) -> dict:
        return {k: v[idx] for k, v in self.arrays.items()}

    def subset(self, idx) -> "ArrayDataset":
        return ArrayDataset(**{k: v[idx] for k, v in self.arrays.items()})
