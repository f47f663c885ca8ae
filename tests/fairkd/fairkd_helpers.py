"""Tiny data for the fair-distillation tests: 32 px images with a visible finding and a group-dependent acquisition
(the minority group is imaged darker), their 'teacher' embeddings, and a vector toy for defining-behaviour tests."""
from __future__ import annotations

import numpy as np
import torch

SIZE = 32


def make_images(n: int, seed: int, size: int = SIZE):
    """(uint8 images (n, size, size), labels (n, 2) float with a few NaN, groups (n,) int64)."""
    rng = np.random.default_rng(seed)
    g = (rng.random(n) < 0.35).astype(np.int64)
    y = (rng.random((n, 2)) < 0.4).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    imgs = rng.normal(90, 18, size=(n, size, size))
    for i in range(n):
        if y[i, 0]:
            cx, cy = rng.integers(10, 22, size=2)
            imgs[i][(xx - cx) ** 2 + (yy - cy) ** 2 < 25] += 100
        if y[i, 1]:
            imgs[i][int(size * 0.7):, :] += 80
        if g[i]:
            imgs[i] = imgs[i] * 0.6 + 20  # the minority's site: low contrast
    y[rng.random((n, 2)) < 0.05] = np.nan
    return np.clip(imgs, 0, 255).astype(np.uint8), y, g


def teacher_embeddings(imgs: np.ndarray, dim: int = 16, seed: int = 0) -> np.ndarray:
    """A fixed random 'black-box teacher': a seeded conv net's pooled features, linearly projected."""
    from cxrdistill.models.network import CxrNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = CxrNet("lcnet_035", embed_dim=dim).eval()
        x = torch.from_numpy(imgs).unsqueeze(1).float().div(255.0).sub(0.5).div(0.25)
        with torch.no_grad():
            return net(x)["embedding"].numpy().astype(np.float32)


def image_data(d, rows):
    from cxrdistill.training.inputs import ImageBatches

    return ImageBatches(d["images"], rows, t=d["t"][rows], y=d["y"][rows], g=d["g"][rows])


def distill_model(t_train, standardize=True, backbone="lcnet_035", seed=0):
    """A DistillModel exactly as ``run_distill`` builds it (student from create_student, KD loss by name)."""
    from cxrdistill.losses.kd import build_kd_loss
    from cxrdistill.models.students import create_student
    from cxrdistill.training.methods.distill import DistillModel, target_stats

    torch.manual_seed(seed)
    dim = t_train.shape[1]
    mean = std = None
    if standardize:
        mean, std = target_stats(t_train)
    return DistillModel(create_student(backbone, (dim,)), build_kd_loss("mse_cosine", dim=dim), (dim,), mean, std)


def fast_cfg(**kw):
    from cxrdistill.training.trainer import TrainConfig

    return TrainConfig(**{"epochs": 1, "batch_size": 32, "lr": 3e-3, "progress": False, "seed": 0,
                          "restore_best": False, "deterministic": False, **kw})


class VecStudent(torch.nn.Module):
    """A tiny student on vectors with the CxrNet interface (projector, config, dict output)."""

    def __init__(self, d_in: int, d_out: int, hidden: int = 32):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.ReLU())
        self.projector = torch.nn.Linear(hidden, d_out)
        self.head = None
        self.config = {"backbone": "vec", "embed_dim": d_out, "num_classes": 0, "head_on": "features"}

    def forward(self, x):
        f = self.backbone(x)
        e = self.projector(f)
        out = {"features": f, "embedding": e}
        if self.head is not None:
            out["logits"] = self.head(e)
        return out


def vector_toy(n: int, seed: int):
    """Features where dim 0 carries the group (strongly), the label depends on dims 1-2; the teacher's 9-d embedding
    holds dims 1-5, half of dims 1-3 and a weak copy of the group. Returns dict of arrays."""
    rng = np.random.default_rng(seed)
    g = (rng.random(n) < 0.5).astype(np.int64)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    x[:, 0] += 2.0 * g
    y = ((x[:, 1] + 0.5 * x[:, 2] + 0.3 * rng.normal(size=n)) > 0).astype(np.float32)[:, None]
    t = np.concatenate([x[:, 1:], x[:, 1:4] * 0.5, 0.5 * g[:, None]], axis=1).astype(np.float32)
    return {"x": x, "t": t, "y": y, "g": g}
