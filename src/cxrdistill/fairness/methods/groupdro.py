"""GroupDRO (Sagawa et al., ICLR 2020, "Distributionally Robust Neural Networks for Group Shifts").

Online exponentiated-gradient ascent on the group weights q (reference: kohpangwei/group_DRO ``loss.py``,
``LossComputer.compute_robust_loss``), every step::

    ℓ_g ← mean loss of group g in the batch (0 when absent)
    q_g ← q_g · exp(η · (ℓ_g + C / √n_g)),   q ← q / Σ q          (n_g: training-set size of group g)
    loss = Σ_g q_g ℓ_g

Defaults as in the reference code: η = 0.01 (``--robust_step_size``), C = 0 (``--generalization_adjustment``),
q starts uniform; batches are group-balanced (the paper's reweighted sampling). q is part of the method state, so a
resumed run continues with the same weights. Under torchrun the group losses that move q are summed over every
rank's batch (one all-reduce of 2 × groups numbers per step), so that all ranks keep the same q.
"""
from __future__ import annotations

import torch

from cxrdistill.fairness.base import FairMethod, register_method
from cxrdistill.fairness.datasets import balanced_weights, dataset_groups
from cxrdistill.training.distributed import all_reduce_sum


@register_method("groupdro")
class GroupDRO(FairMethod):
    """Minimise the q-weighted group losses while q moves toward the groups with the highest loss."""

    def __init__(self, step_size: float = 0.01, adjustment: float = 0.0, balanced_sampling: bool = True, **kw):
        super().__init__(**kw)
        if step_size < 0 or adjustment < 0:
            raise ValueError("GroupDRO step_size and adjustment must be ≥ 0")
        self.step_size, self.adjustment, self.balanced_sampling = float(step_size), float(adjustment), \
            bool(balanced_sampling)
        self.q: torch.Tensor | None = None

    def setup(self, model, trainer) -> None:
        super().setup(model, trainer)
        if self.q is None or self.q.numel() != self.n_groups:
            self.q = torch.full((self.n_groups,), 1.0 / self.n_groups, dtype=torch.float64)

    def sample_weights(self, dataset):
        if not self.balanced_sampling:
            return None
        g = dataset_groups(dataset)
        return None if g is None else balanced_weights(g)

    def group_sums(self, losses: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """(2, groups): the summed per-sample loss and the number of samples of each group in the batch."""
        onehot = (g.reshape(1, -1) == torch.arange(self.n_groups, device=g.device).reshape(-1, 1)).to(losses.dtype)
        return torch.stack([onehot @ losses, onehot.sum(1)])

    def group_losses(self, losses: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Mean per-sample loss of each group in the batch (0 for a group without samples)."""
        s = self.group_sums(losses, g)
        return s[0] / s[1].clamp_min(1.0)

    def update_q(self, group_loss: torch.Tensor) -> None:
        counts = torch.as_tensor(self.group_counts if self.group_counts is not None else [1] * self.n_groups,
                                 dtype=torch.float64).clamp_min(1.0)
        adjusted = group_loss.detach().double().cpu() + self.adjustment / counts.sqrt()
        q = self.q * torch.exp(self.step_size * adjusted)
        self.q = q / q.sum()

    def training_step(self, model, batch):
        logits = self.forward(model, batch)
        losses = self.task.per_sample_loss(logits, batch["y"])
        gl = self.group_losses(losses, batch["g"])
        if torch.is_grad_enabled():  # training, not a no-grad evaluation pass
            s = all_reduce_sum(self.group_sums(losses.detach(), batch["g"]))  # every rank's batch
            self.update_q(s[0] / s[1].clamp_min(1.0))
        loss = (self.q.to(gl.device, gl.dtype) * gl).sum()
        return loss, {f"q{k}": float(v) for k, v in enumerate(self.q)}

    def state_dict(self):
        return {**super().state_dict(), "q": self.q.clone() if self.q is not None else None}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if state.get("q") is not None:
            self.q = state["q"].clone().double()
