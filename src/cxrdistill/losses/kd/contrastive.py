"""Contrastive KD (InfoNCE; CRD, Tian, Krishnan & Isola, ICLR 2020): each student embedding must pick out its own
teacher embedding among negatives — the other teacher embeddings of the batch and a memory bank of earlier ones.

Embeddings are L2-normalised (token embeddings mean-pooled first); logits are cosine similarities / τ. The bank is a
FIFO of ``bank_size`` detached teacher embeddings, updated in training mode only; it lives in buffers, so it is part
of ``state_dict`` and an interrupted run resumes with the same bank. A bank entry identical to a teacher embedding of
the batch (the same image, stored in an earlier epoch) is masked out: it is never a false negative for its own
anchor, nor a doubled negative for the others.
Unlike CRD we use no learned critic heads (student and teacher share the space the projector maps to). The minimum
depends on the negatives, so the loss is not 0 at s = t, only lowest there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cxrdistill.errors import CxrError
from cxrdistill.losses.kd.base import EPS, KD_LOSSES, KDLoss, pooled

SAME = 1.0 - 1e-6  # cosine above which a bank entry is taken for the anchor's own teacher embedding


@KD_LOSSES.register("contrastive")
class Contrastive(KDLoss):
    zero_at_optimum = False

    def __init__(self, dim: int | None = None, temperature: float = 0.07, bank_size: int = 4096):
        super().__init__(dim)
        if not dim:
            raise CxrError("the contrastive KD loss needs the teacher's embedding width (dim=D) for its memory bank")
        self.temperature = float(temperature)
        self.bank_size = int(bank_size)
        self.register_buffer("bank", torch.zeros(self.bank_size, int(dim)))
        self.register_buffer("bank_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("bank_count", torch.zeros((), dtype=torch.long))

    def per_sample(self, s, t):
        s = F.normalize(pooled(s), dim=-1, eps=EPS)
        t = F.normalize(pooled(t), dim=-1, eps=EPS).detach()
        if s.shape[1] != self.bank.shape[1]:
            raise CxrError(f"contrastive KD built for width {self.bank.shape[1]}, got embeddings of width {s.shape[1]}")
        n = s.shape[0]
        bank = self.bank[: int(self.bank_count)].to(s.dtype)
        logits = s @ torch.cat([t, bank]).T / self.temperature  # (n, n + m): own teacher at column i
        if bank.shape[0]:  # drop bank entries that repeat a teacher embedding of this batch (an earlier epoch's copy)
            dup = ((t @ bank.T) >= SAME).any(0)
            logits[:, n:] = logits[:, n:].masked_fill(dup[None, :], float("-inf"))
        loss = F.cross_entropy(logits, torch.arange(n, device=s.device), reduction="none")
        if self.training and self.bank_size:
            self._enqueue(t)
        return loss

    @torch.no_grad()
    def _enqueue(self, t: torch.Tensor) -> None:
        t = t[-self.bank_size:]
        k = t.shape[0]
        idx = (self.bank_ptr + torch.arange(k, device=t.device)) % self.bank_size
        self.bank[idx] = t.to(self.bank.dtype)
        self.bank_ptr.copy_((self.bank_ptr + k) % self.bank_size)
        self.bank_count.copy_(torch.clamp(self.bank_count + k, max=self.bank_size))
