"""Classification losses for multi-label targets with NaN = ignore (label policy U-Ignore, unknown labels)."""
from __future__ import annotations

from cxrdistill.registry import Registry

CLS_LOSSES: Registry = Registry("classification loss")


@CLS_LOSSES.register("bce")
class MaskedBCE:
    """Binary cross-entropy per label, averaged over labelled entries; optional per-sample weights."""

    def __init__(self, pos_weight=None):
        self.pos_weight = pos_weight

    def __call__(self, logits, y, sample_weight=None, reduction: str = "mean"):
        import torch
        import torch.nn.functional as F

        mask = ~torch.isnan(y)
        target = torch.nan_to_num(y, nan=0.0)
        pw = None if self.pos_weight is None else torch.as_tensor(self.pos_weight, device=logits.device)
        per = F.binary_cross_entropy_with_logits(logits, target, reduction="none", pos_weight=pw)
        per = per * mask.to(per.dtype)
        if reduction == "none":  # per-sample loss (mean over that sample's labelled tasks)
            return per.sum(1) / mask.sum(1).clamp_min(1).to(per.dtype)
        if sample_weight is not None:
            per = per * sample_weight[:, None]
        return per.sum() / mask.sum().clamp_min(1).to(per.dtype)
