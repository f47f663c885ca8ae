"""Barlow Twins: the loss against its definition (Zbontar et al. 2021), the projector, multi-instance pairs."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from cxrdistill.pretraining.methods.barlow import (LAMBDA, BarlowNet, BarlowTwins, barlow_twins_loss,
                                                   cross_correlation)


def decorrelated_standardized(n: int = 64, d: int = 8, seed: int = 0) -> torch.Tensor:
    """Z (n, d): every column has mean 0 and (biased) variance 1, columns mutually orthogonal ⇒ ZᵀZ / n = I."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d))
    a -= a.mean(0)
    q, _ = np.linalg.qr(a)  # orthonormal columns inside the centred subspace
    return torch.from_numpy(q * np.sqrt(n))


def loop_loss(z1: np.ndarray, z2: np.ndarray, lambd: float, eps: float) -> float:
    """The formula written out with loops: standardise each column over the batch, C_ij = Σ_b a_bi b_bj / N."""
    n, d = z1.shape

    def std(z):
        out = np.empty_like(z)
        for j in range(d):
            m = sum(z[b, j] for b in range(n)) / n
            v = sum((z[b, j] - m) ** 2 for b in range(n)) / n
            for b in range(n):
                out[b, j] = (z[b, j] - m) / np.sqrt(v + eps)
        return out

    a, b_ = std(z1), std(z2)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[b, i] * b_[b, j] for b in range(n)) / n
            loss += (1 - c) ** 2 if i == j else lambd * c ** 2
    return loss


def test_zero_at_identical_decorrelated_standardized_views():
    z = decorrelated_standardized()
    c = cross_correlation(z, z, eps=0.0)
    assert torch.allclose(c, torch.eye(8, dtype=c.dtype), atol=1e-6)
    assert float(barlow_twins_loss(z, z, eps=0.0)) < 1e-10
    assert float(barlow_twins_loss(z, z)) < 1e-8  # the BatchNorm ε only
    # standardisation inside the loss: a per-dimension affine change of one view changes nothing
    assert float(barlow_twins_loss(3.0 * z + 5.0, z, eps=0.0)) < 1e-10


def test_positive_otherwise():
    z = decorrelated_standardized()
    other = decorrelated_standardized(seed=1)
    assert float(barlow_twins_loss(z, other)) > 1.0  # views that disagree: the invariance term
    redundant = z.clone()
    redundant[:, 1] = redundant[:, 0]  # two identical dimensions: C_01 = 1 off the diagonal
    loss, on, off = barlow_twins_loss(redundant, redundant, eps=0.0, parts=True)
    assert float(on) < 1e-10 and float(off) == pytest.approx(2.0, rel=1e-6)
    assert float(loss) == pytest.approx(LAMBDA * 2.0, rel=1e-5)


@pytest.mark.parametrize("lambd", [LAMBDA, 0.3])
def test_matches_a_double_loop_transcription(lambd):
    rng = np.random.default_rng(7)
    z1, z2 = rng.normal(size=(6, 4)), rng.normal(size=(6, 4)) + 0.5 * rng.normal(size=(6, 4))
    got = float(barlow_twins_loss(torch.from_numpy(z1), torch.from_numpy(z2), lambd=lambd))
    assert got == pytest.approx(loop_loss(z1, z2, lambd, 1e-5), rel=1e-5)


def test_lambda_default_is_the_papers():
    from cxrdistill.pretraining.config import PretrainConfig

    assert LAMBDA == 0.0051
    assert inspect.signature(barlow_twins_loss).parameters["lambd"].default == 0.0051
    assert BarlowTwins().lambd == 0.0051 and PretrainConfig().lambd == 0.0051


def test_projector_sizes_and_gradients():
    from cxrdistill.models.network import CxrNet

    torch.manual_seed(0)
    model = BarlowNet(CxrNet("resnet10t"), sizes=[32, 16, 8])
    lin = [m for m in model.projector if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in lin] == [32, 16, 8]
    batch = {"x": torch.randn(6, 1, 32, 32), "x2": torch.randn(6, 1, 32, 32)}
    loss, logs = BarlowTwins().training_step(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and set(logs) == {"invariance", "redundancy"}
    assert model.net.backbone.conv1[0].weight.grad.abs().sum() > 0


def test_multi_instance_pairs():
    from cxrdistill.pretraining.data import PairDataset, partner_groups

    partners = partner_groups(["p1", "p1", "p2", None, "p1"])
    assert [sorted(p.tolist()) for p in partners] == [[1, 4], [0, 4], [], [], [0, 1]]
    pixels = np.stack([np.full((8, 8), 10 * (i + 1), np.uint8) for i in range(5)])  # image i is the constant 10(i+1)
    ds = PairDataset(pixels, np.arange(5), "none", partners, seed=0)
    seen = set()
    for epoch in range(20):
        ds.set_epoch(epoch)
        for i in range(5):
            item = ds[i]
            own = item["x"].mean().item()
            other = item["x2"].mean().item()
            j = ds.partner(i)
            assert other == pytest.approx((10 * (j + 1) / 255 - 0.5) / 0.25, abs=1e-5)
            assert own == pytest.approx((10 * (i + 1) / 255 - 0.5) / 0.25, abs=1e-5)
            if i in (2, 3):
                assert j == i  # no partner: two views of the same image
            else:
                assert j != i and j in partners[i]
            if i == 0:
                seen.add(j)
    assert seen == {1, 4}  # the partner is redrawn across epochs
    ds.set_epoch(2)
    a = ds[0]["x2"]
    ds.set_epoch(2)
    assert torch.equal(a, ds[0]["x2"])  # deterministic in (seed, epoch, item)
