"""One tiny case per registered training method: the model it trains, the method, and a training and validation set,
built the way the package's own call sites build them, but with a few-layer network on a handful of 16 px images,
so that the whole contract suite runs in seconds on one core.

A newly registered method needs a case here; the suite fails until it has one.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from cxrdistill.training.data import ArrayDataset

N_TRAIN, N_VAL = 24, 16
SIZE = 16  # image side in px
D = 8  # teacher embedding width
K = 2  # labels


class TinyNet(nn.Module):
    """A CxrNet look-alike (``features`` → optional ``projector`` → ``embedding`` → optional ``head`` → ``logits``,
    a ``config`` dict, ``num_features``) with a two-layer convolutional backbone instead of a timm model."""

    def __init__(self, embed_dim: int | None = None, num_classes: int = 0, head_on: str = "features"):
        super().__init__()
        self.config = dict(backbone="tiny", in_chans=1, embed_dim=embed_dim, num_classes=num_classes,
                           proj_hidden=None, head_on=head_on, backbone_kwargs={})
        self.backbone = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.Conv2d(4, 4, 3, padding=1, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                      nn.Flatten())
        self.num_features = 16
        self.projector = nn.Linear(16, embed_dim) if embed_dim else None
        head_in = embed_dim if (head_on == "embedding" and embed_dim) else 16
        self.head = nn.Linear(head_in, num_classes) if num_classes else None

    def forward(self, x):
        feats = self.backbone(x)
        emb = self.projector(feats) if self.projector is not None else feats
        out = {"features": feats, "embedding": emb}
        if self.head is not None:
            out["logits"] = self.head(emb if self.config["head_on"] == "embedding" and self.projector is not None
                                      else feats)
        return out


def first_layer(model: nn.Module) -> torch.nn.Parameter:
    """The input-most trainable weight of the model the method trains (where a gradient has the furthest to go)."""
    for p in model.parameters():
        if p.requires_grad:
            return p
    raise AssertionError("no trainable parameter")


def _arrays(n: int, seed: int, meta: bool = False) -> dict[str, np.ndarray]:
    """Images whose brightness depends on the labels and (less) on the group, teacher embeddings, labels, groups."""
    rng = np.random.default_rng(seed)
    g = np.arange(n) % 2
    rng.shuffle(g)
    y = (rng.random((n, K)) < 0.5).astype(np.float32)
    y[:4] = [[0, 0], [1, 1], [0, 1], [1, 0]]  # both classes of both labels in every split
    x = rng.normal(0, 1, size=(n, 1, SIZE, SIZE)).astype(np.float32)
    x[:, :, : SIZE // 2] += y[:, 0, None, None, None]
    x[:, :, SIZE // 2:] += y[:, 1, None, None, None] + 0.3 * g[:, None, None, None]
    t = (x.reshape(n, -1)[:, : D * 4].reshape(n, D, 4).mean(-1) + rng.normal(0, 0.1, (n, D))).astype(np.float32)
    y[5, 0] = np.nan  # an unknown label (U-Ignore)
    out = {"x": x, "t": t, "y": y, "g": g.astype(np.int64)}
    if meta:  # frontal, ap_pa, sex, age z-score
        out["y"] = np.stack([np.ones(n), (rng.random(n) < 0.5), g, rng.normal(0, 1, n)], 1).astype(np.float32)
        out["y"][3, 1] = np.nan
    return out


def data(keys=("x", "t", "y", "g"), meta: bool = False, **extra) -> tuple[ArrayDataset, ArrayDataset]:
    sets = []
    for n, seed in ((N_TRAIN, 0), (N_VAL, 1)):
        a = _arrays(n, seed, meta=meta)
        d = {k: a[k] for k in keys}
        for k, fn in extra.items():
            d[k] = fn(a)
        sets.append(ArrayDataset(**d))
    return sets[0], sets[1]


def distill_model(with_kd: str = "mse"):
    from cxrdistill.losses.kd import build_kd_loss
    from cxrdistill.training.methods.distill import DistillModel, target_stats

    tr, _ = data()
    mean, std = target_stats(tr.arrays["t"].numpy())
    return DistillModel(TinyNet(embed_dim=D), build_kd_loss(with_kd, dim=D), (D,), mean, std)


def _supervised(name):
    def make():
        from cxrdistill.training.method import METHODS

        return TinyNet(num_classes=K), METHODS.create(name), *data(("x", "y"))
    return make


def _probe():
    from cxrdistill.training.method import METHODS

    tr, va = data(("y",), x=lambda a: a["t"])  # a head on frozen embeddings: x is the embedding
    model = nn.Sequential(nn.Linear(D, 8), nn.ReLU(), nn.Linear(8, K))
    return model, METHODS.create("probe"), tr, va


def _fair(name, **kw):
    def make():
        from cxrdistill.training.method import METHODS

        if name == "fair_fairdi":  # the student step; FairDi.fit trains these teachers first (one per group)
            torch.manual_seed(1)
            kw["teachers"] = [TinyNet(num_classes=K), TinyNet(num_classes=K)]
        return TinyNet(num_classes=K), METHODS.create(name, **kw), *data(("x", "y", "g"))
    return make


def _fairkd(name, **kw):
    def make():
        from cxrdistill.training.method import METHODS

        return distill_model(), METHODS.create(name, attribute="sex", **kw), *data()
    return make


def _distill():
    from cxrdistill.training.method import METHODS

    return distill_model(), METHODS.create("distill"), *data(("x", "t"))


def _teacher_pretrain():
    from cxrdistill.training.method import METHODS
    from cxrdistill.training.methods.teacher_pretrain import PretrainNet

    net = TinyNet(embed_dim=D, num_classes=K, head_on="embedding")
    return PretrainNet(net, D, proj_dim=4), METHODS.create("teacher_pretrain"), *data(("x", "y"))


def _barlow():
    from cxrdistill.pretraining.methods.barlow import BarlowNet
    from cxrdistill.training.method import METHODS

    noise = np.random.default_rng(3)
    tr, va = data(("x",), x2=lambda a: (a["x"] + noise.normal(0, 0.2, a["x"].shape)).astype(np.float32))
    return BarlowNet(TinyNet(), sizes=(8, 8)), METHODS.create("barlow"), tr, va


def _supervised_meta():
    from cxrdistill.training.method import METHODS

    return TinyNet(num_classes=4), METHODS.create("supervised_meta"), *data(("x", "y"), meta=True)


def _finetune_aux():
    from cxrdistill.pretraining.methods.finetune_aux import AuxNet
    from cxrdistill.training.method import METHODS

    def meta(a):  # frontal, ap_pa, sex, age z-score (one unknown ap_pa)
        m = np.stack([np.ones(len(a["g"])), a["g"], 1 - a["g"], a["t"][:, 0]], 1).astype(np.float32)
        m[3, 1] = np.nan
        return m

    method = METHODS.create("finetune_aux", aux_tasks=["frontal", "ap_pa", "sex", "age"], aux_weight=0.5)
    return AuxNet(TinyNet(num_classes=K), 4), method, *data(("x", "y"), m=meta)


#: registered method name → builder of (model, method, train data, validation data)
CASES: dict[str, Callable[[], tuple]] = {
    "distill": _distill,
    "probe": _probe,
    "finetune": _supervised("finetune"),
    "classify": _supervised("classify"),
    "teacher_pretrain": _teacher_pretrain,
    "barlow": _barlow,
    "supervised_meta": _supervised_meta,
    "finetune_aux": _finetune_aux,
    "fair_erm": _fair("fair_erm"),
    "fair_resample": _fair("fair_resample"),
    "fair_groupdro": _fair("fair_groupdro"),
    "fair_fis": _fair("fair_fis"),
    "fair_swad": _fair("fair_swad", n_converge=1, n_tolerance=2),
    "fair_fairdi": _fair("fair_fairdi", min_group_size=4),
    "fairkd_balanced": _fairkd("fairkd_balanced"),
    "fairkd_adversarial": _fairkd("fairkd_adversarial"),
    "fairkd_fairdi": _fairkd("fairkd_fairdi", min_group_size=4),
    "fairkd_mmd": _fairkd("fairkd_mmd"),
}


def build(name: str, seed: int = 0):
    """The case of ``name``, with every random initialisation drawn from ``seed`` (two builds are identical)."""
    torch.manual_seed(seed)
    return CASES[name]()
