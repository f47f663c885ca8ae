"""Dataset helpers of the fairness methods: group indices of any dataset, subsets that keep the fast path, ordered
dict batches, group-balanced sampling weights and logits over a dataset."""
from __future__ import annotations

import numpy as np
import torch

from cxrdistill.training.methods.supervised import logits_of


def dataset_groups(ds) -> np.ndarray | None:
    """Group index (int64) of every item of an ArrayDataset (``g``), a CxrDataset (``groups``) or a Subset."""
    arrays = getattr(ds, "arrays", None)
    if isinstance(arrays, dict) and "g" in arrays:
        return arrays["g"].cpu().numpy().astype(np.int64)
    if getattr(ds, "groups", None) is not None:
        return np.asarray(ds.groups, dtype=np.int64)
    if isinstance(ds, torch.utils.data.Subset):
        g = dataset_groups(ds.dataset)
        return None if g is None else g[np.asarray(ds.indices)]
    return None


def subset_dataset(ds, idx):
    """The items ``idx`` of a dataset, keeping its fast path (ArrayDataset.subset, CxrDataset rows)."""
    idx = np.asarray(idx, dtype=np.int64)
    if hasattr(ds, "subset"):
        return ds.subset(torch.as_tensor(idx))
    if type(ds).__name__ == "CxrDataset":
        return type(ds)(ds.images, rows=ds.rows[idx],
                        targets=None if ds.targets is None else ds.targets[idx],
                        groups=None if ds.groups is None else ds.groups[idx],
                        teacher=None if ds.teacher is None else _take(ds.teacher, idx),
                        augment=ds.augment, mean=ds.mean, std=ds.std, seed=ds.seed)
    return torch.utils.data.Subset(ds, idx.tolist())


def _take(arr, idx):
    return arr[idx] if isinstance(arr, (np.ndarray, torch.Tensor)) else np.stack([arr[int(i)] for i in idx])


def gather(ds, idx) -> dict:
    """One dict batch of items ``idx`` (tensor indexing on the fast path, default_collate otherwise)."""
    if hasattr(ds, "get_batch"):
        return ds.get_batch(torch.as_tensor(np.asarray(idx, dtype=np.int64)))
    from torch.utils.data import default_collate

    return default_collate([ds[int(i)] for i in idx])


def iterate_batches(ds, batch_size: int = 256):
    """Dict batches of ``ds`` in order (CPU)."""
    n = len(ds)
    for s in range(0, n, batch_size):
        yield gather(ds, np.arange(s, min(n, s + batch_size)))


def balanced_weights(g: np.ndarray) -> torch.Tensor:
    """Sampling weight 1/n_g per item: every group is drawn equally often (in expectation)."""
    g = np.asarray(g, dtype=np.int64)
    counts = np.bincount(g)
    return torch.as_tensor(1.0 / counts[g], dtype=torch.double)


@torch.no_grad()
def predict_logits(model, ds, batch_size: int = 256, device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits of ``model`` over ``ds`` in order (eval mode, no grad), on the CPU."""
    was = model.training
    model.eval()
    outs = [logits_of(model(b["x"].to(device))).float().cpu() for b in iterate_batches(ds, batch_size)]
    model.train(was)
    return torch.cat(outs) if outs else torch.empty(0)
