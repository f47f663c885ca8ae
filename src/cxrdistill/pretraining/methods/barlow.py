"""Barlow Twins self-supervised pretraining (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via
Redundancy Reduction"): two views of an image go through the backbone and a projector; the loss drives the
cross-correlation matrix C of the batch-standardised projector outputs towards the identity,

    L = Σ_i (1 − C_ii)² + λ Σ_i Σ_{j≠i} C_ij²,   C_ij = Σ_b z¹_bi z²_bj / N,   λ = 0.0051 (the paper's value),

where z¹, z² are standardised along the batch (as the paper's ``BatchNorm1d(affine=False)``: biased variance, ε =
1e-5). Views come from radiograph-suited augmentations (``images.augment`` ``barlow``) and, with the multi-instance
option (Azizi et al. 2021), the second view may be another image of the same patient or study.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from cxrdistill.errors import CxrError
from cxrdistill.training.method import METHODS, Method

#: the off-diagonal weight of the paper (for its 8192-d projector; kept as the default whatever the projector size)
LAMBDA = 0.0051


def standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(z − mean) / sqrt(var + eps) along the batch, biased variance — ``BatchNorm1d(affine=False)`` in training."""
    z = z.float()
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """C (D, D) between two batches of projector outputs (N, D), each standardised along the batch."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"views must be (N, D) of the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    return standardize(z1, eps).T @ standardize(z2, eps) / z1.shape[0]


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = LAMBDA, eps: float = 1e-5,
                      parts: bool = False):
    """Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²; with ``parts=True`` also returns (invariance, redundancy) terms."""
    c = cross_correlation(z1, z2, eps)
    diag = torch.diagonal(c)
    on = (1.0 - diag).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    loss = on + lambd * off
    return (loss, on, off) if parts else loss


def projector(in_dim: int, sizes: Sequence[int]) -> nn.Sequential:
    """The paper's projector: (Linear → BatchNorm → ReLU) for every size but the last, then a plain Linear."""
    sizes = [int(s) for s in sizes]
    if not sizes or min(sizes) < 1:
        raise CxrError(f"projector sizes must be positive integers, got {sizes}")
    layers: list[nn.Module] = []
    d = int(in_dim)
    for h in sizes[:-1]:
        layers += [nn.Linear(d, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
        d = h
    layers.append(nn.Linear(d, sizes[-1], bias=False))
    return nn.Sequential(*layers)


class BarlowNet(nn.Module):
    """A backbone network (``CxrNet``, its ``features``) plus the projector; only the backbone is kept afterwards."""

    def __init__(self, net: nn.Module, sizes: Sequence[int] = (512, 512)):
        super().__init__()
        self.net = net
        self.projector = projector(net.num_features, sizes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.net(x)["features"]
        return {"features": feats, "proj": self.projector(feats)}


@METHODS.register("barlow")
class BarlowTwins(Method):
    """Batches carry two views ``x`` and ``x2``; the loss is :func:`barlow_twins_loss` of their projections. Each
    view goes through the network separately, as in the paper, so batch-norm statistics are per view."""

    monitor = "val_loss"
    monitor_mode = "min"

    def __init__(self, lambd: float = LAMBDA, eps: float = 1e-5):
        if lambd < 0:
            raise CxrError(f"lambda must be ≥ 0, got {lambd}")
        self.lambd, self.eps = float(lambd), float(eps)

    def on_epoch_start(self, epoch: int, trainer) -> None:
        if hasattr(trainer.train_data, "set_epoch"):
            trainer.train_data.set_epoch(epoch)

    def training_step(self, model, batch):
        if batch["x"].shape[0] < 2:  # a batch of one has no batch statistics
            out = model(batch["x"])
            return out["proj"].sum() * 0.0, {}
        z1 = model(batch["x"])["proj"]
        z2 = model(batch["x2"])["proj"]
        loss, on, off = barlow_twins_loss(z1, z2, self.lambd, self.eps, parts=True)
        return loss, {"invariance": float(on.detach()), "redundancy": float(off.detach())}

    def validate(self, model, batches):
        total, n = 0.0, 0
        for b in batches:
            bs = int(b["x"].shape[0])
            if bs < 2:
                continue
            loss, _ = self.training_step(model, b)
            total += float(loss) * bs
            n += bs
        return {"val_loss": total / n} if n else {}
