"""Train the default teacher — the toolkit's stand-in for CXR Foundation — on a synthetic pretraining cohort.

The pretraining cohort is generated with its own scenario (``pretrain``: its own sites and planted bias), separate
from any downstream cohort, and a CxrNet is trained on it with the shared Trainer (method ``teacher_pretrain``:
multi-label BCE + an optional contrastive term). The result is a safetensors file with the teacher's metadata
(embedding shape, image size, tasks, normalisation), served by ``cxrdistill teacher serve torch:FILE``.

Defaults are sized for 2 CPU cores (≈ 2 minutes at 64 px); the same call with ``size=224, backbone="densenet121",
n=200_000, epochs=30, contrastive_kind="simclr"`` trains a real-size model on a GPU.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cxrdistill import synth
from cxrdistill.cohorts.policies import build_targets
from cxrdistill.cohorts.schema import CHEXPERT_FINDINGS
from cxrdistill.errors import CxrError
from cxrdistill.evaluation.quick import mean_auc, task_aucs
from cxrdistill.images.preprocess import MEAN, STD
from cxrdistill.training.data import ArrayDataset
from cxrdistill.training.run_dir import open_run
from cxrdistill.training.trainer import TrainConfig, Trainer

TEACHER_NAME = "cxrdistill-synth-teacher"
#: pixel normalisation of the teacher's input — the same as images.dataset.CxrDataset's default


class TeacherPretrainConfig(BaseModel):
    """Settings of ``cxrdistill teacher pretrain`` (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(3000, ge=16)
    size: int = Field(64, ge=16)
    backbone: str = "resnet18"
    embed_dim: int | None = Field(None, ge=1)
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(0.25, ge=0)
    contrastive: float = Field(0.1, ge=0)
    contrastive_kind: Literal["supcon", "simclr"] = "supcon"
    temperature: float = Field(0.1, gt=0)
    augment: bool = True
    policy: str = "u-ignore"
    scenario: str = "pretrain"
    seed: int = 1234
    val_fraction: float = Field(0.1, ge=0, lt=0.9)
    workers: int = Field(2, ge=1)
    device: str = "auto"


def _patient_split(patients: np.ndarray, frac: float, seed: int) -> np.ndarray:
    """Boolean mask of validation rows: a seeded random ``frac`` of the patients (no patient in both parts)."""
    uniq = np.unique(patients)
    rng = np.random.default_rng([seed, 0xA1])
    val_p = set(uniq[rng.random(len(uniq)) < frac].tolist())
    return np.fromiter((p in val_p for p in patients), dtype=bool, count=len(patients))


def render_pretraining_cohort(cfg: TeacherPretrainConfig):
    """(uint8 images (n, size, size), metadata DataFrame) of the synthetic pretraining cohort."""
    return synth.render_batch(cfg.n, cfg.size, cfg.seed, cfg.scenario, workers=cfg.workers)


def pretrain_teacher(out: str | Path, cfg: TeacherPretrainConfig | None = None, *, run_dir: str | Path | None = None,
                     progress: bool = True, log: Callable[[str], None] | None = None,
                     restart_changed: bool = False) -> dict:
    """Render the pretraining cohort, train the teacher, save it to ``out``; return a summary (times, AUCs, size).

    ``run_dir``: keep per-epoch checkpoints there, so that a killed run resumes (worth it for long GPU runs); it
    resumes only the run it was made for (another configuration is refused, or started over with ``restart_changed``),
    and when that run finished and ``out`` exists its summary is returned at once.
    """
    import torch

    from cxrdistill.models.network import CxrNet, count_params, save_model
    from cxrdistill.training.methods.teacher_pretrain import PretrainNet, TeacherPretrain

    cfg = cfg or TeacherPretrainConfig()
    log = log or (lambda s: None)
    out = Path(out)
    run = None
    if run_dir is not None:
        run = open_run(run_dir, "teacher-pretrain", cfg.model_dump(exclude={"workers", "device"}), {},
                       summary="teacher_pretrain.json", is_done=lambda s: s.get("out") == str(out) and out.exists(),
                       on_change="restart" if restart_changed else "refuse",
                       hint="use another --run-dir, or delete it to start over")
        if run.done is not None:
            log(f"{run_dir} holds this finished run: {out} is up to date")
            return run.done
    t0 = time.perf_counter()
    images, meta = render_pretraining_cohort(cfg)
    t_render = time.perf_counter() - t0
    log(f"rendered {len(images)} pretraining images ({cfg.scenario}, {cfg.size} px) in {t_render:.1f} s")
    tasks = [f for f in CHEXPERT_FINDINGS if f in meta.columns]
    if not tasks:
        raise CxrError("the synthetic pretraining cohort has no label columns")
    y = build_targets(meta, tasks, cfg.policy)
    is_val = (_patient_split(meta["patient_id"].astype(str).to_numpy(), cfg.val_fraction, cfg.seed)
              if cfg.val_fraction > 0 else np.zeros(len(meta), bool))
    tr_rows, va_rows = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    # uint8 pixels in memory (n·size² bytes); the method normalises and augments whole batches on the device
    px = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
    yt = torch.from_numpy(y)
    train = ArrayDataset(x=px[tr_rows], y=yt[tr_rows])
    val = ArrayDataset(x=px[va_rows], y=yt[va_rows]) if len(va_rows) else None

    torch.manual_seed(cfg.seed)
    net = CxrNet(cfg.backbone, in_chans=1, embed_dim=cfg.embed_dim, num_classes=len(tasks),
                 head_on="embedding" if cfg.embed_dim else "features")
    emb_dim = cfg.embed_dim or net.num_features
    model = PretrainNet(net, emb_dim)
    method = TeacherPretrain(contrastive=cfg.contrastive, kind=cfg.contrastive_kind, temperature=cfg.temperature,
                             augment=cfg.augment, mean=MEAN, std=STD)
    tcfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                       schedule="cosine", warmup_epochs=cfg.warmup_epochs, seed=cfg.seed,
                       device=cfg.device, progress=progress, deterministic=False,
                       eval_batch_size=256)
    trainer = Trainer(model, method, train, val, tcfg, run_dir=run_dir, log=log)
    t1 = time.perf_counter()
    history = trainer.fit()
    t_train = time.perf_counter() - t1

    val_auc_true = None
    if val is not None:
        logits = trainer.predict(lambda m, b: m(method.prepare(b["x"]))["logits"], val).numpy()
        true_cols = [f"true_{t}" for t in tasks]
        if all(c in meta.columns for c in true_cols):
            val_auc_true = mean_auc(meta[true_cols].to_numpy(float)[va_rows], logits)
        val_task_auc = dict(zip(tasks, task_aucs(y[va_rows], logits)))
    else:
        val_task_auc = {}
    net = model.net.cpu().eval()
    teacher_meta = {"name": TEACHER_NAME, "backbone": cfg.backbone, "image_size": cfg.size,
                    "embedding_shape": [emb_dim], "tasks": tasks, "mean": MEAN, "std": STD,
                    "scenario": cfg.scenario, "pretrain": cfg.model_dump()}
    save_model(net, out, teacher=teacher_meta)
    last = history[-1] if history else {}
    summary = {"out": str(out), "backbone": cfg.backbone, "params": count_params(net), "embedding_dim": emb_dim,
               "image_size": cfg.size, "n_train": int(len(tr_rows)), "n_val": int(len(va_rows)),
               "render_seconds": round(t_render, 2), "train_seconds": round(t_train, 2),
               "total_seconds": round(time.perf_counter() - t0, 2), "epochs": len(history),
               "val_auc": last.get("val_auc"), "val_auc_true_labels": val_auc_true,
               "val_task_auc": {k: (round(v, 4) if v is not None else None) for k, v in val_task_auc.items()}}
    log(f"saved teacher to {out}: {summary['params'] / 1e6:.1f} M parameters, {emb_dim}-d embedding, "
        f"val AUC {summary['val_auc']}, {summary['total_seconds']:.0f} s")
    return run.finish(summary) if run is not None else summary
