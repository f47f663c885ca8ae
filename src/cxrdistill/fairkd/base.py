"""What every fairness-aware distillation objective shares.

Each objective is a :class:`~cxrdistill.training.methods.distill.Distill` subclass — a drop-in replacement for plain
KD on the same :class:`~cxrdistill.training.methods.distill.DistillModel` and batches (``x`` image, ``t`` stored
teacher embedding, ``y`` labels, ``g`` group index of the sensitive attribute) — registered in :data:`FAIR_KD` under
its short name and in the training ``METHODS`` registry as ``fairkd_<name>``.

The group index is used in training only: the student stays an ordinary CxrNet whose forward takes ``x`` alone.
Objectives that act on scores (``fairdi``, ``mmd``) give the student a classification head on its (teacher-shaped)
embedding in :meth:`FairDistill.setup`; the head is saved with the student, and when the teacher targets are
standardised the export folds the standardisation into the head as well as into the projector.
"""
from __future__ import annotations

import types
from typing import Any

import numpy as np
import torch
from torch import nn

from cxrdistill.errors import CxrError
from cxrdistill.losses.classification import MaskedBCE
from cxrdistill.registry import Registry
from cxrdistill.training.method import family_register
from cxrdistill.training.methods.distill import Distill, DistillModel
from cxrdistill.training.methods.supervised import classification_metrics

FAIR_KD: Registry = Registry("fair distillation objective")


def register_objective(name: str):
    """Register a FairDistill class as ``name`` in FAIR_KD and as ``fairkd_<name>`` in the training METHODS."""

    return family_register(FAIR_KD, "fairkd", name)


def training_arrays(ds) -> dict[str, np.ndarray]:
    """The per-item arrays of a training set (``t``, ``y``, ``g`` where present) as numpy: ArrayDataset and
    ImageBatches (``.arrays``), CxrDataset (``teacher`` / ``targets`` / ``groups``), or a Subset of them."""
    out: dict[str, np.ndarray] = {}
    arrays = getattr(ds, "arrays", None)
    if isinstance(arrays, dict):
        for k in ("t", "y", "g"):
            if k in arrays:
                v = arrays[k]
                out[k] = v.cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
        return out
    for k, attr in (("t", "teacher"), ("y", "targets"), ("g", "groups")):
        v = getattr(ds, attr, None)
        if v is not None:
            out[k] = v.cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
    if isinstance(ds, torch.utils.data.Subset):
        inner = training_arrays(ds.dataset)
        idx = np.asarray(ds.indices)
        out = {k: v[idx] for k, v in inner.items()}
    return out


def pooled(e: torch.Tensor) -> torch.Tensor:
    return e.mean(1) if e.ndim == 3 else e


class FairDistill(Distill):
    """Base: group bookkeeping, the optional classification head, its masked-BCE term and validation metrics.

    Constructor: :class:`Distill`'s arguments, plus ``attribute`` (the sensitive attribute's name, for the record),
    ``n_groups`` (default: from the training data's ``g``) and ``cls_weight`` (weight of the head's BCE on the
    observed labels, for objectives with a head).
    """

    name = "base"
    #: whether the objective needs the student to output per-label logits
    needs_head = False

    def __init__(self, val_probe: bool = False, val_probe_folds: int = 3, val_probe_max: int = 3000,
                 monitor: str | None = None, *, attribute: str | None = None, n_groups: int | None = None,
                 cls_weight: float = 1.0):
        super().__init__(val_probe=val_probe, val_probe_folds=val_probe_folds, val_probe_max=val_probe_max,
                         monitor=monitor)
        if cls_weight < 0:
            raise CxrError(f"cls_weight must be ≥ 0, got {cls_weight}")
        self.attribute = attribute
        self.n_groups = n_groups
        self.cls_weight = float(cls_weight)
        self.group_counts: np.ndarray | None = None
        self.n_labels: int | None = None

    # ------------------------------------------------------------------ set-up
    def setup(self, model, trainer) -> None:
        arrays = training_arrays(trainer.train_data)
        g = arrays.get("g")
        if g is None:
            raise CxrError(f"fair distillation {self.name!r} needs the group of every training image: pass "
                           "--attribute A (the sensitive attribute, used in training only)")
        g = np.asarray(g, dtype=np.int64).reshape(-1)
        if g.size and g.min() < 0:
            raise CxrError(f"{int((g < 0).sum())} training image(s) have an unknown {self.attribute or 'attribute'}; "
                           "drop them from the cohort (or fill the column) before fair distillation")
        self.n_groups = int(self.n_groups or (int(g.max()) + 1 if g.size else 1))
        self.group_counts = np.bincount(g, minlength=self.n_groups)
        if self.needs_head:
            y = arrays.get("y")
            if y is None:
                raise CxrError(f"fair distillation {self.name!r} trains a classification head: the cohort needs "
                               "label columns (or --set tasks=[…])")
            self.n_labels = int(np.asarray(y).reshape(len(y), -1).shape[1])
            attach_head(model, self.n_labels)

    # ------------------------------------------------------------------ losses
    def cls_loss(self, logits: torch.Tensor, y: torch.Tensor, sample_weight=None) -> torch.Tensor:
        return MaskedBCE()(logits.float(), y.float(), sample_weight=sample_weight)

    def group_weights(self, g: torch.Tensor) -> torch.Tensor:
        """Per-sample weight N / (G · n_g): every group's total weight is equal (mean weight 1 over the train set)."""
        counts = torch.as_tensor(self.group_counts, dtype=torch.float32, device=g.device)
        n, k = counts.sum(), float((counts > 0).sum())
        return n / (k * counts[g].clamp_min(1.0))

    # ------------------------------------------------------------------ validation
    def validate(self, model, batches):
        """``val_kd_loss`` (as Distill), and with a head and labels: ``val_auc``, ``val_worst_auc``, ``val_auc_gap``."""
        total, n = 0.0, 0
        logits, ys, gs = [], [], []
        for b in batches:
            out = model(b["x"], t=b["t"])
            bs = int(b["x"].shape[0])
            total += float(out["kd_loss"]) * bs
            n += bs
            if "logits" in out and "y" in b:
                logits.append(out["logits"].float().cpu())
                ys.append(b["y"].float().cpu())
                if "g" in b:
                    gs.append(b["g"].cpu())
        res = {"val_kd_loss": total / max(n, 1)}
        if logits:
            sc = {"logits": torch.cat(logits).numpy(), "y": torch.cat(ys).numpy()}
            if gs:
                sc["g"] = torch.cat(gs).numpy()
            res.update(classification_metrics(sc))
        return res

    # ------------------------------------------------------------------ export
    def export_student(self, model) -> nn.Module:
        """The student with the target standardisation folded into its projector and its embedding head."""
        return export_with_head(model)


# ---------------------------------------------------------------------------------------------------- the head
def attach_head(model, n_labels: int) -> nn.Linear:
    """Give ``model.student`` (a CxrNet with a projector) a zero-initialised linear head on its embedding, unless it
    already has one of that size. Its ``config`` is updated so that ``save_model``/``load_model`` rebuild it."""
    st = model.student
    cfg = getattr(st, "config", None)
    if cfg is None or getattr(st, "projector", None) is None:
        raise CxrError("score-based fair distillation needs a CxrNet student with a projector (create_student)")
    width = int(np.prod(model.target_shape))
    head = getattr(st, "head", None)
    if isinstance(head, nn.Linear) and head.out_features == n_labels and head.in_features == width \
            and cfg.get("head_on") == "embedding":
        return head
    device = next(st.parameters()).device
    head = nn.Linear(width, n_labels).to(device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    st.head = head
    cfg["num_classes"] = int(n_labels)
    cfg["head_on"] = "embedding"
    # DistillModel.export_student folds the standardisation into the projector only; ours folds it into the head
    # too. Bound on this instance so that `cxrdistill distill` exports correctly with any method.
    model.export_student = types.MethodType(export_with_head, model)
    return head


def export_with_head(model) -> nn.Module:
    """Exported student whose embedding is in the teacher's units and whose head still gives the trained logits:
    with e_raw = σ·e + μ, the head on e becomes W' = W / σ, b' = b − W·(μ / σ)."""
    st = DistillModel.export_student(model)
    head = getattr(st, "head", None)
    if not getattr(model, "standardized", False) or head is None or st.config.get("head_on") != "embedding":
        return st
    mu = model.t_mean.reshape(-1).cpu().double()
    sd = model.t_std.reshape(-1).cpu().double()
    if mu.numel() != head.in_features:
        raise CxrError("cannot fold the target standardisation into the head: token-shaped targets with a head are "
                       "not supported")
    with torch.no_grad():
        W = head.weight.double()
        head.bias.copy_((head.bias.double() - W @ (mu / sd)).float())
        head.weight.copy_((W / sd[None, :]).float())
    return st


def init_head(model, W: np.ndarray, b: np.ndarray) -> None:
    """Set the student's head to a head ``(W, b)`` that acts on raw teacher embeddings, expressed in the student's
    (standardised) embedding units: W_e = W·σ, b_e = b + W·μ."""
    head = model.student.head
    W = torch.as_tensor(np.asarray(W, np.float64))
    b = torch.as_tensor(np.asarray(b, np.float64))
    mu = model.t_mean.reshape(-1).cpu().double()
    sd = model.t_std.reshape(-1).cpu().double()
    with torch.no_grad():
        head.weight.copy_((W * sd[None, :]).float())
        head.bias.copy_((b + W @ mu).float())


def logits_of_student(out: dict[str, Any]) -> torch.Tensor:
    if "logits" not in out:
        raise CxrError("the student has no classification head (the objective's setup was not run)")
    return out["logits"]
