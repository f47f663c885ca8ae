"""Pathology fine-tuning with optional auxiliary heads (the pretraining study's fine-tunes): :class:`AuxNet` adds a
linear view / sex / age head to a classifier, and the registered method ``finetune_aux`` trains both."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from cxrdistill.losses.classification import CLS_LOSSES
from cxrdistill.pretraining.methods.supervised_meta import check_tasks, meta_loss
from cxrdistill.training.method import METHODS, Method
from cxrdistill.training.methods.supervised import classification_metrics


class AuxNet(nn.Module):
    """A classifier (``CxrNet`` with a pathology head) plus a linear auxiliary head on the same pooled features."""

    def __init__(self, net: nn.Module, n_aux: int):
        super().__init__()
        self.net = net
        self.aux_head = nn.Linear(net.num_features, int(n_aux))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = dict(self.net(x))
        out["aux"] = self.aux_head(out["features"])
        return out


@METHODS.register("finetune_aux")
class FinetuneAux(Method):
    """Masked multi-label BCE on ``logits`` (+ ``aux_weight`` × the view/sex/age loss on ``aux`` against batch
    ``m``). Logs ``task_loss`` and ``aux_loss`` separately; validation: ``val_loss`` (the pathology loss only, so it
    compares with and without auxiliary heads), ``val_auc``, ``val_aux_loss``."""

    monitor = "val_auc"
    monitor_mode = "max"

    def __init__(self, aux_tasks: Sequence[str] = (), aux_weight: float = 0.0, loss: str = "bce",
                 monitor: str | None = None):
        self.aux_tasks = check_tasks(aux_tasks) if aux_tasks else []
        self.aux_weight = float(aux_weight)
        self.loss = CLS_LOSSES.create(loss)
        if monitor:
            self.monitor = monitor
            self.monitor_mode = "min" if monitor.endswith("loss") else "max"

    def on_epoch_start(self, epoch: int, trainer) -> None:
        if hasattr(trainer.train_data, "set_epoch"):
            trainer.train_data.set_epoch(epoch)

    def _losses(self, out, batch):
        task = self.loss(out["logits"], batch["y"])
        if not self.aux_tasks or "aux" not in out:
            return task, task, None
        aux, _ = meta_loss(out["aux"], batch["m"], self.aux_tasks)
        return task + self.aux_weight * aux, task, aux

    def training_step(self, model, batch):
        total, task, aux = self._losses(model(batch["x"]), batch)
        logs = {"task_loss": float(task.detach())}
        if aux is not None:
            logs["aux_loss"] = float(aux.detach())
        return total, logs

    def validate(self, model, batches) -> dict[str, float]:
        logits, ys, tot_aux, n = [], [], 0.0, 0
        for b in batches:
            out = model(b["x"])
            logits.append(out["logits"].float().cpu())
            ys.append(b["y"].float().cpu())
            _, _, aux = self._losses(out, b)
            if aux is not None:
                tot_aux += float(aux) * int(b["x"].shape[0])
                n += int(b["x"].shape[0])
        if not logits:
            return {}
        L, Y = torch.cat(logits), torch.cat(ys)
        res = {"val_loss": float(self.loss(L, Y))}
        res.update(classification_metrics({"logits": L.numpy(), "y": Y.numpy()}))
        if n:
            res["val_aux_loss"] = tot_aux / n
        return res
