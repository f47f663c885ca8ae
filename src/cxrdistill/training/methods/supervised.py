"""Supervised multi-label training (heads on frozen embeddings, fine-tuning): the ERM baseline of every study."""
from __future__ import annotations

from typing import Any

from cxrdistill.evaluation.quick import mean_auc, mean_group_aucs
from cxrdistill.losses.classification import CLS_LOSSES
from cxrdistill.training.method import METHODS, Method


def logits_of(out):
    """Models return logits, or a dict with ``logits`` (and maybe ``embedding``)."""
    return out["logits"] if isinstance(out, dict) else out


def collect_scores(model, batches, fn=None) -> dict[str, Any]:
    """Run ``model`` over batches; return numpy logits, targets and groups (when present) for metrics."""
    import numpy as np
    import torch

    logits, ys, gs = [], [], []
    for b in batches:
        out = fn(model, b) if fn else logits_of(model(b["x"]))
        logits.append(out.float().cpu())
        if "y" in b:
            ys.append(b["y"].float().cpu())
        if "g" in b:
            gs.append(b["g"].cpu())
    res = {"logits": torch.cat(logits).numpy() if logits else np.zeros((0, 0))}
    if ys:
        res["y"] = torch.cat(ys).numpy()
    if gs:
        res["g"] = torch.cat(gs).numpy()
    return res


def classification_metrics(scores: dict[str, Any]) -> dict[str, float]:
    """Mean AUC over tasks with both classes; with groups, the mean worst-group AUC and mean AUC gap as well."""
    import numpy as np

    y, s = scores["y"], scores["logits"]
    out = {"val_auc": mean_auc(y, s)}
    if "g" in scores:
        worst, gap = mean_group_aucs(y, s, scores["g"])
        out["val_worst_auc"], out["val_auc_gap"] = worst, gap
    return {k: (float(v) if v is not None else float(np.nan)) for k, v in out.items()}


@METHODS.register("classify")
class Supervised(Method):
    """Multi-label classification with a masked loss (BCE by default, AUC-margin when registered); ``classify`` in
    ``METHODS`` (``supervised`` names the in-domain pretraining recipe of ``PRETRAINERS``)."""

    monitor = "val_auc"
    monitor_mode = "max"

    def __init__(self, loss: str = "bce", loss_kwargs: dict | None = None, monitor: str | None = None):
        self.loss_name = loss
        self.loss = CLS_LOSSES.create(loss, **(loss_kwargs or {}))
        if monitor:
            self.monitor = monitor
            self.monitor_mode = "min" if monitor.endswith("loss") or monitor.endswith("gap") else "max"

    def training_step(self, model, batch):
        logits = logits_of(model(batch["x"]))
        return self.loss(logits, batch["y"]), {}

    def validate(self, model, batches):
        import torch

        sc = collect_scores(model, batches)
        y = torch.from_numpy(sc["y"])
        out = {"val_loss": float(self.loss(torch.from_numpy(sc["logits"]), y))}
        out.update(classification_metrics(sc))
        return out
