"""What a KD loss is: ``loss(s, t, sample_weight=None) -> scalar`` for student and teacher embeddings of equal shape,
(N, D) or token-shaped (N, T, D), as the weighted mean of a per-sample loss (so fairness methods can reweight)."""
from __future__ import annotations

import torch
from torch import nn

from cxrdistill.errors import CxrError
from cxrdistill.registry import Registry

KD_LOSSES: Registry = Registry("kd loss")

EPS = 1e-8


class KDLoss(nn.Module):
    """Base class: subclasses implement :meth:`per_sample` (N,) and may hold parameters or buffers (state_dict)."""

    #: the loss is exactly 0 when ``s == t`` (False for losses whose minimum depends on the batch, e.g. InfoNCE)
    zero_at_optimum: bool = True
    #: the loss's float hyperparameters with their defaults, set as attributes: ``hparams = {"delta": 1.0}`` makes
    #: ``Huber(delta=0.5).delta == 0.5`` without a constructor of its own
    hparams: dict[str, float] = {}

    def __init__(self, dim: int | None = None, **hparams: float):
        super().__init__()
        self.dim = dim
        unknown = [k for k in hparams if k not in self.hparams]
        if unknown:
            raise TypeError(f"{type(self).__name__} got an unexpected keyword argument {unknown[0]!r}; its options: "
                            f"{', '.join(self.hparams) or 'none'}")
        for k, default in self.hparams.items():
            setattr(self, k, float(hparams.get(k, default)))

    def per_sample(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, s: torch.Tensor, t: torch.Tensor, sample_weight: torch.Tensor | None = None) -> torch.Tensor:
        check_shapes(s, t)
        v = self.per_sample(s, t.to(s.dtype))
        if sample_weight is None:
            return v.mean()
        w = sample_weight.to(v.dtype).reshape(-1)
        return (v * w).sum() / w.sum().clamp_min(EPS)


def check_shapes(s: torch.Tensor, t: torch.Tensor) -> None:
    if s.shape != t.shape:
        raise CxrError(f"student embedding shape {tuple(s.shape)} differs from the teacher's {tuple(t.shape)}; "
                       f"the student's projector must map to the teacher's embedding shape")
    if s.ndim not in (2, 3):
        raise CxrError(f"embeddings must be (N, D) or (N, T, D), got shape {tuple(s.shape)}")


def flat(x: torch.Tensor) -> torch.Tensor:
    """(N, D) or (N, T, D) → (N, T·D): relational losses compare whole embeddings."""
    return x.reshape(x.shape[0], -1)


def pooled(x: torch.Tensor) -> torch.Tensor:
    """(N, T, D) → (N, D) by the mean over tokens; (N, D) unchanged."""
    return x.mean(1) if x.ndim == 3 else x


def per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over every axis but the first."""
    return x.reshape(x.shape[0], -1).mean(1)
