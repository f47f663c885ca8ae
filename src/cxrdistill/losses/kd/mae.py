"""Mean absolute error (L1) between student and teacher embeddings."""
from __future__ import annotations

from cxrdistill.losses.kd.base import KD_LOSSES, KDLoss, per_sample_mean


@KD_LOSSES.register("mae")
class MAE(KDLoss):
    def per_sample(self, s, t):
        return per_sample_mean((s - t).abs())
