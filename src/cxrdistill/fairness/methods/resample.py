"""Group-balanced resampling: draw training items with probability ∝ 1/n_g, so every group is seen equally often."""
from __future__ import annotations

from cxrdistill.fairness.base import FairMethod, register_method
from cxrdistill.fairness.datasets import balanced_weights, dataset_groups


@register_method("resample")
class Resample(FairMethod):
    """ERM's loss on group-balanced batches (sampling with replacement; epoch length unchanged)."""

    def sample_weights(self, dataset):
        g = dataset_groups(dataset)
        return None if g is None else balanced_weights(g)
