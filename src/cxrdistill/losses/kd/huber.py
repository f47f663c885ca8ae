"""Huber loss: quadratic within ``delta`` of the target, linear beyond (robust to outlying embedding dimensions)."""
from __future__ import annotations

import torch.nn.functional as F

from cxrdistill.losses.kd.base import KD_LOSSES, KDLoss, per_sample_mean


@KD_LOSSES.register("huber")
class Huber(KDLoss):
    hparams = {"delta": 1.0}

    def per_sample(self, s, t):
        return per_sample_mean(F.huber_loss(s, t, reduction="none", delta=self.delta))
