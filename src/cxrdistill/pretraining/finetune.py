"""Pathology fine-tuning for the pretraining study (Awatramani et al., §4.2, §5.2–5.4): any initialisation
(``inits``), any label policy (``cohorts.policies``: U-Ignore, U-Zeros, U-Ones, per-label mixes), weight decay, and
optional auxiliary heads that predict view / sex / age from the same features (the paper's auxiliary losses). Train
and validation loss are logged every epoch (``history.json``, ``loss_curves.png``) because overfitting is the
paper's main observation.

Scoring uses one label definition for every run (``eval_policy``, U-Ignore by default), so that runs trained under
different policies are compared on the same labels; synthetic cohorts are also scored against the ground truth.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from cxrdistill.cohorts.policies import build_targets, describe_policy
from cxrdistill.errors import InputError
from cxrdistill.images.dataset import CxrDataset
from cxrdistill.images.preprocess import MEAN, STD
from cxrdistill.models.network import count_params, save_model
from cxrdistill.pretraining.config import PretrainFinetuneConfig, coerce_config
from cxrdistill.pretraining.data import WithArrays, cohort_fingerprint, image_size, resolve_images, split_rows
from cxrdistill.pretraining.inits import build_init, init_fingerprint
from cxrdistill.pretraining.methods.finetune_aux import AuxNet, FinetuneAux
from cxrdistill.pretraining.methods.supervised_meta import age_stats, meta_targets
from cxrdistill.storage.io import atomic_path, clean_json, write_json, write_table
from cxrdistill.training.inputs import ImageBatches, default_tasks
from cxrdistill.training.predict import attach_metrics, auc_summary, model_outputs, predictions_table
from cxrdistill.training.run_dir import RunLog, open_run
from cxrdistill.training.trainer import Trainer


def targets_for(cfg: PretrainFinetuneConfig, df, tasks: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(training targets: ``cfg.label_policy`` with blanks per ``cfg.blank``; scoring and validation targets:
    ``cfg.eval_policy`` with blanks negative) — float32 (N, K), NaN = ignored."""
    return (build_targets(df, list(tasks), cfg.label_policy, blank=cfg.blank),
            build_targets(df, list(tasks), cfg.eval_policy, blank="zero"))


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
    cfg = coerce_config(PretrainFinetuneConfig, cfg)
    out = Path(out)
    df = cohort_df.reset_index(drop=True)
    pixels, rows = resolve_images(images, df)
    inputs = {"cohort": cohort_fingerprint(df, pixels, rows), "init_file": init_fingerprint(cfg.init)}
    tasks = default_tasks(df, cfg.tasks)
    tr, va, ev = split_rows(df, "train"), split_rows(df, "val"), split_rows(df, cfg.eval_split)
    for name, idx in (("train", tr), (cfg.eval_split, ev)):
        if len(idx) == 0:
            raise InputError(f"no rows in split {name!r}", column="split",
                             hint="fine-tuning needs train and evaluation splits (`cxrdistill cohort split`)")
    Y, Yev = targets_for(cfg, df, tasks)
    run = open_run(out, "pretraining-finetune", cfg, inputs, summary="finetune.json", fresh=fresh, reuse=reuse,
                   on_change="restart" if restart_changed else "refuse")
    if run.done is not None:
        return run.done
    log = log or RunLog(out, quiet=True)
    torch.manual_seed(cfg.train.seed)
    net, init_info = build_init(cfg.init, cfg.backbone, len(tasks), cache_dir=cache_dir)
    M = None
    model: nn.Module = net
    if cfg.aux:
        M = meta_targets(df, cfg.aux_tasks, age_stats(df.iloc[tr]))
        model = AuxNet(net, len(cfg.aux_tasks))
    if cfg.augment and cfg.augment != "none":
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
