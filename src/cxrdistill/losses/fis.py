"""Fair Identity Scaling (FIS; Luo et al. 2024, "FairVision: Equitable Deep Learning for Eye Disease Screening via
Fair Identity Scaling"): per-sample loss weights that mix an *individual* softmax of the losses with a *group* term
from the distance between each group's loss distribution and the pooled one.

Reference: Harvard-Ophthalmology-AI-Lab/FairVision, ``src/modules.py::Fair_Loss_Scaler`` (the training scripts
``scripts/train_*_fair_fis.py`` call it every step)::

    w_ind_i = A · softmax_i(ℓ_i / T)                              (softmax over the samples of the batch)
    d_g     = Sinkhorn_{p=2, blur}(losses of a sample of group g, losses of the pooled samples of all groups)
    w_grp_i = A · softmax_i(d_{g_i} / T)
    loss    = mean_i [((1 − c) · w_ind_i + c · w_grp_i) · ℓ_i]

with FairVision's command-line defaults c = 0.5 (``--fair_scaling_coef``), T = 1 (``--fair_scaling_temperature``),
A = 1 (``--fair_right_asymptote``), blur 0.1, and 64 fresh samples per group each step for the group distances.

Our choices (documented in ``docs/fairness.md``):

- **distance**: the losses are scalars, so optimal transport between them is exact in 1-D (sorted quantiles); we
  use ½·W₂² (what geomloss's p=2 Sinkhorn divergence tends to as blur → 0; its cost is |x − y|²/2) by default, or W₁,
  instead of depending on geomloss.
- **normalize** ``"batch"``: the weights are multiplied by N so that equal weights give exactly the plain mean loss
  (FairVision's mean of softmax-weighted losses is 1/N of that — same direction, a scale that depends on the batch
  size); ``"none"`` reproduces FairVision's scale.
- **detach_weights** ``True``: the weights are constants in the backward pass, as for any re-weighting method.
  FairVision's code leaves the individual softmax attached to the graph (``False`` reproduces it).
"""
from __future__ import annotations

from typing import Sequence

import torch

DISTANCES = ("sq_w2", "w1")


def wasserstein_1d(a: torch.Tensor, b: torch.Tensor, p: int = 1) -> torch.Tensor:
    """W_p^p between the empirical distributions of 1-D samples ``a`` and ``b`` (sizes may differ); exact.

    Both quantile functions are step functions; integrate |F_a⁻¹(u) − F_b⁻¹(u)|^p over the union of their steps.
    """
    a = torch.sort(a.reshape(-1).float()).values
    b = torch.sort(b.reshape(-1).float()).values
    n, m = a.numel(), b.numel()
    if n == 0 or m == 0:
        return torch.zeros((), device=a.device)
    levels = torch.cat([torch.arange(1, n + 1, device=a.device) / n, torch.arange(1, m + 1, device=a.device) / m])
    levels = torch.unique(torch.cat([torch.zeros(1, device=a.device), levels]).clamp(0, 1))
    du = levels[1:] - levels[:-1]
    mid = (levels[1:] + levels[:-1]) / 2
    qa = a[torch.clamp(torch.ceil(mid * n).long() - 1, 0, n - 1)]
    qb = b[torch.clamp(torch.ceil(mid * m).long() - 1, 0, m - 1)]
    return (du * (qa - qb).abs().pow(p)).sum()


class FISLoss:
    """``FISLoss()(per_sample_losses, groups, group_losses=None)`` → scalar loss (see the module docstring).

    ``groups``: int64 (N,) group index of every sample. ``group_losses``: optional list (one entry per group) of 1-D
    loss samples that describe each group's loss distribution (FairVision draws them afresh each step); when None,
    the batch's own (detached) losses of each group are used.
    """

    def __init__(self, coef: float = 0.5, temperature: float = 1.0, right_asymptote: float = 1.0,
                 distance: str = "sq_w2", normalize: str = "batch", detach_weights: bool = True):
        if not 0.0 <= coef <= 1.0:
            raise ValueError(f"FIS coef must be in [0, 1], got {coef}")
        if temperature <= 0:
            raise ValueError(f"FIS temperature must be > 0, got {temperature}")
        if distance not in DISTANCES:
            raise ValueError(f"FIS distance must be one of {DISTANCES}, got {distance!r}")
        if normalize not in ("batch", "none"):
            raise ValueError(f"FIS normalize must be 'batch' or 'none', got {normalize!r}")
        self.coef, self.temperature, self.right_asymptote = float(coef), float(temperature), float(right_asymptote)
        self.distance, self.normalize, self.detach_weights = distance, normalize, bool(detach_weights)

    def _dist(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.distance == "w1":
            return wasserstein_1d(a, b, p=1)
        return 0.5 * wasserstein_1d(a, b, p=2)

    def group_distances(self, group_losses: Sequence[torch.Tensor]) -> torch.Tensor:
        """d_g: distance of each group's loss sample to the pooled sample of all groups (0 for an empty group)."""
        samples = [s.detach().reshape(-1).float() for s in group_losses]
        nonempty = [s for s in samples if s.numel()]
        if not nonempty:
            return torch.zeros(len(samples))
        pooled = torch.cat(nonempty)
        return torch.stack([self._dist(s, pooled) if s.numel() else torch.zeros((), device=pooled.device)
                            for s in samples])

    def weights(self, losses: torch.Tensor, groups: torch.Tensor,
                group_losses: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Per-sample weights ((1 − c)·w_ind + c·w_grp); they sum to A·N (normalize="batch") or A ("none")."""
        losses = losses.reshape(-1)
        groups = groups.reshape(-1).long()
        n = losses.numel()
        if group_losses is None:
            n_groups = int(groups.max()) + 1 if n else 0
            group_losses = [losses.detach()[groups == k] for k in range(n_groups)]
        d = self.group_distances(group_losses).to(losses.device, losses.dtype)
        base = losses.detach() if self.detach_weights else losses
        w_ind = torch.softmax(base / self.temperature, dim=0)
        w_grp = torch.softmax(d[groups] / self.temperature, dim=0)
        w = ((1.0 - self.coef) * w_ind + self.coef * w_grp) * self.right_asymptote
        return w * n if self.normalize == "batch" else w

    def __call__(self, losses: torch.Tensor, groups: torch.Tensor,
                 group_losses: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        losses = losses.reshape(-1)
        if losses.numel() == 0:
            return losses.sum()
        return (self.weights(losses, groups, group_losses) * losses).mean()
