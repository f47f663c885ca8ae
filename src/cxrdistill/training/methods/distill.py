"""Feature distillation: the student sees the image, the loss compares its embedding with the teacher's embedding
``t`` stored for that image (the teacher is never run during training — it may be an API).

:class:`DistillModel` bundles the student, the KD loss and the teacher-target standardisation into one module, so
that learned loss weights and the contrastive memory bank are trained, synchronised under DDP and checkpointed (exact
resume) together with the student's weights. Fairness-aware objectives (``--fair``) subclass :class:`Distill`.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from cxrdistill.training.method import METHODS, Method


class DistillModel(nn.Module):
    """``forward(x, t=None, sample_weight=None)`` → the student's outputs, plus ``student`` (embedding shaped like
    the targets) and, when ``t`` is given, ``kd_loss`` against the standardised targets."""

    def __init__(self, student: nn.Module, kd: nn.Module, target_shape: tuple[int, ...] | list[int],
                 t_mean: Any = None, t_std: Any = None):
        super().__init__()
        self.student = student
        self.kd = kd
        self.target_shape = tuple(int(s) for s in target_shape)
        mean = torch.zeros(self.target_shape) if t_mean is None else torch.as_tensor(t_mean, dtype=torch.float32)
        std = torch.ones(self.target_shape) if t_std is None else torch.as_tensor(t_std, dtype=torch.float32)
        self.standardized = t_mean is not None or t_std is not None
        self.register_buffer("t_mean", mean.reshape(self.target_shape).clone())
        self.register_buffer("t_std", torch.where(std > 1e-6, std, torch.ones_like(std)).reshape(self.target_shape))

    def normalize_targets(self, t: torch.Tensor) -> torch.Tensor:
        return (t.to(self.t_mean.dtype) - self.t_mean) / self.t_std

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, sample_weight: torch.Tensor | None = None):
        out = self.student(x)
        out = dict(out) if isinstance(out, dict) else {"embedding": out}
        emb = out["embedding"]
        s = emb.reshape(emb.shape[0], *self.target_shape)
        out["student"] = s
        if t is not None:
            out["kd_loss"] = self.kd(s, self.normalize_targets(t), sample_weight)
        return out

    def export_student(self) -> nn.Module:
        """A copy of the student whose embedding is in the teacher's units: the target standardisation is folded
        into the projector's last linear layer (W' = σ·W, b' = σ·b + μ), so no extra step is needed at inference."""
        st = copy.deepcopy(self.student).cpu().eval()
        if not self.standardized:
            return st
        last = _last_linear(st)
        mu = self.t_mean.reshape(-1).cpu()
        sd = self.t_std.reshape(-1).cpu()
        with torch.no_grad():
            last.weight.mul_(sd[:, None])
            last.bias.mul_(sd).add_(mu)
        return st


def _last_linear(student: nn.Module) -> nn.Linear:
    proj = getattr(student, "projector", None)
    if proj is None:
        raise ValueError("the student has no projector to fold the target standardisation into")
    if isinstance(proj, nn.Linear):
        return proj
    return [m for m in proj.modules() if isinstance(m, nn.Linear)][-1]


def target_stats(t) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of teacher targets (N, *shape), computed in float64 in blocks (large N)."""
    import numpy as np

    n = t.shape[0]
    s1 = np.zeros(t.shape[1:], dtype=np.float64)
    s2 = np.zeros(t.shape[1:], dtype=np.float64)
    for a in range(0, n, 65536):
        blk = np.asarray(t[a:a + 65536], dtype=np.float64)
        s1 += blk.sum(0)
        s2 += (blk ** 2).sum(0)
    mean = s1 / max(n, 1)
    var = np.maximum(s2 / max(n, 1) - mean ** 2, 0.0)
    return torch.from_numpy(mean).float(), torch.from_numpy(np.sqrt(var)).float()


@METHODS.register("distill")
class Distill(Method):
    """KD on (image, teacher embedding) batches: the loss is the model's ``kd_loss``.

    Validation: the KD loss on the validation split (``val_kd_loss``, monitored) and, with ``val_probe=True`` and
    labels in the batches, ``val_probe_auc``: the mean AUC of a cross-validated logistic-regression probe on the
    student's validation embeddings — whether the embedding is useful, not only close to the teacher's.
    """

    monitor = "val_kd_loss"
    monitor_mode = "min"

    def __init__(self, val_probe: bool = False, val_probe_folds: int = 3, val_probe_max: int = 3000,
                 monitor: str | None = None):
        self.val_probe = bool(val_probe)
        self.val_probe_folds = int(val_probe_folds)
        self.val_probe_max = int(val_probe_max)
        if monitor:
            self.monitor = monitor
            self.monitor_mode = "min" if monitor.endswith("loss") else "max"

    def on_epoch_start(self, epoch: int, trainer) -> None:
        set_epoch = getattr(trainer.train_data, "set_epoch", None)
        if set_epoch is not None:  # a fresh augmentation stream each epoch (deterministic in (seed, epoch, item))
            set_epoch(epoch)

    def training_step(self, model, batch):
        out = model(batch["x"], t=batch["t"], sample_weight=batch.get("w"))
        return out["kd_loss"], {}

    def validate(self, model, batches):
        total, n = 0.0, 0
        embs, ys = [], []
        for b in batches:
            out = model(b["x"], t=b["t"])
            bs = int(b["x"].shape[0])
            total += float(out["kd_loss"]) * bs
            n += bs
            if self.val_probe and "y" in b and n <= self.val_probe_max:
                s = out["student"]
                embs.append((s.mean(1) if s.ndim == 3 else s).float().cpu())
                ys.append(b["y"].float().cpu())
        res = {"val_kd_loss": total / max(n, 1)}
        if embs:
            res["val_probe_auc"] = cv_probe_auc(torch.cat(embs).numpy(), torch.cat(ys).numpy(),
                                                folds=self.val_probe_folds)
        return res


def cv_probe_auc(X, Y, folds: int = 3, seed: int = 0) -> float:
    """Mean over tasks of the AUC of out-of-fold logistic-regression scores (tasks with < folds examples of a
    class are skipped); NaN when no task qualifies."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Y = np.asarray(Y, dtype=float).reshape(len(Y), -1)
    aucs = []
    for k in range(Y.shape[1]):
        ok = np.isfinite(Y[:, k])
        y = Y[ok, k].astype(int)
        if ok.sum() < 2 * folds or np.bincount(y, minlength=2).min() < folds:
            continue
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=200))
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        p = cross_val_predict(clf, X[ok], y, cv=cv, method="decision_function")
        aucs.append(roc_auc_score(y, p))
    return float(np.mean(aucs)) if aucs else math.nan
