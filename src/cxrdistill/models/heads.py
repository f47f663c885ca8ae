"""Heads on frozen embeddings, by name (``HEADS``): ``linear``, ``mlp3`` (D→512→512→K) and ``mlp5``
(D→512→512→128→128→K), the CXR-Linear / CXR-MLP-3 / CXR-MLP-5 heads of Glocker et al. 2023 (ReLU, no dropout, as in
github.com/biomedia-mira/cxr-foundation-bias). Inputs are optionally standardised with per-dimension train-split
statistics stored in the head (buffers), so a saved head applies to raw embeddings; token embeddings (N, T, D) are
mean-pooled (``pool="mean"``) or flattened (``pool="flatten"``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cxrdistill.errors import CxrError, InputError
from cxrdistill.registry import Registry
from cxrdistill.storage.checkpoint import load_weights, save_weights

HEADS: Registry = Registry("head")

HIDDEN = {"linear": (), "mlp3": (512, 512), "mlp5": (512, 512, 128, 128)}


class HeadNet(nn.Module):
    """Standardise → (pool tokens) → MLP → logits (a tensor, so ``Supervised`` trains it as is)."""

    def __init__(self, in_dim: int, num_classes: int, hidden: tuple[int, ...] | list[int] = (), pool: str = "mean",
                 kind: str = "custom", dropout: float = 0.0):
        super().__init__()
        if pool not in ("mean", "flatten"):
            raise CxrError(f"unknown token pooling {pool!r}; choose mean or flatten")
        self.config = dict(in_dim=int(in_dim), num_classes=int(num_classes), hidden=[int(h) for h in hidden],
                           pool=pool, kind=kind, dropout=float(dropout))
        self.register_buffer("in_mean", torch.zeros(int(in_dim)))
        self.register_buffer("in_std", torch.ones(int(in_dim)))
        layers: list[nn.Module] = []
        d = int(in_dim)
        for h in hidden:
            layers += [nn.Linear(d, int(h)), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            d = int(h)
        layers.append(nn.Linear(d, int(num_classes)))
        self.net = nn.Sequential(*layers)

    def set_standardization(self, mean, std) -> None:
        """Per-dimension input mean and std (std ≤ 1e-6 → 1, so constant dimensions pass unscaled)."""
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.numel() != self.in_mean.numel():
            raise CxrError(f"standardisation has {mean.numel()} dims, the head expects {self.in_mean.numel()}")
        self.in_mean.copy_(mean)
        self.in_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def flatten_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x.mean(1) if self.config["pool"] == "mean" else x.reshape(x.shape[0], -1)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten_input(x)
        if x.shape[-1] != self.in_mean.numel():
            raise CxrError(f"head expects {self.in_mean.numel()}-d embeddings, got {x.shape[-1]}-d")
        return self.net((x - self.in_mean.to(x.dtype)) / self.in_std.to(x.dtype))

    def folded_linear(self) -> nn.Linear:
        """A linear head as one ``nn.Linear`` on raw inputs (standardisation folded in): W/σ, b − W μ/σ."""
        if self.config["hidden"]:
            raise CxrError(f"{self.config['kind']} is not a linear head")
        lin = self.net[-1]
        out = nn.Linear(lin.in_features, lin.out_features)
        with torch.no_grad():
            w = lin.weight / self.in_std[None, :]
            out.weight.copy_(w)
            out.bias.copy_(lin.bias - w @ self.in_mean)
        return out


def _make(kind: str):
    def factory(in_dim: int, num_classes: int, pool: str = "mean", dropout: float = 0.0) -> HeadNet:
        return HeadNet(in_dim, num_classes, HIDDEN[kind], pool=pool, kind=kind, dropout=dropout)

    factory.__doc__ = f"{kind}: hidden layers {HIDDEN[kind] or 'none'}"
    return factory


for _kind in HIDDEN:
    HEADS.register(_kind)(_make(_kind))


def head_input_dim(embed_shape, pool: str = "mean") -> int:
    """Width of the head's input for embeddings of shape (D,) or (T, D) / (…, D)."""
    import math

    shape = tuple(int(s) for s in embed_shape)
    return shape[-1] if (len(shape) == 1 or pool == "mean") else math.prod(shape)


def save_head(head: HeadNet, path: str | Path, **meta: Any) -> None:
    """Weights (safetensors) with the constructor arguments, so :func:`load_head` rebuilds it."""
    save_weights(head.state_dict(), path, {"head": head.config, **meta})


def load_head(path: str | Path) -> tuple[HeadNet, dict]:
    sd, meta = load_weights(path)
    if "head" not in meta:
        raise InputError("not a head saved by cxrdistill (no 'head' metadata)", path=path,
                         hint="give the head.safetensors written by `cxrdistill probe`")
    cfg = dict(meta["head"])
    head = HeadNet(cfg["in_dim"], cfg["num_classes"], cfg.get("hidden", ()), pool=cfg.get("pool", "mean"),
                   kind=cfg.get("kind", "custom"), dropout=cfg.get("dropout", 0.0))
    try:
        head.load_state_dict(sd)
    except RuntimeError as e:
        raise InputError(f"head weights do not fit its saved configuration ({str(e).splitlines()[0]})",
                         path=path) from None
    return head, meta
