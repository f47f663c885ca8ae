"""MSE + w · cosine distance with a fixed weight (the reference study's combined loss; w = 1 by default)."""
from __future__ import annotations

from cxrdistill.losses.kd.base import KD_LOSSES, KDLoss, per_sample_mean
from cxrdistill.losses.kd.cosine import cosine_distance


@KD_LOSSES.register("mse_cosine")
class MSECosine(KDLoss):
    hparams = {"weight": 1.0}

    def per_sample(self, s, t):
        return per_sample_mean((s - t) ** 2) + self.weight * cosine_distance(s, t)
