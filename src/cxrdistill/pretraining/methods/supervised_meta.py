"""In-domain supervised pretraining on image metadata (Awatramani et al., §4.1/§4.3): predict the view (frontal vs lateral,
AP vs PA) and the patient's sex with binary cross-entropy and the age with a smooth L1 loss — each target masked where
it is unknown (a lateral image has no AP/PA; a missing sex or age is not a label). The same targets serve as the
auxiliary heads of fine-tuning (``pretraining.finetune``)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cxrdistill.errors import CxrError
from cxrdistill.evaluation.quick import task_aucs
from cxrdistill.training.method import METHODS, Method

#: meta targets, in output order: frontal (1) vs lateral (0), AP (1) vs PA (0), male (1) vs female (0), age (z-score)
META_TASKS = ("frontal", "ap_pa", "sex", "age")
BINARY = ("frontal", "ap_pa", "sex")


def check_tasks(tasks: Sequence[str]) -> list[str]:
    tasks = list(tasks)
    bad = [t for t in tasks if t not in META_TASKS]
    if bad or not tasks or len(set(tasks)) != len(tasks):
        raise CxrError(f"meta tasks must be distinct names from {', '.join(META_TASKS)}; got {tasks}")
    return tasks


def age_stats(df) -> dict[str, float]:
    """Mean and standard deviation (floored at 1 year) of the known ages — the age target's standardisation."""
    if "age" not in df.columns:
        return {"age_mean": 0.0, "age_std": 1.0}
    a = pd.to_numeric(df["age"], errors="coerce").to_numpy(dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"age_mean": 0.0, "age_std": 1.0}
    return {"age_mean": float(a.mean()), "age_std": float(max(a.std(), 1.0))}


def _upper(col) -> np.ndarray:
    return np.asarray([str(v).strip().upper() if v is not None and v == v else None for v in col.to_numpy(dtype=object)],
                      dtype=object)


def meta_targets(df, tasks: Sequence[str] = META_TASKS, stats: dict[str, float] | None = None) -> np.ndarray:
    """float32 (N, len(tasks)) targets from the cohort columns ``frontal``/``view``, ``sex``, ``age``; NaN = unknown.

    ``frontal`` comes from the ``frontal`` column (or the view: LATERAL → 0, AP/PA → 1); ``ap_pa`` is 1 for AP, 0 for
    PA and unknown for laterals; ``sex`` is 1 for M, 0 for F; ``age`` is standardised with ``stats`` (default: this
    table's own mean and std).
    """
    tasks = check_tasks(tasks)
    n = len(df)
    view = _upper(df["view"]) if "view" in df.columns else np.full(n, None, dtype=object)
    cols: dict[str, np.ndarray] = {}
    fr = np.full(n, np.nan)
    if "frontal" in df.columns:
        raw = df["frontal"].to_numpy(dtype=object)
        for i, v in enumerate(raw):
            if v is not None and v == v:
                fr[i] = 1.0 if bool(v) else 0.0
    fr = np.where(np.isnan(fr) & (view == "LATERAL"), 0.0, fr)
    fr = np.where(np.isnan(fr) & np.isin(view, ["AP", "PA"]), 1.0, fr)
    cols["frontal"] = fr
    cols["ap_pa"] = np.where(view == "AP", 1.0, np.where(view == "PA", 0.0, np.nan))
    sex = _upper(df["sex"]) if "sex" in df.columns else np.full(n, None, dtype=object)
    cols["sex"] = np.where(sex == "M", 1.0, np.where(sex == "F", 0.0, np.nan))
    st = stats or age_stats(df)
    age = (pd.to_numeric(df["age"], errors="coerce").to_numpy(dtype=np.float64) if "age" in df.columns
           else np.full(n, np.nan))
    cols["age"] = np.where(np.isfinite(age), (age - st["age_mean"]) / st["age_std"], np.nan)
    return np.stack([cols[t] for t in tasks], axis=1).astype(np.float32)


def meta_loss(out: torch.Tensor, target: torch.Tensor, tasks: Sequence[str] = META_TASKS,
              weights: dict[str, float] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Σ_task w_task · loss_task, each averaged over the rows where that target is known (a task with no known
    target in the batch adds 0). BCE-with-logits for the binary tasks, smooth L1 (β = 1, on the age z-score) for age."""
    weights = weights or {}
    total = out.sum() * 0.0  # keeps the graph (and the device) when nothing is known
    logs: dict[str, float] = {}
    for k, t in enumerate(tasks):
        known = ~torch.isnan(target[:, k])
        if not bool(known.any()):
            continue
        o, y = out[known, k].float(), target[known, k].float()
        part = F.smooth_l1_loss(o, y) if t == "age" else F.binary_cross_entropy_with_logits(o, y)
        total = total + float(weights.get(t, 1.0)) * part
        logs[f"{t}_loss"] = float(part.detach())
    return total, logs


def meta_metrics(out: np.ndarray, target: np.ndarray, tasks: Sequence[str], prefix: str = "val_",
                 age_std: float | None = None) -> dict[str, float]:
    """AUC of each binary meta task and the age MAE (years when ``age_std`` is given, else z units)."""
    res: dict[str, float] = {}
    for k, t in enumerate(tasks):
        if t == "age":
            ok = np.isfinite(target[:, k])
            if ok.any():
                mae = float(np.abs(out[ok, k] - target[ok, k]).mean())
                res[f"{prefix}age_mae"] = mae * (age_std or 1.0)
        else:
            auc = task_aucs(target[:, k:k + 1], out[:, k:k + 1])[0]
            res[f"{prefix}{t}_auc"] = float("nan") if auc is None else auc
    return res


@METHODS.register("supervised_meta")
class SupervisedMeta(Method):
    """Predict view / sex / age from the image: the model's ``logits`` hold one output per meta task; batches carry
    the targets under ``key`` (``y`` by default)."""

    monitor = "val_loss"
    monitor_mode = "min"

    def __init__(self, tasks: Sequence[str] = META_TASKS, weights: dict[str, float] | None = None, key: str = "y",
                 age_std: float | None = None):
        self.tasks = check_tasks(tasks)
        self.weights = dict(weights or {})
        unknown = [k for k in self.weights if k not in self.tasks]
        if unknown:
            raise CxrError(f"weights for unknown meta tasks {unknown}; tasks: {', '.join(self.tasks)}")
        self.key = key
        self.age_std = age_std

    def on_epoch_start(self, epoch: int, trainer) -> None:
        if hasattr(trainer.train_data, "set_epoch"):
            trainer.train_data.set_epoch(epoch)

    def training_step(self, model, batch):
        out = model(batch["x"])
        logits = out["logits"] if isinstance(out, dict) else out
        return meta_loss(logits, batch[self.key], self.tasks, self.weights)

    def validate(self, model, batches) -> dict[str, Any]:
        outs, ts = [], []
        for b in batches:
            out = model(b["x"])
            outs.append((out["logits"] if isinstance(out, dict) else out).float().cpu())
            ts.append(b[self.key].float().cpu())
        if not outs:
            return {}
        o, t = torch.cat(outs), torch.cat(ts)
        loss, _ = meta_loss(o, t, self.tasks, self.weights)
        res = {"val_loss": float(loss)}
        res.update(meta_metrics(o.numpy(), t.numpy(), self.tasks, age_std=self.age_std))
        return res
