"""A weighted sum of KD losses, e.g. ``{"mse": 1.0, "rkd": 0.5}`` or ``"mse=1,rkd=0.5"`` (the "optional loss mix")."""
from __future__ import annotations

from torch import nn

from cxrdistill.losses.kd.base import KDLoss


class MixedKD(KDLoss):
    def __init__(self, parts: dict[str, KDLoss], weights: dict[str, float], dim: int | None = None):
        super().__init__(dim)
        self.parts = nn.ModuleDict(parts)
        self.weights = {k: float(weights[k]) for k in parts}
        self.zero_at_optimum = all(p.zero_at_optimum for p in parts.values())

    def per_sample(self, s, t):
        return sum(self.weights[k] * p.per_sample(s, t) for k, p in self.parts.items())
