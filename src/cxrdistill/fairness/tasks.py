"""What a fairness method is trained and scored on, by name (:data:`FAIR_TASKS`): ``cls`` (multi-label
classification: masked BCE, scored by AUC) here, ``seg`` (segmentation: BCE + soft Dice, scored by Dice) in
:mod:`cxrdistill.fairness.segmentation`. A task gives the mean and per-sample losses and the group-aware validation
scores (overall, worst group, gap, each group's)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cxrdistill.evaluation.quick import mean_auc, mean_group_aucs, task_aucs
from cxrdistill.losses.classification import MaskedBCE
from cxrdistill.registry import Registry
from cxrdistill.training.methods.supervised import collect_scores

FAIR_TASKS: Registry = Registry("fair-training task", plugins=("cxrdistill.fairness.segmentation",))


@FAIR_TASKS.register("cls")
class ClassificationTask:
    """Multi-label classification: masked BCE; scored by AUC (mean over tasks)."""

    metric = "auc"

    def __init__(self) -> None:
        self.bce = MaskedBCE()

    def mean_loss(self, logits, y):
        return self.bce(logits, y)

    def per_sample_loss(self, logits, y):
        """(B,) mean BCE over each sample's labelled tasks (0 for a sample without labels)."""
        return self.bce(logits, y, reduction="none")

    def evaluate(self, model, batches, n_groups: int) -> dict[str, Any]:
        """Loss, overall mean AUC, worst-group AUC and gap (mean over tasks), and each group's mean AUC."""
        sc = collect_scores(model, batches)
        s, y = sc["logits"], sc["y"]
        loss = float(self.bce(torch.from_numpy(s), torch.from_numpy(y))) if len(s) else float("nan")
        out: dict[str, Any] = {"loss": loss, "score": _nan(mean_auc(y, s)), "worst": float("nan"),
                               "gap": float("nan"), "groups": [float("nan")] * n_groups}
        if "g" in sc and len(s):
            g = sc["g"]
            worst, gap = mean_group_aucs(y, s, g)
            out["worst"], out["gap"] = _nan(worst), _nan(gap)
            for k in range(n_groups):
                aucs = [a for a in task_aucs(y[g == k], s[g == k]) if a is not None] if (g == k).any() else []
                out["groups"][k] = float(np.mean(aucs)) if aucs else float("nan")
        return out


def _nan(v) -> float:
    return float("nan") if v is None else float(v)
