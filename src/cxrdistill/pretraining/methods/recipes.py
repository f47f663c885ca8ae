"""The registry of pretraining methods: a recipe turns (config, cohort, pixels, split rows, network factory) into
what the shared trainer needs, plus how to get the backbone-only network to save afterwards."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from cxrdistill.errors import InputError
from cxrdistill.images.dataset import CxrDataset
from cxrdistill.models.network import CxrNet
from cxrdistill.pretraining.data import PairDataset, partner_groups
from cxrdistill.pretraining.methods.barlow import BarlowNet, BarlowTwins
from cxrdistill.pretraining.methods.supervised_meta import SupervisedMeta, age_stats, check_tasks, meta_targets
from cxrdistill.registry import Registry
from cxrdistill.training.inputs import ImageBatches

PRETRAINERS: Registry = Registry("pretraining method")


@dataclass
class Recipe:
    model: Any  # the module the trainer trains (backbone + task head / projector)
    method: Any  # a registered training Method
    train_data: Any
    val_data: Any | None
    export: Callable[[], Any]  # → the backbone-only CxrNet to save
    meta: dict[str, Any] = field(default_factory=dict)


def backbone_only(net):
    """A head-less copy of a CxrNet's backbone (``num_classes=0``, no projector) — what a pretraining run saves, so
    that a later fine-tune never inherits a pretraining head of the same size by accident."""
    cfg = dict(net.config)
    cfg.update(num_classes=0, embed_dim=None, proj_hidden=None, head_on="features")
    out = CxrNet(**cfg)
    out.backbone.load_state_dict(net.backbone.state_dict())
    return out.eval()


def _default_augment(cfg, name: str):
    if cfg.augment is None:
        return name
    return cfg.augment


@PRETRAINERS.register("supervised")
def supervised(cfg, df, pixels, rows, tr, va, make_net) -> Recipe:
    """View (frontal/lateral, AP/PA), sex and age from the image (``supervised_meta``)."""
    tasks = check_tasks(cfg.meta_tasks)
    stats = age_stats(df.iloc[tr])
    M = meta_targets(df, tasks, stats)
    known = {t: int(np.isfinite(M[tr, k]).sum()) for k, t in enumerate(tasks)}
    net = make_net(len(tasks))
    aug = _default_augment(cfg, "light")
    if aug and aug != "none":
        train = CxrDataset(pixels, rows[tr], targets=M[tr], augment=aug, seed=cfg.train.seed)
    else:
        train = ImageBatches(pixels, rows[tr], y=M[tr])
    val = ImageBatches(pixels, rows[va], y=M[va]) if len(va) else None
    method = SupervisedMeta(tasks, cfg.meta_weights, age_std=stats["age_std"])
    return Recipe(net, method, train, val, lambda: backbone_only(net),
                  {"meta_tasks": tasks, **stats, "known_targets": known, "augment": aug})


PRETRAINERS.register("supervised_meta")(supervised)


@PRETRAINERS.register("barlow")
def barlow(cfg, df, pixels, rows, tr, va, make_net) -> Recipe:
    """Barlow Twins on two augmented views (or two images of one patient / study with ``multi_instance``)."""
    aug = _default_augment(cfg, "barlow")
    partners_tr = partners_va = None
    pairs = 0
    if cfg.multi_instance != "none":
        key = {"patient": "patient_id", "study": "study_id"}[cfg.multi_instance]
        if key not in df.columns:
            raise InputError(f"multi-instance pairs by {cfg.multi_instance} need a {key} column", column=key,
                             hint="set multi_instance: none, or use a cohort with that column")
        partners_tr = partner_groups(df[key].iloc[tr].tolist())
        partners_va = partner_groups(df[key].iloc[va].tolist()) if len(va) else None
        pairs = int(sum(len(p) > 0 for p in partners_tr))
    model = BarlowNet(make_net(0), cfg.projector)
    train = PairDataset(pixels, rows[tr], aug, partners_tr, seed=cfg.train.seed)
    val = PairDataset(pixels, rows[va], aug, partners_va, seed=cfg.train.seed + 1) if len(va) else None
    return Recipe(model, BarlowTwins(cfg.lambd), train, val, lambda: backbone_only(model.net),
                  {"lambda": cfg.lambd, "projector": list(cfg.projector), "multi_instance": cfg.multi_instance,
                   "items_with_partner": pairs, "augment": aug})
