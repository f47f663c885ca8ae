"""Pretraining the default teacher ("foundation model"): supervised multi-label BCE plus an optional contrastive term.

Contrastive kinds (on a small projection of the embedding, as in SimCLR, so the embedding itself is not squashed
onto the unit sphere):

* ``supcon`` — supervised contrastive (Khosla et al. 2020) extended to multi-label targets: every other image in the
  batch is a positive with weight = Jaccard overlap of the two images' positive-label sets (as in multi-label SupCon
  variants, e.g. Zhang & Wu 2022). One view per image, so it costs almost nothing extra — the 2-core default.
* ``simclr`` — NT-Xent between two augmentations of the same image (Chen et al. 2020); twice the forward cost, for
  GPU runs.

Batches may carry raw ``uint8`` pixels (B, 1, H, W): the method normalises them and augments the whole batch at once
on the device (:func:`batch_augment`: small affine jitter, exposure, noise), which is ~100× cheaper on a CPU than
per-item augmentation in the data loader — what makes a 2-core pretraining run take minutes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cxrdistill.errors import CxrError
from cxrdistill.images.preprocess import MEAN, STD
from cxrdistill.losses.classification import CLS_LOSSES
from cxrdistill.training.method import METHODS, Method
from cxrdistill.training.methods.supervised import classification_metrics, collect_scores

CONTRASTIVE_KINDS = ("supcon", "simclr")


class PretrainNet(nn.Module):
    """A CxrNet plus a projection head used only by the contrastive loss (dropped when the teacher is saved)."""

    def __init__(self, net: nn.Module, embed_dim: int, proj_dim: int = 128):
        super().__init__()
        self.net = net
        self.proj = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU(inplace=True), nn.Linear(embed_dim, proj_dim))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = dict(self.net(x))
        out["proj"] = self.proj(out["embedding"])
        return out


def batch_augment(x: torch.Tensor, *, degrees: float = 7.0, translate: float = 0.06, scale: float = 0.08,
                  brightness: float = 0.1, contrast: float = 0.1, noise: float = 0.03) -> torch.Tensor:
    """Per-image random rotation/translation/zoom (one ``grid_sample`` for the batch), contrast and brightness
    jitter and Gaussian noise, on normalised images (B, C, H, W). No flips: chest anatomy is lateralised.
    Randomness comes from torch's global generator, whose state the trainer checkpoints (exact resume)."""
    b, dev = x.shape[0], x.device
    u = lambda lo, hi: torch.empty(b, device=dev).uniform_(lo, hi)  # noqa: E731
    ang = u(-degrees, degrees) * (torch.pi / 180)
    s = 1.0 / u(1 - scale, 1 + scale)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 1] = s * torch.cos(ang), -s * torch.sin(ang)
    theta[:, 1, 0], theta[:, 1, 1] = s * torch.sin(ang), s * torch.cos(ang)
    theta[:, 0, 2], theta[:, 1, 2] = u(-translate, translate) * 2, u(-translate, translate) * 2
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(1 - contrast, 1 + contrast).view(b, 1, 1, 1) + mean + u(-brightness, brightness).view(b, 1, 1, 1)
    return x + noise * torch.randn_like(x)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's NT-Xent: each view's positive is the other view of the same image, the other 2B-2 are negatives."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    b = z1.shape[0]
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, target)


def multilabel_supcon(z: torch.Tensor, y: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss with soft positives: weight(i, j) = |P_i ∩ P_j| / |P_i ∪ P_j| over positive labels
    (NaN targets count as not positive). Anchors without any positive partner in the batch are skipped."""
    z = F.normalize(z.float(), dim=1)
    n = z.shape[0]
    pos = torch.nan_to_num(y.float(), nan=0.0).clamp(0, 1)
    inter = pos @ pos.t()
    union = pos.sum(1, keepdim=True) + pos.sum(1) - inter
    w = torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    w = w.masked_fill(eye, 0.0)
    sim = (z @ z.t() / temperature).masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    log_prob = log_prob.masked_fill(eye, 0.0)
    wsum = w.sum(1)
    ok = wsum > 0
    if not ok.any():
        return z.sum() * 0.0
    return -((w * log_prob).sum(1)[ok] / wsum[ok]).mean()


@METHODS.register("teacher_pretrain")
class TeacherPretrain(Method):
    """Masked multi-label BCE on ``logits`` + ``contrastive`` × (supcon | simclr) on ``proj``."""

    monitor = "val_auc"
    monitor_mode = "max"

    def __init__(self, contrastive: float = 0.1, kind: str = "supcon", temperature: float = 0.1, loss: str = "bce",
                 augment: bool = True, mean: float = MEAN, std: float = STD):
        if kind not in CONTRASTIVE_KINDS:
            raise CxrError(f"unknown contrastive kind {kind!r}; choose one of: {', '.join(CONTRASTIVE_KINDS)}")
        self.weight, self.kind, self.temperature = float(contrastive), kind, float(temperature)
        self.loss = CLS_LOSSES.create(loss)
        self.augment, self.mean, self.std = bool(augment), float(mean), float(std)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 pixels → normalised float (already-float input is passed through)."""
        if x.dtype == torch.uint8:
            x = (x.float() / 255.0 - self.mean) / self.std
        return x if x.ndim == 4 else x.unsqueeze(1)

    def on_epoch_start(self, epoch: int, trainer) -> None:
        if hasattr(trainer.train_data, "set_epoch"):
            trainer.train_data.set_epoch(epoch)  # datasets with their own augmentation: a fresh stream per epoch

    def training_step(self, model, batch):
        x = self.prepare(batch["x"])
        x1 = batch_augment(x) if self.augment else x
        out = model(x1)
        sup = self.loss(out["logits"], batch["y"])
        if self.weight <= 0:
            return sup, {"sup_loss": float(sup.detach())}
        if self.kind == "simclr":
            x2 = self.prepare(batch["x2"]) if "x2" in batch else (batch_augment(x) if self.augment else x)
            out2 = model(x2)
            con = nt_xent(out["proj"], out2["proj"], self.temperature)
        else:
            con = multilabel_supcon(out["proj"], batch["y"], self.temperature)
        return sup + self.weight * con, {"sup_loss": float(sup.detach()), "con_loss": float(con.detach())}

    def validate(self, model, batches):
        sc = collect_scores(model, batches, fn=lambda m, b: m(self.prepare(b["x"]))["logits"])
        out = {"val_loss": float(self.loss(torch.from_numpy(sc["logits"]), torch.from_numpy(sc["y"])))}
        out.update(classification_metrics(sc))
        return out
