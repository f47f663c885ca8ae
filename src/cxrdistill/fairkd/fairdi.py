"""FairDi on top of a black-box teacher (Masroor et al. 2024, arXiv 2411.11939), for distillation.

The teacher is only seen through its stored embeddings, so FairDi's "one teacher per group" becomes one linear head
per group on the teacher's embeddings, fitted before the student is trained (:func:`~cxrdistill.fairkd.heads.
fit_group_heads`): a pooled head on every training image (FairDi's step 0), then per group a head started from the
pooled one and fitted on that group's images, shrunk toward the pooled head (step 1). The student — a CxrNet with a
head on its teacher-shaped embedding, the head initialised from the pooled teacher head — is then trained with
feature KD plus FairDi's step-2 objective, reused from :class:`cxrdistill.fairness.methods.fairdi.FairDi`::

    L = KD_feat(student embedding, teacher embedding)
        + logit_weight · [λ τ² · KD_bin(teacher_head_{g_i}(t_i), head(student(x_i)))
                          + (1 − λ) · FIS(BCE(head, y))]

KD_bin is the per-label binary KL at temperature τ; each image is taught by its own group's head (``assignment``
``own``; ``mean`` = the average of all heads). Defaults λ = 0.95, τ = 1.5 (as the fairness method FairDi). Images without any label (an
unlabelled distillation pool) get the logit KD only — the group heads teach them too. The FIS weights use the
batch's own per-group losses (``group_batch_size=0``; FairVision's fresh per-group samples cost a forward pass of
64 images per group per step on images — set ``group_batch_size=64`` to use them). ``student_fis=False`` uses plain
BCE.
"""
from __future__ import annotations

import numpy as np
import torch

from cxrdistill.errors import CxrError
from cxrdistill.fairkd.base import FairDistill, init_head, logits_of_student, register_objective, training_arrays
from cxrdistill.fairkd.heads import fit_group_heads, linear_modules
from cxrdistill.fairness.methods.fairdi import FairDi
from cxrdistill.losses.binary_kd import binary_kd


@register_objective("fairdi")
class FairDiKD(FairDistill):
    """Feature KD + FairDi's per-group logit KD from heads fitted on the teacher's embeddings."""

    needs_head = True

    def __init__(self, *args, lam: float = 0.95, tau: float = 1.5, logit_weight: float = 1.0,
                 assignment: str = "own", student_fis: bool = True, head_l2: float = 1e-2, group_l2: float = 5e-2,
                 min_group_size: int = 8, head_init: str = "pooled", group_batch_size: int = 0,
                 fis_coef: float = 0.5, fis_temperature: float = 1.0, **kw):
        super().__init__(*args, **kw)
        if head_init not in ("pooled", "zero"):
            raise CxrError(f"fairdi head_init must be 'pooled' or 'zero', got {head_init!r}")
        if logit_weight < 0:
            raise CxrError(f"fairdi logit_weight must be ≥ 0, got {logit_weight}")
        self.lam, self.tau, self.logit_weight = float(lam), float(tau), float(logit_weight)
        self.assignment, self.student_fis = assignment, bool(student_fis)
        self.head_l2, self.group_l2, self.min_group_size = float(head_l2), float(group_l2), int(min_group_size)
        self.head_init, self.group_batch_size = head_init, int(group_batch_size)
        self.fis_coef, self.fis_temperature = float(fis_coef), float(fis_temperature)
        self.inner = None
        self.head_notes: list[dict] = []

    def setup(self, model, trainer) -> None:
        super().setup(model, trainer)
        arrays = training_arrays(trainer.train_data)
        if "t" not in arrays:
            raise CxrError("fairdi needs the stored teacher embeddings (t) in the training data")
        T, Y, g = arrays["t"], arrays["y"], arrays["g"].reshape(-1)
        pooled_head, heads, self.head_notes = fit_group_heads(
            T, Y, g, self.n_groups, l2=self.head_l2, group_l2=self.group_l2, min_group_size=self.min_group_size)
        self.inner = FairDi(lam=self.lam, tau=self.tau, assignment=self.assignment, student_fis=self.student_fis,
                            teacher_input="t", group_batch_size=self.group_batch_size, teachers=linear_modules(heads),
                            coef=self.fis_coef, temperature=self.fis_temperature, n_groups=self.n_groups)
        self.inner.setup(model, trainer)  # moves and freezes the group heads; FIS bookkeeping
        if self.head_init == "pooled":
            init_head(model, *pooled_head)

    def training_step(self, model, batch):
        out = model(batch["x"], t=batch["t"], sample_weight=batch.get("w"))
        z = logits_of_student(out).float()
        labelled = ~torch.isnan(batch["y"]).all(1)
        if bool(labelled.all()):
            obj, logs = self.inner.objective(z, self.inner.teacher_logits(batch), batch)
        else:  # unlabelled images (a distillation pool) get the logit KD only; FIS/BCE sees the labelled ones
            kd = binary_kd(z, self.inner.teacher_logits(batch), self.tau).mean()
            task = z.sum() * 0.0
            if bool(labelled.any()):
                sub = {k: v[labelled] for k, v in batch.items() if hasattr(v, "shape") and v.shape[:1] == z.shape[:1]}
                task = (self.inner.fis_loss(z[labelled], sub) if self.student_fis else
                        self.inner.task.mean_loss(z[labelled], sub["y"]))
            obj = self.lam * self.tau ** 2 * kd + (1.0 - self.lam) * task
            logs = {"kd": float(kd.detach()), "task": float(task.detach())}
        return out["kd_loss"] + self.logit_weight * obj, logs

    def teacher_head_logits(self, t) -> np.ndarray:
        """Logits of every group's head on teacher embeddings ``t`` → (G, N, K) (for inspection and tests)."""
        import copy

        with torch.no_grad():
            tt = torch.as_tensor(np.asarray(t, np.float32))
            return np.stack([copy.deepcopy(h).cpu()(tt).numpy() for h in self.inner.teachers])
