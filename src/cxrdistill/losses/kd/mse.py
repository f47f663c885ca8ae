"""Mean squared error between student and teacher embeddings (the reference study's baseline KD loss)."""
from __future__ import annotations

from cxrdistill.losses.kd.base import KD_LOSSES, KDLoss, per_sample_mean


@KD_LOSSES.register("mse")
class MSE(KDLoss):
    def per_sample(self, s, t):
        return per_sample_mean((s - t) ** 2)
