"""Cosine distance 1 − cos(s, t), per embedding (per token for (N, T, D)): matches direction, not scale."""
from __future__ import annotations

import torch.nn.functional as F

from cxrdistill.losses.kd.base import EPS, KD_LOSSES, KDLoss, per_sample_mean


def cosine_distance(s, t):
    """(N,) mean over tokens of 1 − cos along the last axis; a zero vector has cosine 0 (distance 1) unless both
    are zero, which counts as a match."""
    cos = F.cosine_similarity(s, t, dim=-1, eps=EPS)
    both_zero = (s.abs().amax(-1) == 0) & (t.abs().amax(-1) == 0)
    cos = cos.masked_fill(both_zero, 1.0)
    return per_sample_mean((1.0 - cos).clamp_min(0.0))


@KD_LOSSES.register("cosine")
class Cosine(KDLoss):
    def per_sample(self, s, t):
        return cosine_distance(s, t)
