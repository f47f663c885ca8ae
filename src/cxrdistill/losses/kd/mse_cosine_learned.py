"""MSE + cosine with learned weights: homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

Each term k gets a learned log-variance ``log_var[k]`` (σ_k² = exp(log_var_k)): L = Σ_k L_k / (2σ_k²) + log(1 + σ_k²).
The regulariser log(1 + σ²) is Liebel & Körner's (2018) positive variant of Kendall's log σ: it keeps the total
≥ 0 (Kendall's form goes to −∞ as a term reaches 0), so the loss is 0 at the optimum s = t with σ → 0.
"""
from __future__ import annotations

import torch
from torch import nn

from cxrdistill.losses.kd.base import KD_LOSSES, KDLoss, per_sample_mean
from cxrdistill.losses.kd.cosine import cosine_distance


@KD_LOSSES.register("mse_cosine_learned")
class MSECosineLearned(KDLoss):
    zero_at_optimum = False  # at s = t the loss is the regulariser Σ log(1 + σ²), which → 0 only as σ → 0

    def __init__(self, dim: int | None = None, init_log_var: float = 0.0):
        super().__init__(dim)
        self.log_var = nn.Parameter(torch.full((2,), float(init_log_var)))

    def weights(self) -> torch.Tensor:
        """Current effective weights 1 / (2σ_k²) of (mse, cosine)."""
        return 0.5 * torch.exp(-self._lv())

    def _lv(self) -> torch.Tensor:
        return self.log_var.clamp(-10.0, 10.0)  # keeps exp() finite whatever the optimiser does

    def per_sample(self, s, t):
        w = self.weights().to(s.dtype)
        reg = torch.log1p(torch.exp(self._lv())).sum().to(s.dtype)
        # the regulariser is a per-batch constant: adding it to every sample adds it once to the (weighted) mean
        return w[0] * per_sample_mean((s - t) ** 2) + w[1] * cosine_distance(s, t) + reg

