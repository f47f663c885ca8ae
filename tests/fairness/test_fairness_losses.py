"""FIS (FairVision) and binary KD: checked against scipy and against the formulas written out directly."""
import numpy as np
import pytest
import scipy.stats
import torch

from cxrdistill.losses.binary_kd import binary_kd
from cxrdistill.losses.fis import FISLoss, wasserstein_1d


def test_w1_matches_scipy_for_unequal_sizes():
    rng = np.random.default_rng(0)
    for n, m in [(7, 13), (50, 3), (1, 9), (20, 20)]:
        a, b = rng.normal(size=n), rng.exponential(size=m)
        ours = float(wasserstein_1d(torch.tensor(a), torch.tensor(b), p=1))
        assert ours == pytest.approx(scipy.stats.wasserstein_distance(a, b), rel=1e-5, abs=1e-6)


def test_w2_matches_sorted_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=6), rng.normal(2, 1, size=4)
    # replicate to equal sizes (24 each): W2² of equal-size samples is the mean squared sorted difference
    ra, rb = np.sort(np.repeat(a, 4)), np.sort(np.repeat(b, 6))
    expect = np.mean((ra - rb) ** 2)
    assert float(wasserstein_1d(torch.tensor(a), torch.tensor(b), p=2)) == pytest.approx(expect, rel=1e-5)


def test_fis_equal_losses_give_plain_mean():
    losses = torch.full((10,), 0.7)
    g = torch.tensor([0] * 7 + [1] * 3)
    fis = FISLoss()
    assert torch.allclose(fis.weights(losses, g), torch.ones(10))
    assert float(fis(losses, g)) == pytest.approx(0.7)


def test_fis_matches_fairvision_formula():
    """normalize='none' reproduces FairVision's Fair_Loss_Scaler (with the exact 1-D distance for Sinkhorn)."""
    torch.manual_seed(0)
    losses = torch.rand(12)
    g = torch.tensor([0, 1, 2] * 4)
    refs = [torch.rand(5) * (k + 1) for k in range(3)]
    c, T, A = 0.3, 0.7, 2.0
    fis = FISLoss(coef=c, temperature=T, right_asymptote=A, normalize="none", distance="w1")
    pooled = torch.cat(refs).numpy()
    d = torch.tensor([scipy.stats.wasserstein_distance(r.numpy(), pooled) for r in refs], dtype=torch.float32)
    w_ind = torch.softmax(losses / T, 0) * A
    w_grp = torch.softmax(d[g] / T, 0) * A
    expect = (((1 - c) * w_ind + c * w_grp) * losses).mean()
    assert float(fis(losses, g, refs)) == pytest.approx(float(expect), rel=1e-5)
    # the default normalisation only rescales by N
    fis_b = FISLoss(coef=c, temperature=T, right_asymptote=A, normalize="batch", distance="w1")
    assert float(fis_b(losses, g, refs)) == pytest.approx(12 * float(expect), rel=1e-5)


@pytest.mark.parametrize("coef", [0.0, 0.5, 1.0])
def test_fis_upweights_the_worse_group(coef):
    """Group 2's losses are higher and far from the pooled distribution: its samples get more weight."""
    rng = np.random.default_rng(2)
    g = torch.tensor(np.repeat([0, 1, 2], [40, 40, 20]))
    losses = torch.tensor(np.where(g.numpy() == 2, rng.uniform(1.0, 2.0, 100), rng.uniform(0.1, 0.5, 100)),
                          dtype=torch.float32)
    w = FISLoss(coef=coef).weights(losses, g)
    mean_w = [float(w[g == k].mean()) for k in range(3)]
    assert mean_w[2] > 1.0 > min(mean_w[0], mean_w[1])
    assert mean_w[2] > max(mean_w[0], mean_w[1])
    assert float(w.sum()) == pytest.approx(100.0, rel=1e-5)  # normalised: mean weight 1


def test_fis_gradient_flows_and_weights_detached_by_default():
    losses = torch.rand(8, requires_grad=True)
    g = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    fis = FISLoss()
    w = fis.weights(losses, g)
    assert not w.requires_grad
    fis(losses, g).backward()
    assert torch.allclose(losses.grad, w / 8)  # d/dℓ of mean(w·ℓ) with constant weights
    attached = FISLoss(detach_weights=False)
    assert attached.weights(losses, g).requires_grad


def test_binary_kd_zero_at_teacher_and_matches_kl():
    t = torch.randn(5, 3)
    assert torch.allclose(binary_kd(t.clone(), t, tau=1.5), torch.zeros(5), atol=1e-6)
    s = torch.randn(5, 3, requires_grad=True)
    tau = 2.0
    p, q = torch.sigmoid(t / tau), torch.sigmoid(s / tau)
    kl = p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))
    out = binary_kd(s, t, tau)
    assert torch.allclose(out, kl.mean(1), atol=1e-5)
    out.sum().backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()
    # per pixel for segmentation outputs
    assert binary_kd(torch.zeros(2, 2, 4, 4), torch.ones(2, 2, 4, 4)).shape == (2,)
