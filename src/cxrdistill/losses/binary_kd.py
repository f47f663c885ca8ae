"""Per-label (or per-pixel) binary knowledge distillation with temperature, for multi-label and segmentation outputs.

Each output unit is an independent Bernoulli; the KD term is KL(Bern(σ(t/τ)) ‖ Bern(σ(s/τ))) per unit, averaged over
every unit of a sample — zero exactly when the student's logits equal the teacher's. The usual τ² factor (Hinton et
al. 2015) is left to the caller, which owns the mixing weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def binary_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Per-sample KD loss (B,): mean over all non-batch dims of the binary KL at temperature ``tau``."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} logits "
                         "differ in shape")
    s = student_logits.float() / tau
    t = teacher_logits.detach().float() / tau
    p = torch.sigmoid(t)
    # KL(p‖q) = CE(p, q) − H(p), both computed from logits for numerical stability
    kl = (F.binary_cross_entropy_with_logits(s, p, reduction="none")
          - F.binary_cross_entropy_with_logits(t, p, reduction="none"))
    return kl.reshape(kl.shape[0], -1).mean(1)
