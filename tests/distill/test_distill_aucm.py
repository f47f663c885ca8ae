"""The AUC-margin loss against LibAUC's definition (Optimization-AI/LibAUC, libauc/losses/auc.py, class AUCMLoss,
version 'v1'; Yuan et al., ICCV 2021), reproduced numerically on fixed inputs."""
import numpy as np
import pytest
import torch
from scipy.optimize import minimize, minimize_scalar

from cxrdistill.losses.aucm import AUCMLoss, aucm_objective
from cxrdistill.losses.classification import CLS_LOSSES


def libauc_aucm_v1(y_pred, y_true, a, b, alpha, p, margin):
    """Transcription of LibAUC's ``AUCMLoss.forward`` (version 'v1'), libauc/losses/auc.py @ 19d091b:

        loss = (1-self.p)*torch.mean((y_pred - self.a)**2*(1==y_true).float()) + \\
                self.p*torch.mean((y_pred - self.b)**2*(0==y_true).float())   + \\
                2*self.alpha*(self.p*(1-self.p)*self.margin + \\
                torch.mean((self.p*y_pred*(0==y_true).float() - (1-self.p)*y_pred*(1==y_true).float())) )- \\
                self.p*(1-self.p)*self.alpha**2
    """
    return ((1 - p) * torch.mean((y_pred - a) ** 2 * (1 == y_true).float())
            + p * torch.mean((y_pred - b) ** 2 * (0 == y_true).float())
            + 2 * alpha * (p * (1 - p) * margin
                           + torch.mean((p * y_pred * (0 == y_true).float() - (1 - p) * y_pred * (1 == y_true).float())))
            - p * (1 - p) * alpha ** 2)


def _inputs(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 1, generator=g, dtype=torch.float64)
    y = (torch.rand(n, 1, generator=g) < 0.35).double()
    y[0], y[1] = 1.0, 0.0
    return logits, y


def test_registered():
    assert isinstance(CLS_LOSSES.create("aucm"), AUCMLoss)


def test_objective_is_libauc_v1_formula():
    logits, y = _inputs()
    h = torch.sigmoid(logits)
    p = y.mean()
    for a, b, alpha, m in [(0.3, 0.7, 0.5, 1.0), (0.9, 0.1, 0.0, 0.6), (-0.2, 0.4, 2.3, 1.0)]:
        a_, b_, al_ = (torch.tensor([v], dtype=torch.float64) for v in (a, b, alpha))
        ours = aucm_objective(h, y, a_, b_, al_, p, m).mean()
        ref = libauc_aucm_v1(h, y, a, b, alpha, p, m)
        assert float(ours) == pytest.approx(float(ref), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_loss_is_the_saddle_value_of_libauc_objective(margin):
    """min over (a, b), max over α ≥ 0 of LibAUC's objective, found numerically, equals our loss."""
    logits, y = _inputs(seed=1)
    h = torch.sigmoid(logits)
    p = float(y.mean())

    def inner(ab):
        f = lambda al: -float(libauc_aucm_v1(h, y, ab[0], ab[1], al, p, margin))  # noqa: E731
        return -minimize_scalar(f, bounds=(0.0, 10.0), method="bounded", options={"xatol": 1e-10}).fun

    res = minimize(inner, x0=np.array([0.5, 0.5]), method="Nelder-Mead",
                   options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 4000})
    ours = AUCMLoss(margin=margin)(logits, y)
    assert float(ours) == pytest.approx(res.fun, abs=1e-8)


def test_gradient_is_libauc_partial_gradient_at_the_saddle_point():
    """Danskin: d loss / d logits equals LibAUC's gradient with a, b, α held at their optimum."""
    logits, y = _inputs(seed=2)
    loss_fn = AUCMLoss()
    x1 = logits.clone().requires_grad_()
    loss_fn(x1, y).backward()
    h = torch.sigmoid(logits)
    a, b, alpha, p = loss_fn.saddle_point(h, y)
    x2 = logits.clone().requires_grad_()
    libauc_aucm_v1(torch.sigmoid(x2), y, float(a), float(b), float(alpha), float(p), 1.0).backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-12)


def test_multilabel_ignores_nan_and_one_class_labels():
    logits, y = _inputs(seed=3)
    y2 = torch.cat([y, y.clone(), torch.zeros_like(y)], 1)
    y2[:5, 1] = float("nan")
    lg = logits.repeat(1, 3)
    loss = AUCMLoss()(lg, y2)
    per = [AUCMLoss()(lg[:, :1], y2[:, :1]), AUCMLoss()(lg[5:, 1:2], y2[5:, 1:2])]
    # the one-class third label contributes 0 (p(1 − p) = 0), as in LibAUC
    assert float(loss) == pytest.approx(float(sum(per) + 0.0) / 3, rel=1e-9)
    assert torch.isfinite(AUCMLoss()(lg, y2, reduction="none")).all()


def test_probe_trains_with_aucm():
    from cxrdistill.training.data import ArrayDataset
    from cxrdistill.training.methods.probe import Probe
    from cxrdistill.training.trainer import Trainer, TrainConfig

    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 2))

    def data(n, seed):
        r = np.random.default_rng(seed)
        x = r.normal(size=(n, 16)).astype(np.float32)
        return ArrayDataset(x=x, y=(x @ w + r.normal(size=(n, 2)) > 1.0).astype(np.float32))

    cfg = TrainConfig(epochs=6, batch_size=64, lr=0.1, progress=False)
    hist = Trainer(torch.nn.Linear(16, 2), Probe(loss="aucm", monitor="val_auc"), data(512, 1), data(256, 2),
                   cfg).fit()
    assert hist[-1]["val_auc"] > 0.9
