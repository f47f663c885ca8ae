"""Pathology fine-tuning for the pretraining study (Awatramani et al., §4.2, §5.2–5.4): any initialisation
(``inits``), any label policy (``cohorts.policies``: U-Ignore, U-Zeros, U-Ones, per-label mixes), weight decay, and
optional auxiliary heads that predict view / sex / age from the same features (the paper's auxiliary losses). Train
and validation loss are logged every epoch (``history.json``, ``loss_curves.png``) because overfitting is the
paper's main observation.

Scoring uses one label definition for every run (``eval_policy``, U-Ignore by default), so that runs trained under
different policies are compared on the same labels; synthetic cohorts are also scored against the ground truth.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from cxrdistill.errors import InputError
from cxrdistill.storage.io import clean_json, write_json, write_table
from cxrdistill.pretraining.config import PretrainFinetuneConfig, coerce_config
from cxrdistill.training.method import METHODS, Method


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
        from cxrdistill.losses.classification import CLS_LOSSES
        from cxrdistill.pretraining.methods.supervised_meta import check_tasks

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
        from cxrdistill.pretraining.methods.supervised_meta import meta_loss

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
        from cxrdistill.training.methods.supervised import classification_metrics

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


def _resolved(stage: str, cfg, inputs: dict[str, Any]) -> dict[str, Any]:
    """What ``training.runs.prepare_run_dir`` stamps into ``run.json`` (to recognise a finished identical run)."""
    return {"stage": stage, "inputs": {k: (str(v) if v is not None else None) for k, v in inputs.items()},
            "config": json.loads(cfg.model_dump_json())}


def finished(out: Path, name: str, stage: str, cfg, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """The stored summary of an identical finished run in ``out`` (None when absent or different)."""
    stamp, summ = out / "run.json", out / name
    if not (stamp.exists() and summ.exists()):
        return None
    try:
        if json.loads(stamp.read_text(encoding="utf-8")) != _resolved(stage, cfg, inputs):
            return None
        return json.loads(summ.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def targets_for(cfg: PretrainFinetuneConfig, df, tasks: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(training targets: ``cfg.label_policy`` with blanks per ``cfg.blank``; scoring and validation targets:
    ``cfg.eval_policy`` with blanks negative) — float32 (N, K), NaN = ignored."""
    from cxrdistill.cohorts.policies import build_targets

    return (build_targets(df, list(tasks), cfg.label_policy, blank=cfg.blank),
            build_targets(df, list(tasks), cfg.eval_policy, blank="zero"))


def changed(out: Path, stage: str, cfg, inputs: dict[str, Any]) -> bool:
    """True when ``out`` holds a run stamp of another configuration or inputs."""
    stamp = out / "run.json"
    if not stamp.exists():
        return False
    try:
        return json.loads(stamp.read_text(encoding="utf-8")) != _resolved(stage, cfg, inputs)
    except (OSError, ValueError):
        return True


def finetune(cfg: PretrainFinetuneConfig | dict | None, cohort_df, images, out: str | Path, *, fresh: bool = False,
             reuse: bool = True, log: Callable[[str], None] | None = None, cache_dir: str | Path | None = None,
             plot: bool = True, restart_changed: bool = False) -> dict[str, Any]:
    """Fine-tune on the cohort's ``train`` split (best epoch by ``val``), then predict and score ``eval_split``.

    ``images``: an ``ImageCache`` or a uint8 array aligned with ``cohort_df``. Writes into ``out``: ``model.safetensors``
    (the classifier, loadable by ``load_model`` / ``cxrdistill evaluate``), ``history.json`` (train/val loss per epoch),
    ``loss_curves.png``, ``predictions/<split>.parquet`` (the predictions table), ``metrics/<split>.csv`` (tidy, with
    bootstrap CIs), ``finetune.json`` (the returned summary). An identical finished run is reused (``reuse``); a run
    directory holding another configuration is an error, or is started over with ``restart_changed`` (the grid).
    """
    from cxrdistill.cohorts.policies import describe_policy
    from cxrdistill.models.network import count_params, save_model
    from cxrdistill.pretraining.data import WithArrays, cohort_fingerprint, image_size, resolve_images, split_rows
    from cxrdistill.pretraining.inits import build_init, init_fingerprint
    from cxrdistill.pretraining.methods.supervised_meta import age_stats, meta_targets
    from cxrdistill.training.inputs import MEAN, STD, ImageBatches, default_tasks
    from cxrdistill.training.predict import attach_metrics, auc_summary, model_outputs, predictions_table
    from cxrdistill.training.runs import RunLog, prepare_run_dir
    from cxrdistill.training.trainer import Trainer

    cfg = coerce_config(PretrainFinetuneConfig, cfg)
    out = Path(out)
    df = cohort_df.reset_index(drop=True)
    pixels, rows = resolve_images(images, df)
    inputs = {"cohort": cohort_fingerprint(df, pixels, rows), "init_file": init_fingerprint(cfg.init)}
    if reuse and not fresh:
        done = finished(out, "finetune.json", "pretraining-finetune", cfg, inputs)
        if done is not None:
            return done
    fresh = fresh or (restart_changed and changed(out, "pretraining-finetune", cfg, inputs))
    tasks = default_tasks(df, cfg.tasks)
    tr, va, ev = split_rows(df, "train"), split_rows(df, "val"), split_rows(df, cfg.eval_split)
    for name, idx in (("train", tr), (cfg.eval_split, ev)):
        if len(idx) == 0:
            raise InputError(f"no rows in split {name!r}", column="split",
                             hint="fine-tuning needs train and evaluation splits (`cxrdistill cohort split`)")
    Y, Yev = targets_for(cfg, df, tasks)
    prepare_run_dir(out, "pretraining-finetune", cfg, inputs, fresh)
    log = log or RunLog(out, quiet=True)
    torch.manual_seed(cfg.train.seed)
    net, init_info = build_init(cfg.init, cfg.backbone, len(tasks), cache_dir=cache_dir)
    M = None
    model: nn.Module = net
    if cfg.aux:
        M = meta_targets(df, cfg.aux_tasks, age_stats(df.iloc[tr]))
        model = AuxNet(net, len(cfg.aux_tasks))
    if cfg.augment and cfg.augment != "none":
        from cxrdistill.images.dataset import CxrDataset

        train = CxrDataset(pixels, rows[tr], targets=Y[tr], augment=cfg.augment, seed=cfg.train.seed)
        train = WithArrays(train, m=M[tr]) if M is not None else train
    else:
        train = ImageBatches(pixels, rows[tr], y=Y[tr], m=None if M is None else M[tr])
    val = ImageBatches(pixels, rows[va], y=Yev[va], m=None if M is None else M[va]) if len(va) else None
    method = FinetuneAux(cfg.aux_tasks if cfg.aux else (), cfg.aux_weight if cfg.aux else 0.0, monitor=cfg.monitor)
    policy = describe_policy(cfg.label_policy, tasks)
    log(f"finetune: {net.config['backbone']} from {cfg.init}; {len(tasks)} tasks, policy {policy}; aux "
        f"{'×' + str(cfg.aux_weight) if cfg.aux else 'off'}; wd {cfg.train.weight_decay}; {len(tr)} train / {len(va)} "
        f"val / {len(ev)} {cfg.eval_split}")
    hist = Trainer(model, method, train, val, cfg.train, run_dir=out, log=log).fit()
    size = image_size(pixels)
    meta = {"finetune": clean_json({"image_size": size, "tasks": tasks, "label_policy": policy,
                                    "eval_policy": describe_policy(cfg.eval_policy, tasks), "aux": cfg.aux,
                                    "aux_weight": cfg.aux_weight if cfg.aux else 0.0, "mean": MEAN, "std": STD,
                                    **init_info})}
    save_model(net, out / "model.safetensors", **meta)
    logits = model_outputs(net, ImageBatches(pixels, rows[ev]), "logits")
    scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    pred = predictions_table(df.iloc[ev], tasks, scores, Yev[ev])
    write_table(pred, out / "predictions" / f"{cfg.eval_split}.parquet")
    metrics = attach_metrics(pred, tasks, n_boot=cfg.n_boot, seed=cfg.train.seed)
    write_table(metrics, out / "metrics" / f"{cfg.eval_split}.csv")
    if plot:
        from cxrdistill.storage.io import atomic_path
        from cxrdistill.report.plots import loss_curves, plt

        fig = loss_curves({"": hist}, title=f"{cfg.init} · {policy} · aux {'on' if cfg.aux else 'off'}")
        with atomic_path(out / "loss_curves.png") as p:
            fig.savefig(p, dpi=90, bbox_inches="tight", format="png")
        plt.close(fig)
    summary = {"stage": "pretraining-finetune", "model": str(out / "model.safetensors"), "params": count_params(net),
               **meta["finetune"], "split": cfg.eval_split, "n_eval": int(len(ev)), "epochs": len(hist),
               "history": hist, "predictions": str(out / "predictions" / f"{cfg.eval_split}.parquet"),
               "metrics": str(out / "metrics" / f"{cfg.eval_split}.csv"),
               "observed": auc_summary(metrics, "observed")}
    if (metrics["labels"] == "true").any():
        summary["true"] = auc_summary(metrics, "true")
    write_json(clean_json(summary), out / "finetune.json")
    m = summary["observed"]["mean_auc"]
    log(f"{cfg.eval_split}: mean AUC {m:.4f}" if m is not None else f"{cfg.eval_split}: no task with both classes")
    return clean_json(summary)
