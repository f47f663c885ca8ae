"""FIS (Fair Identity Scaling; Luo et al. 2024, FairVision): per-sample loss weights from an individual softmax of
the losses and a group term from each group's loss-distribution distance to the pooled one — see
:mod:`cxrdistill.losses.fis` for the formula, its source and our defaults.

As in FairVision's training scripts, every step draws ``group_batch_size`` fresh items of each group (64 by default)
and measures the current model's loss distribution on them without gradient; ``group_batch_size=0`` uses the batch's
own losses instead (cheaper, noisier for small groups).
"""
from __future__ import annotations

from cxrdistill.fairness.base import FairMethod, register_method
from cxrdistill.losses.fis import FISLoss


class FISMixin:
    """The FIS-weighted per-sample task loss, shared by the FIS method and FairDi's steps 0 and 2."""

    fis: FISLoss
    group_batch_size: int

    def fis_loss(self, logits, batch):
        losses = self.task.per_sample_loss(logits, batch["y"])
        ref = self.reference_losses(self.group_batch_size) if self.group_batch_size else None
        return self.fis(losses, batch["g"], ref)


@register_method("fis")
class FIS(FISMixin, FairMethod):
    """Train with the FIS-weighted loss."""

    def __init__(self, coef: float = 0.5, temperature: float = 1.0, right_asymptote: float = 1.0,
                 distance: str = "sq_w2", normalize: str = "batch", detach_weights: bool = True,
                 group_batch_size: int = 64, **kw):
        super().__init__(**kw)
        self.fis = FISLoss(coef=coef, temperature=temperature, right_asymptote=right_asymptote, distance=distance,
                           normalize=normalize, detach_weights=detach_weights)
        self.group_batch_size = int(group_batch_size)

    def training_step(self, model, batch):
        return self.fis_loss(self.forward(model, batch), batch), {}
