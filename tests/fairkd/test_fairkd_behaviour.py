"""Each objective's defining behaviour, checked on small vector problems (fast) and against library references."""
from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from cxrdistill.fairkd import FAIR_KD
from cxrdistill.fairkd.adversarial import dann_lambda, grad_reverse
from cxrdistill.fairkd.heads import fit_group_heads, fit_logistic, fold_standardization
from cxrdistill.fairkd.mmd import equalized_odds_penalty, mmd2
from cxrdistill.losses.kd import build_kd_loss
from cxrdistill.training.data import ArrayDataset
from cxrdistill.training.methods.distill import Distill, DistillModel
from cxrdistill.training.trainer import Trainer

from fairkd_helpers import VecStudent, fast_cfg, vector_toy


# ------------------------------------------------------------------------------------------------ heads
def test_fit_logistic_equals_sklearn():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    Y = np.stack([(X @ rng.normal(size=5) + rng.normal(size=300) > 0) for _ in range(3)], 1).astype(float)
    Y[rng.random(Y.shape) < 0.1] = np.nan  # unknown labels are ignored, per task
    l2 = 0.05
    W, b = fit_logistic(X, Y, l2=l2)
    for k in range(3):
        ok = np.isfinite(Y[:, k])
        ref = LogisticRegression(C=1.0 / (l2 * ok.sum()), tol=1e-10, max_iter=10_000).fit(X[ok], Y[ok, k])
        np.testing.assert_allclose(W[k], ref.coef_[0], atol=2e-4)
        np.testing.assert_allclose(b[k], ref.intercept_[0], atol=2e-4)


def test_fold_standardization_and_group_heads():
    rng = np.random.default_rng(1)
    n = 600
    g = (rng.random(n) < 0.3).astype(np.int64)
    T = rng.normal(size=(n, 4)) * [1, 2, 3, 4] + [5, -1, 0, 2]
    # the label follows dim 0 in group 0 and dim 1 in group 1: the pooled head under-serves group 1
    z = np.where(g == 1, (T[:, 1] + 1) / 2, T[:, 0] - 5)
    Y = (z + 0.3 * rng.normal(size=n) > 0).astype(float)[:, None]
    (Wp, bp), heads, notes = fit_group_heads(T, Y, g, 2, l2=1e-3, group_l2=1e-3)
    mu, sd = T.mean(0), T.std(0)
    Wz, bz = fit_logistic((T - mu) / sd, Y, l2=1e-3)
    Wr, br = fold_standardization(Wz, bz, mu, sd)
    np.testing.assert_allclose(T @ Wr.T + br, ((T - mu) / sd) @ Wz.T + bz, atol=1e-9)
    np.testing.assert_allclose(T @ Wp.T + bp, T @ Wr.T + br, atol=1e-6)
    m1 = g == 1
    auc_pooled = roc_auc_score(Y[m1, 0], (T[m1] @ Wp.T + bp)[:, 0])
    auc_own = roc_auc_score(Y[m1, 0], (T[m1] @ heads[1][0].T + heads[1][1])[:, 0])
    assert auc_own > auc_pooled + 0.1
    assert notes[1]["own_tasks"] == 1


# ------------------------------------------------------------------------------------------------ balanced
def test_balanced_sampling_and_reweighting_equalise_groups():
    d = vector_toy(400, 0)
    g = d["g"].copy()
    g[:300] = 0  # 3:1 imbalance or more
    data = ArrayDataset(x=d["x"], t=d["t"], y=d["y"], g=g)
    model = DistillModel(VecStudent(6, 9), build_kd_loss("mse", dim=9), (9,))
    m = FAIR_KD.create("balanced")
    tr = Trainer(model, m, data, None, fast_cfg(batch_size=400))
    order = tr._epoch_indices(0).numpy()
    share = np.bincount(g[order], minlength=2) / len(order)
    assert abs(share[1] - 0.5) < 0.08, share  # drawn equally often, although group 1 is < 25% of the data
    r = FAIR_KD.create("balanced", mode="reweight")
    Trainer(model, r, data, None, fast_cfg())
    w = r.group_weights(torch.as_tensor(g)).numpy()
    np.testing.assert_allclose([w[g == 0].sum(), w[g == 1].sum()], [len(g) / 2, len(g) / 2], rtol=1e-5)
    assert r.sample_weights(data) is None


# ------------------------------------------------------------------------------------------------ adversarial
def test_gradient_reversal_and_dann_schedule():
    x = torch.randn(5, 3, requires_grad=True)
    y = grad_reverse(x, 0.7)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.7 * torch.arange(3.0).expand(5, 3))
    assert dann_lambda(0.0) == 0.0
    assert math.isclose(dann_lambda(1.0), 2 / (1 + math.exp(-10)) - 1)
    assert dann_lambda(0.5) < dann_lambda(0.8) < 1.0


def _attr_probe_auc(model, d):
    with torch.no_grad():
        e = model.student(torch.from_numpy(d["x"]))["embedding"].numpy()
    half = len(e) // 2
    clf = LogisticRegression(max_iter=2000).fit(e[:half], d["g"][:half])
    return roc_auc_score(d["g"][half:], clf.decision_function(e[half:]))


def _train_vec(method, d, epochs=40, seed=0, head=False):
    torch.manual_seed(seed)
    model = DistillModel(VecStudent(6, 9), build_kd_loss("mse", dim=9), (9,))
    data = ArrayDataset(x=d["x"], t=d["t"], y=d["y"], g=d["g"])
    Trainer(model, method, data, None, fast_cfg(epochs=epochs, batch_size=64, lr=1e-2, seed=seed)).fit()
    return model.eval()


def test_adversary_removes_the_attribute_from_the_embedding():
    """The input carries the group strongly and the teacher's embedding weakly: plain KD's embedding lets a fresh
    probe recover the group; the adversarial student's does not (near chance)."""
    d = vector_toy(512, 3)
    plain = _attr_probe_auc(_train_vec(Distill(), d, epochs=20), d)
    adv = _attr_probe_auc(_train_vec(FAIR_KD.create("adversarial", hidden=32), d, epochs=20), d)
    assert plain > 0.85
    assert adv < 0.6, (plain, adv)


# ------------------------------------------------------------------------------------------------ mmd
def test_mmd2_matches_its_definition():
    """Gretton et al. 2012: the V-statistic (diagonal included) and the unbiased U-statistic (Lemma 6)."""
    rng = np.random.default_rng(0)
    a, b = rng.random(7), rng.random(11) * 0.5
    bw = (0.1, 0.3)

    def k(u, v):
        return sum(np.exp(-(u[:, None] - v[None, :]) ** 2 / (2 * s * s)) for s in bw)

    def off(m):
        n = len(m)
        return (m.sum() - np.trace(m)) / (n * (n - 1))

    biased = k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean()
    unbiased = off(k(a, a)) + off(k(b, b)) - 2 * k(a, b).mean()
    ta, tb = torch.as_tensor(a), torch.as_tensor(b)
    assert math.isclose(float(mmd2(ta, tb, bw, unbiased=False)), biased, rel_tol=1e-9)
    assert unbiased > 0 and math.isclose(float(mmd2(ta, tb, bw)), unbiased, rel_tol=1e-9)
    assert float(mmd2(ta, ta, bw)) == 0.0 and float(mmd2(ta, ta, bw, unbiased=False)) < 1e-12


def test_equalized_odds_penalty_is_zero_when_groups_match_and_gradient_reduces_it():
    y = torch.tensor([[0.0], [0.0], [1.0], [1.0], [0.0], [0.0], [1.0], [1.0], [float("nan")]])
    g = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])
    s = torch.tensor([[0.1], [0.2], [0.8], [0.9], [0.1], [0.2], [0.8], [0.9], [0.5]])
    for kind in ("moments", "mmd"):  # same scores per class in both groups (the unknown label is ignored)
        assert float(equalized_odds_penalty(s, y, g, kind=kind)) == 0.0
    shifted = s.clone()
    shifted[g == 1] -= 0.3  # group 1 under-scored at every label: an equalized-odds violation
    shifted.requires_grad_(True)
    pen = equalized_odds_penalty(shifted, y, g)
    assert float(pen.detach()) > 0.01
    pen.backward()
    step = shifted - 0.5 * shifted.grad
    assert float(equalized_odds_penalty(step.detach(), y, g)) < float(pen.detach())
    # kernel MMD needs more than two scores per group and class to see the shift
    rng = np.random.default_rng(0)
    yy = torch.as_tensor((rng.random(200) < 0.5).astype(np.float32))[:, None]
    gg = torch.as_tensor((rng.random(200) < 0.5).astype(np.int64))
    ss = torch.as_tensor(0.3 + 0.4 * yy.numpy() + 0.05 * rng.normal(size=(200, 1)), dtype=torch.float32)
    assert float(equalized_odds_penalty(ss, yy, gg, kind="mmd")) < 2e-3
    assert float(equalized_odds_penalty(ss - 0.2 * gg[:, None], yy, gg, kind="mmd")) > 0.05


def test_mmd_objective_narrows_the_class_conditional_score_gap():
    """Labels are under-called in group 1 (label bias): the head learns lower scores for group 1 at equal truth;
    the penalty pulls the two groups' class-conditional score distributions together."""
    d = vector_toy(512, 5)
    y = d["y"].copy()
    rng = np.random.default_rng(0)
    y[(d["g"] == 1) & (y[:, 0] == 1) & (rng.random(len(y)) < 0.6), 0] = 0.0
    d = {**d, "y": y}

    def gap(method):
        m = _train_vec(method, d, epochs=30)
        with torch.no_grad():
            s = torch.sigmoid(m.student(torch.from_numpy(d["x"]))["logits"]).numpy()[:, 0]
        return abs(s[(d["g"] == 1) & (y[:, 0] == 0)].mean() - s[(d["g"] == 0) & (y[:, 0] == 0)].mean()) + \
            abs(s[(d["g"] == 1) & (y[:, 0] == 1)].mean() - s[(d["g"] == 0) & (y[:, 0] == 1)].mean())

    no_pen = gap(FAIR_KD.create("mmd", weight=0.0))
    pen = gap(FAIR_KD.create("mmd", weight=20.0))
    assert pen < 0.6 * no_pen, (no_pen, pen)


# ------------------------------------------------------------------------------------------------ fairdi
def test_fairdi_teaches_each_sample_with_its_own_groups_head():
    d = vector_toy(400, 7)
    m = FAIR_KD.create("fairdi", group_l2=1e-3)
    model = DistillModel(VecStudent(6, 9), build_kd_loss("mse", dim=9), (9,), t_mean=d["t"].mean(0),
                         t_std=d["t"].std(0))
    data = ArrayDataset(x=d["x"], t=d["t"], y=d["y"], g=d["g"])
    Trainer(model, m, data, None, fast_cfg())
    batch = data.get_batch(torch.arange(40))
    got = m.inner.teacher_logits(batch).numpy()
    heads = m.teacher_head_logits(d["t"][:40])  # (G, N, K)
    want = heads[d["g"][:40], np.arange(40)]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(heads[0], heads[1], atol=1e-3)
    # the student's head starts as the pooled teacher head read through the standardised embedding
    (Wp, bp), _, _ = fit_group_heads(d["t"], d["y"], d["g"], 2, l2=m.head_l2, group_l2=m.group_l2)
    t = torch.from_numpy(d["t"][:40])
    e = (t - model.t_mean) / model.t_std
    with torch.no_grad():
        np.testing.assert_allclose(model.student.head(e).numpy(), d["t"][:40] @ Wp.T + bp, atol=1e-3)


def test_fairdi_unlabelled_pool_images_get_the_logit_kd_only():
    from cxrdistill.losses.binary_kd import binary_kd

    d = vector_toy(200, 8)
    y = d["y"].copy()
    y[150:] = np.nan  # an unlabelled distillation pool
    m = FAIR_KD.create("fairdi")
    model = DistillModel(VecStudent(6, 9), build_kd_loss("mse", dim=9), (9,))
    data = ArrayDataset(x=d["x"], t=d["t"], y=y, g=d["g"])
    Trainer(model, m, data, None, fast_cfg())
    pool = data.get_batch(torch.arange(150, 200))
    loss, logs = m.training_step(model, pool)
    out = model(pool["x"], t=pool["t"])
    kd = binary_kd(out["logits"], m.inner.teacher_logits(pool), m.tau).mean()
    want = out["kd_loss"] + m.logit_weight * m.lam * m.tau ** 2 * kd
    assert torch.allclose(loss, want, atol=1e-6) and logs["task"] == 0.0
    mixed = data.get_batch(torch.arange(120, 180))
    loss2, logs2 = m.training_step(model, mixed)
    assert torch.isfinite(loss2) and logs2["task"] > 0
