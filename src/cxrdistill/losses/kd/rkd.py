"""Relational KD (Park, Kim, Lu & Cho, "Relational Knowledge Distillation", CVPR 2019): match the *structure* of a
batch — pairwise distances (RKD-D) and the angles of triplets (RKD-A) — rather than the embeddings themselves.

As the authors' code (github.com/lenscloth/RKD): distances are normalised by their batch mean, angles are cosines of
the angle at x_j between x_i and x_k, both compared with smooth-L1 (Huber δ = 1); weights λ_D = 1 and λ_A = 2 (paper).
Angles come from the Gram matrix (O(N³) scalars instead of an N×N×D tensor). Token embeddings are flattened.
Per-sample values are row means, so their mean is the batch loss. Zero when s = t; scale- and rotation-invariant,
so it is usually mixed with a feature loss (e.g. ``{mse: 1, rkd: 1}``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cxrdistill.losses.kd.base import EPS, KD_LOSSES, KDLoss, flat


def _gram(x: torch.Tensor) -> torch.Tensor:
    return x @ x.T


def _distances(g: torch.Tensor) -> torch.Tensor:
    sq = g.diagonal()
    d2 = (sq[:, None] + sq[None, :] - 2 * g).clamp_min(EPS)
    n = g.shape[0]
    return d2.sqrt() * (1 - torch.eye(n, dtype=g.dtype, device=g.device))


def _normalised_distances(x: torch.Tensor) -> torch.Tensor:
    d = _distances(_gram(x))
    n = x.shape[0]
    mean = d.sum() / max(n * (n - 1), 1)
    return d / mean.clamp_min(EPS)


def _angles(x: torch.Tensor) -> torch.Tensor:
    """A[j, i, k] = cos of the angle at x_j between x_i and x_k = <x_i − x_j, x_k − x_j> / (|x_i − x_j| |x_k − x_j|)."""
    g = _gram(x)
    d = _distances(g)  # d[i, j] = |x_i − x_j|
    gd = g.diagonal()
    # <x_i − x_j, x_k − x_j> = G_ik − G_ij − G_jk + G_jj, indexed [j, i, k]
    dots = g[None, :, :] - g.T[:, :, None] - g[:, None, :] + gd[:, None, None]
    norms = d.T[:, :, None] * d.T[:, None, :]  # [j, i, k] = d_ij d_kj
    return dots / norms.clamp_min(EPS)


@KD_LOSSES.register("rkd")
class RKD(KDLoss):
    hparams = {"distance_weight": 1.0, "angle_weight": 2.0}

    def per_sample(self, s, t):
        s, t = flat(s), flat(t)
        n = s.shape[0]
        if n < 2:  # no pair: nothing to match, but keep the graph connected
            return (s * 0).sum(1)
        # work in float64 for the Gram-matrix form: distances of large-magnitude embeddings cancel badly in fp32
        s64, t64 = s.double(), t.double()
        out = torch.zeros(n, dtype=torch.float64, device=s.device)
        if self.distance_weight:
            with torch.no_grad():
                td = _normalised_distances(t64)
            sd = _normalised_distances(s64)
            out = out + self.distance_weight * F.smooth_l1_loss(sd, td, reduction="none").sum(1) / (n - 1)
        if self.angle_weight and n >= 3:
            with torch.no_grad():
                ta = _angles(t64)
            sa = _angles(s64)
            # triplets with j as the vertex and i, k ≠ j; the diagonal terms are 0 in both and are left out
            mask = _triplet_mask(n, s.device)
            per = (F.smooth_l1_loss(sa, ta, reduction="none") * mask).sum((0, 2))
            out = out + self.angle_weight * per / mask.sum((0, 2)).clamp_min(1)
        return out.to(s.dtype)


def _triplet_mask(n: int, device) -> torch.Tensor:
    eye = torch.eye(n, dtype=torch.float64, device=device)
    # [j, i, k] valid when i ≠ j and k ≠ j
    return (1 - eye)[:, :, None] * (1 - eye)[:, None, :]
