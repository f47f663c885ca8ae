"""AUC-margin loss (AUC-M, Deep AUC Maximization; Yuan, Yan, Sonka & Yang, ICCV 2021), per label, registered as
``"aucm"`` in ``CLS_LOSSES`` (``Supervised(loss="aucm")``, ``--loss aucm``).

The objective is LibAUC's ``AUCMLoss`` (version ``v1``; libauc/losses/auc.py), on σ(logits), for each label k::

    F(a, b, α) = (1−p) E[(h−a)² 1{y=1}] + p E[(h−b)² 1{y=0}]
                 + 2α (p(1−p) m + E[p h 1{y=0} − (1−p) h 1{y=1}]) − p(1−p) α²

minimised over the model and (a, b), maximised over α ≥ 0, with p the positive fraction. LibAUC solves the min-max
with its PESG optimiser, keeping a, b, α as extra variables. Here they take their exact per-batch optimum —
a = mean score of positives, b = of negatives, α = max(0, m + b − a) — so
F = p(1−p)[Var(h|y=1) + Var(h|y=0) + (m − E[h|y=1] + E[h|y=0])₊²], the square-hinge AUC surrogate of the paper;
by Danskin's theorem its gradient is LibAUC's partial gradient at that saddle point, so any optimiser (AdamW…) can
train it. NaN labels are ignored (LibAUC has no missing labels); a label with one class in the batch contributes 0.
LibAUC's ``MultiLabelAUCMLoss`` (v1) averages the per-label objectives likewise (it omits the margin there, i.e.
uses m = 1; we keep ``margin``). Sample weights weight each row's term (a, b, α stay unweighted).
"""
from __future__ import annotations

from cxrdistill.losses.classification import CLS_LOSSES


def aucm_objective(h, y, a, b, alpha, p, margin: float = 1.0):
    """LibAUC's AUCM v1 objective per row (N, K) for scores ``h`` in [0, 1], labels ``y`` in {0, 1} (NaN = skip),
    and per-label a, b, α, p (K,); the mean over a label's labelled rows is LibAUC's value for that label."""
    pos = (y == 1).to(h.dtype)
    neg = (y == 0).to(h.dtype)
    return ((1 - p) * (h - a) ** 2 * pos + p * (h - b) ** 2 * neg
            + 2 * alpha * (p * (1 - p) * margin + p * h * neg - (1 - p) * h * pos)
            - p * (1 - p) * alpha ** 2) * (pos + neg)


@CLS_LOSSES.register("aucm")
class AUCMLoss:
    """Multi-label AUC-margin loss on logits, same call signature as ``MaskedBCE``."""

    def __init__(self, margin: float = 1.0, imratio=None):
        self.margin = float(margin)
        self.imratio = imratio

    def saddle_point(self, h, y):
        """Per-label (a, b, α, p) at the batch optimum (detached)."""
        import torch

        with torch.no_grad():
            pos = (y == 1).to(h.dtype)
            neg = (y == 0).to(h.dtype)
            n_pos, n_neg = pos.sum(0), neg.sum(0)
            a = (h * pos).sum(0) / n_pos.clamp_min(1)
            b = (h * neg).sum(0) / n_neg.clamp_min(1)
            if self.imratio is None:
                p = n_pos / (n_pos + n_neg).clamp_min(1)
            else:
                p = torch.as_tensor(self.imratio, dtype=h.dtype, device=h.device).expand(h.shape[1])
            alpha = (self.margin + b - a).clamp_min(0)
            one_class = (n_pos == 0) | (n_neg == 0)
            alpha = alpha.masked_fill(one_class, 0.0)
        return a, b, alpha, p

    def __call__(self, logits, y, sample_weight=None, reduction: str = "mean"):
        import torch

        h = torch.sigmoid(logits)
        a, b, alpha, p = self.saddle_point(h, y)
        per = aucm_objective(h, y, a, b, alpha, p, self.margin)  # (N, K), 0 where unlabelled
        mask = (~torch.isnan(y)).to(per.dtype)
        if reduction == "none":  # per-sample: mean over the row's labelled tasks
            return per.sum(1) / mask.sum(1).clamp_min(1)
        w = mask if sample_weight is None else mask * sample_weight.to(per.dtype)[:, None]
        per_label = (per * w).sum(0) / w.sum(0).clamp_min(1e-12)
        has = mask.sum(0) > 0
        return per_label[has].mean() if bool(has.any()) else (per * 0).sum()
