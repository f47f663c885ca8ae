"""One contract, every registered KD loss: shapes (N, D) and (N, T, D), a scalar that backpropagates into the student,
lowest (zero where promised) at s = t, finite on edge cases, sample weights, and state that survives a resume."""
import pytest
import torch
import torch.nn.functional as F

from cxrdistill.errors import CxrError
from cxrdistill.losses.kd import KD_LOSSES, build_kd_loss, parse_loss_spec

NAMES = KD_LOSSES.names()
SHAPES = [(8, 16), (8, 4, 16)]
D = 16


def make(name):
    torch.manual_seed(0)
    return KD_LOSSES.create(name, dim=D)


def test_every_expected_loss_is_registered():
    assert set(NAMES) >= {"mse", "mae", "huber", "cosine", "mse_cosine", "mse_cosine_learned", "rkd", "contrastive",
                          "logit_kd"}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", NAMES)
def test_scalar_loss_and_gradient_reaches_student(name, shape):
    g = torch.Generator().manual_seed(1)
    s = torch.randn(shape, generator=g).requires_grad_()
    t = torch.randn(shape, generator=g)
    loss = make(name)(s, t)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", NAMES)
def test_lowest_at_the_optimum(name, shape):
    g = torch.Generator().manual_seed(2)
    t = torch.randn(shape, generator=g)
    loss = make(name).eval()  # eval: no memory-bank update between the two calls
    s = t.clone().requires_grad_()
    at_opt = loss(s, t)
    away = loss(t + 0.5 * torch.randn(shape, generator=g), t)
    assert float(at_opt.detach()) < float(away.detach())
    if loss.zero_at_optimum:
        assert abs(float(at_opt.detach())) < 1e-5
        at_opt.backward()
        assert s.grad.abs().max() < 1e-4  # a minimum: no pull away from the teacher


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", ["batch1", "batch2", "zero_both", "zero_student", "large"])
def test_finite_on_edge_cases(name, case):
    g = torch.Generator().manual_seed(3)
    n = {"batch1": 1, "batch2": 2}.get(case, 6)
    s = torch.randn(n, D, generator=g)
    t = torch.randn(n, D, generator=g)
    if case == "zero_both":
        s, t = torch.zeros(n, D), torch.zeros(n, D)
    elif case == "zero_student":
        s = torch.zeros(n, D)
    elif case == "large":
        s, t = s * 1e4, t * 1e4
    s.requires_grad_()
    loss = make(name)(s, t)
    assert torch.isfinite(loss), f"{name} {case}: {loss}"
    loss.backward()
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_sample_weights(name):
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(6, D, generator=g), torch.randn(6, D, generator=g)
    loss = make(name).eval()
    plain = loss(s, t)
    assert torch.allclose(loss(s, t, torch.ones(6)), plain, atol=1e-6)
    assert torch.allclose(loss(s, t, 3 * torch.ones(6)), plain, atol=1e-6)  # only relative weights matter
    w = torch.tensor([1.0, 0, 0, 0, 0, 0])
    assert torch.allclose(loss(s, t, w), loss.per_sample(s, t)[0], atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_state_survives_a_resume(name):
    g = torch.Generator().manual_seed(5)
    a = make(name).train()
    for _ in range(3):  # training changes the state of stateful losses (e.g. the memory bank)
        a(torch.randn(4, D, generator=g), torch.randn(4, D, generator=g))
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.1)
    b = KD_LOSSES.create(name, dim=D)
    b.load_state_dict(a.state_dict())
    s, t = torch.randn(4, D, generator=g), torch.randn(4, D, generator=g)
    assert torch.allclose(a.eval()(s, t), b.eval()(s, t), atol=1e-6)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(CxrError, match="projector"):
        make("mse")(torch.zeros(2, 8), torch.zeros(2, 9))


def test_unknown_loss_lists_choices():
    with pytest.raises(CxrError, match="mse_cosine"):
        parse_loss_spec("mse=1,nonsense=2")


def test_mix_is_the_weighted_sum():
    g = torch.Generator().manual_seed(6)
    s, t = torch.randn(5, D, generator=g), torch.randn(5, D, generator=g)
    mix = build_kd_loss("mse=1,rkd=0.5", dim=D)
    ref = make("mse")(s, t) + 0.5 * make("rkd")(s, t)
    assert torch.allclose(mix(s, t), ref, atol=1e-6)
    assert parse_loss_spec({"mse": 2}) == {"mse": 2.0}


def test_values_of_simple_losses():
    s, t = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 0.0]])
    assert float(make("mse")(s, t)) == pytest.approx(12.5)
    assert float(make("mae")(s, t)) == pytest.approx(3.5)
    assert float(make("huber")(s, t)) == pytest.approx(float(F.huber_loss(s, t)))
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    assert float(make("cosine")(a, b)) == pytest.approx(1.0)
    assert float(make("mse_cosine")(a, b)) == pytest.approx(2.5 + 1.0)


def _rkd_reference(s, t):
    """RKD as written in the authors' code (github.com/lenscloth/RKD, losses.py): explicit N×N×D differences."""
    def pdist(e):
        sq = e.pow(2).sum(1)
        d = (sq[:, None] + sq[None, :] - 2 * e @ e.T).clamp(min=1e-12).sqrt().clone()
        d[range(len(e)), range(len(e))] = 0
        return d

    def dist_loss(st, te):
        td = pdist(te)
        td = td / td[td > 0].mean()
        d = pdist(st)
        d = d / d[d > 0].mean()
        return F.smooth_l1_loss(d, td)

    def angle_loss(st, te):
        def ang(e):
            dd = e.unsqueeze(0) - e.unsqueeze(1)
            nd = F.normalize(dd, p=2, dim=2)
            return torch.bmm(nd, nd.transpose(1, 2))
        return F.smooth_l1_loss(ang(st), ang(te), reduction="none")

    return dist_loss(s, t), angle_loss(s, t)


def test_rkd_matches_the_authors_formulation():
    g = torch.Generator().manual_seed(7)
    n = 6
    s, t = torch.randn(n, D, generator=g, dtype=torch.float64), torch.randn(n, D, generator=g, dtype=torch.float64)
    ref_d, ref_a = _rkd_reference(s, t)
    # the authors average over all N² pairs and N³ triplets (diagonal terms are 0); ours over distinct ones
    dist_only = KD_LOSSES.create("rkd", distance_weight=1.0, angle_weight=0.0)(s, t)
    assert float(dist_only) == pytest.approx(float(ref_d) * n * n / (n * (n - 1)), rel=1e-6)
    angle_only = KD_LOSSES.create("rkd", distance_weight=0.0, angle_weight=1.0)(s, t)
    # reference tensor is [i, j, k] = angle at... with e_ij = x_j − x_i: vertex i, sides to j and k
    eye = torch.eye(n, dtype=torch.bool)
    valid = ~(eye[:, :, None] | eye[:, None, :])  # j ≠ i and k ≠ i
    assert float(angle_only) == pytest.approx(float(ref_a[valid].mean()), rel=1e-6)


def test_logit_kd_is_soft_bce_minus_entropy():
    from cxrdistill.losses.kd.logit_kd import LogitKD

    g = torch.Generator().manual_seed(8)
    probe = torch.nn.Linear(D, 3)
    loss = LogitKD(dim=D, probe=probe, temperature=2.0)
    s, t = torch.randn(5, D, generator=g), torch.randn(5, D, generator=g)
    zt, zs = probe(t).detach() / 2, probe(s).detach() / 2
    p = torch.sigmoid(zt)
    bce = F.binary_cross_entropy_with_logits(zs, p)
    ent = F.binary_cross_entropy_with_logits(zt, p)
    assert float(loss(s, t)) == pytest.approx(4 * float(bce - ent), rel=1e-5)


def test_contrastive_bank_never_uses_the_anchor_itself_as_negative():
    g = torch.Generator().manual_seed(9)
    t = torch.randn(4, D, generator=g)
    s = torch.randn(4, D, generator=g)
    fresh = make("contrastive").eval()(s, t)
    loss = make("contrastive").train()
    loss(torch.randn(4, D), t)  # the same teacher embeddings enter the bank (an earlier epoch)
    assert int(loss.bank_count) == 4
    assert torch.allclose(loss.eval()(s, t), fresh, atol=1e-6)
