"""Group-balanced distillation: every group's teacher signal counts equally.

``mode="sample"`` (default) draws training images with probability ∝ 1 / n_g (with replacement, epoch length
unchanged — the same sampler as the ``resample`` fairness baseline); ``mode="reweight"`` keeps the plain shuffle and
weights each image's KD loss by N / (G · n_g) instead (same expectation, no repeated minority images, noisier
gradients for the majority).
"""
from __future__ import annotations

from cxrdistill.errors import CxrError
from cxrdistill.fairkd.base import FairDistill, register_objective, training_arrays
from cxrdistill.fairness.datasets import balanced_weights

MODES = ("sample", "reweight")


@register_objective("balanced")
class BalancedKD(FairDistill):
    """Plain KD on group-balanced batches (or with group-balancing loss weights)."""

    def __init__(self, *args, mode: str = "sample", **kw):
        super().__init__(*args, **kw)
        if mode not in MODES:
            raise CxrError(f"balanced mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode

    def sample_weights(self, dataset):
        if self.mode != "sample":
            return None

        g = training_arrays(dataset).get("g")
        return None if g is None else balanced_weights(g.reshape(-1))

    def training_step(self, model, batch):
        w = self.group_weights(batch["g"]) if self.mode == "reweight" else batch.get("w")
        out = model(batch["x"], t=batch["t"], sample_weight=w)
        return out["kd_loss"], {}
