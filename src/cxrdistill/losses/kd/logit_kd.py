"""Logit KD through a probe trained on the teacher's embeddings (Hinton et al. 2015, made multi-label).

The frozen probe maps both embeddings to per-label logits; the loss is τ² · mean over labels of the binary KL
divergence KL(σ(z_t/τ) ‖ σ(z_s/τ)) — the per-label binary form of softened-softmax KD used for multi-label tasks
(as in FairDi's per-label KD). The KL equals soft-target BCE minus the target entropy, so gradients are those of BCE
and the loss is 0 at s = t. Token embeddings are mean-pooled before the probe. The probe's weights are buffers (saved
with the run, never trained); give ``probe`` (an ``nn.Module`` D → K), or ``probe_weight``/``probe_bias`` tensors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cxrdistill.errors import CxrError
from cxrdistill.losses.kd.base import KD_LOSSES, KDLoss, pooled


def binary_kl(z_t: torch.Tensor, z_s: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(Bernoulli(σ(z_t)) ‖ Bernoulli(σ(z_s))), computed from logits with log-sigmoids (stable)."""
    p = torch.sigmoid(z_t)
    return p * (F.logsigmoid(z_t) - F.logsigmoid(z_s)) + (1 - p) * (F.logsigmoid(-z_t) - F.logsigmoid(-z_s))


@KD_LOSSES.register("logit_kd")
class LogitKD(KDLoss):
    def __init__(self, dim: int | None = None, num_labels: int = 14, temperature: float = 2.0, probe=None,
                 probe_weight: torch.Tensor | None = None, probe_bias: torch.Tensor | None = None, seed: int = 0):
        super().__init__(dim)
        self.temperature = float(temperature)
        if probe is not None:
            lin = _linear_of(probe)
            probe_weight, probe_bias = lin.weight.detach().clone(), lin.bias.detach().clone()
        if probe_weight is None:  # a fixed random probe: only for tests / when no labels are available
            if not dim:
                raise CxrError("logit_kd needs a probe trained on teacher embeddings (or dim= for a random one)")
            g = torch.Generator().manual_seed(seed)
            probe_weight = torch.randn(num_labels, int(dim), generator=g) / float(dim) ** 0.5
            probe_bias = torch.zeros(num_labels)
        self.register_buffer("probe_weight", torch.as_tensor(probe_weight, dtype=torch.float32))
        self.register_buffer("probe_bias", torch.as_tensor(probe_bias, dtype=torch.float32)
                             if probe_bias is not None else torch.zeros(self.probe_weight.shape[0]))

    def logits(self, e: torch.Tensor) -> torch.Tensor:
        return F.linear(pooled(e), self.probe_weight.to(e.dtype), self.probe_bias.to(e.dtype))

    def per_sample(self, s, t):
        tau = self.temperature
        with torch.no_grad():
            z_t = self.logits(t) / tau
        z_s = self.logits(s) / tau
        return tau ** 2 * binary_kl(z_t, z_s).mean(-1)


def _linear_of(probe):
    """The linear layer of a linear probe (an ``nn.Linear``, or a head wrapping exactly one; a head that
    standardises its input provides ``folded_linear()`` with the standardisation folded in)."""
    from torch import nn

    if hasattr(probe, "folded_linear"):
        return probe.folded_linear()
    if isinstance(probe, nn.Linear):
        return probe
    lins = [m for m in probe.modules() if isinstance(m, nn.Linear)]
    if len(lins) != 1:
        raise CxrError(f"logit_kd needs a linear probe; got a head with {len(lins)} linear layers")
    return lins[0]
