"""Each method's defining behaviour, and one contract suite run over every registered fairness method."""
import inspect
import math

import numpy as np
import pytest
import torch
from fairness_helpers import D, fast_cfg, head, make_data

from cxrdistill.fairness import FAIR_METHODS
from cxrdistill.fairness.freeze import freeze
from cxrdistill.fairness.methods.fairdi import FairDi
from cxrdistill.fairness.methods.groupdro import GroupDRO
from cxrdistill.fairness.methods.resample import Resample
from cxrdistill.fairness.methods.swad import SWAD, LossValley, recompute_bn
from cxrdistill.losses.binary_kd import binary_kd
from cxrdistill.losses.classification import MaskedBCE
from cxrdistill.losses.fis import FISLoss
from cxrdistill.training.method import METHODS
from cxrdistill.training.trainer import Trainer


# ----------------------------------------------------------------------------------------------------- GroupDRO
def test_groupdro_update_is_the_exponentiated_gradient_step():
    m = GroupDRO(step_size=0.1, adjustment=2.0, n_groups=2)
    m.q = torch.tensor([0.5, 0.5], dtype=torch.float64)
    m.group_counts = np.array([100, 25])
    m.update_q(torch.tensor([0.2, 0.9]))
    raw = np.array([0.5, 0.5]) * np.exp(0.1 * (np.array([0.2, 0.9]) + 2.0 / np.sqrt([100, 25])))
    assert np.allclose(m.q.numpy(), raw / raw.sum())


def test_groupdro_q_moves_toward_the_worst_group():
    """The minority's inputs carry no information about its (random) labels — an irreducible loss of ln 2 while the
    majority's loss falls: q must move to the minority."""
    from cxrdistill.training.data import ArrayDataset

    def data(n, seed):
        d = make_data(n, seed)
        x, y, g = d.arrays["x"].clone(), d.arrays["y"].clone(), d.arrays["g"]
        rng = np.random.default_rng(seed + 10)
        x[g == 1] = 0.0
        y[g == 1] = torch.from_numpy((rng.random((int((g == 1).sum()), 2)) < 0.5).astype(np.float32))
        return ArrayDataset(x=x, y=y, g=g)

    torch.manual_seed(0)
    m = GroupDRO(step_size=0.2)
    res = m.fit(head(), data(320, 0), data(96, 1), fast_cfg(epochs=4))
    assert m.q[1] > 0.6 > 0.4 > m.q[0]
    q1 = [h["train_q1"] for h in res.history]
    assert q1 == sorted(q1) and q1[0] > 0.5  # rises every epoch
    assert "q" in m.state_dict() and torch.equal(m.state_dict()["q"], m.q)


def test_resampling_balances_groups():
    data = make_data(600, 3, minority=0.1)
    counts = {}
    for name, meth in (("erm", FAIR_METHODS.create("erm")), ("resample", Resample())):
        tr = Trainer(head(), meth, data, None, fast_cfg())
        order = tr._epoch_indices(0).numpy()
        counts[name] = np.bincount(data.arrays["g"].numpy()[order], minlength=2) / len(order)
    assert abs(counts["resample"][1] - 0.5) < 0.07
    assert counts["erm"][1] < 0.15


# ----------------------------------------------------------------------------------------------------- SWAD
def _window_by_definition(losses, ns, ne, r):
    """Cha et al.'s t_s / t_e, written out offline."""
    n = len(losses)
    ts = next((i for i in range(n - ns + 1) if losses[i] <= min(losses[i + 1:i + ns], default=math.inf)), None)
    if ts is None:
        return [n - 1]
    thr = (1 + r) * np.mean(losses[ts:ts + ns])
    te = next((i for i in range(ts + 1, n - ne + 1) if min(losses[i:i + ne]) > thr), n)
    ok = [i for i in range(ts, te) if any(losses[j] <= thr for j in range(i, te))]
    return ok


@pytest.mark.parametrize("seed", range(40))
def test_loss_valley_matches_the_definition(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 25))
    losses = list(np.round(rng.uniform(0.5, 2.0, n) + np.linspace(1.0, 0, n) * rng.uniform(0, 2), 1))
    ns, ne, r = int(rng.integers(1, 4)), int(rng.integers(1, 5)), float(rng.choice([0.0, 0.1, 0.3]))
    v = LossValley(ns, ne, r)
    for i, loss in enumerate(losses):
        v.add({"sum": [torch.tensor([float(i)])], "count": 1, "start": i, "end": i, "loss": loss})
    got = v.included if v.converged else [v.n_segments - 1]
    assert got == _window_by_definition(losses, ns, ne, r), (losses, ns, ne, r)


class _ScriptedSWAD(SWAD):
    """SWAD whose segment losses follow a script (so the window is known) and which records every step's weights."""

    def __init__(self, script, **kw):
        super().__init__(**kw)
        self.script, self.snaps = list(script), {}

    def on_step_end(self, step, trainer):
        self.snaps[step] = [p.detach().clone() for p in trainer.model.parameters()]
        super().on_step_end(step, trainer)

    def _close(self, loss):
        super()._close(self.script.pop(0) if self.script else 99.0)


def test_swad_averages_the_window_snapshots_and_recomputes_bn(tiny):
    tr, va = tiny
    # segments of 2 steps; losses: converge at segment 2 (3 ≤ 3.5), threshold 1.3·3.25; segments 5, 6 above → dead
    m = _ScriptedSWAD([5, 4, 3, 3.5, 3.2, 9, 9, 9], n_converge=2, n_tolerance=2, tolerance_ratio=0.3, eval_every=2)
    res = m.fit(head(), tr, va, fast_cfg(epochs=3, lr=2e-2))
    assert res.info["swad_segments"] == [2, 3, 4] and res.info["swad_dead_valley"]
    steps = range(res.info["swad_start_step"], res.info["swad_end_step"] + 1)
    assert list(steps) == [5, 6, 7, 8, 9, 10]
    for p, *snap in zip(res.model.parameters(), *[m.snaps[s] for s in steps]):
        assert torch.allclose(p, torch.stack(snap).mean(0), atol=1e-6)
    # BatchNorm statistics: those torch's update_bn computes for the averaged weights over the training inputs
    ref = head()
    ref.load_state_dict(res.model.state_dict())
    loader = [tr.arrays["x"][i:i + 32] for i in range(0, len(tr), 32)]
    torch.optim.swa_utils.update_bn(loader, ref)
    bn, bn_ref = res.model[1], ref[1]
    assert res.info["bn_recomputed"]
    assert torch.allclose(bn.running_mean, bn_ref.running_mean, atol=1e-5)
    assert torch.allclose(bn.running_var, bn_ref.running_var, atol=1e-5)
    x = tr.arrays["x"]
    with torch.no_grad():
        h = res.model[0](x)
    assert torch.allclose(bn.running_mean, h.mean(0), atol=1e-4)  # a cumulative average over one pass


def test_recompute_bn_without_batchnorm_is_a_no_op(tiny):
    assert recompute_bn(head(bn=False), tiny[0]) is False


# ----------------------------------------------------------------------------------------------------- FairDi
class _Const(torch.nn.Module):
    def __init__(self, v, k=2):
        super().__init__()
        self.v, self.k = float(v), k

    def forward(self, x):
        return torch.full((x.shape[0], self.k), self.v)


def test_fairdi_teacher_assignment_by_group():
    teachers = [_Const(1.0), _Const(-2.0), _Const(5.0)]
    batch = {"x": torch.zeros(4, D), "g": torch.tensor([0, 2, 1, 2])}
    own = FairDi(teachers=teachers).teacher_logits(batch)
    assert own[:, 0].tolist() == [1.0, 5.0, -2.0, 5.0]
    mapped = FairDi(teachers=teachers, assignment=[2, 2, 0]).teacher_logits(batch)
    assert mapped[:, 0].tolist() == [5.0, 1.0, 5.0, 1.0]  # group 0 → teacher 2, group 2 → teacher 0
    mean = FairDi(teachers=teachers, assignment="mean").teacher_logits(batch)
    p = torch.sigmoid(torch.tensor([1.0, -2.0, 5.0])).mean()
    assert torch.allclose(mean, torch.full((4, 2), float(torch.log(p / (1 - p)))), atol=1e-5)


@pytest.mark.parametrize("lam", [0.0, 1.0, 0.95])
def test_fairdi_loss_reduces_to_its_parts(lam):
    torch.manual_seed(0)
    s, t = torch.randn(8, 2), torch.randn(8, 2)
    y = (torch.rand(8, 2) > 0.5).float()
    g = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    tau = 1.5
    m = FairDi(lam=lam, tau=tau, group_batch_size=0, n_groups=2)
    loss, logs = m.objective(s, t, {"y": y, "g": g})
    kd = binary_kd(s, t, tau).mean()
    fis = FISLoss()(MaskedBCE()(s, y, reduction="none"), g)
    expect = {0.0: fis, 1.0: tau ** 2 * kd}.get(lam, lam * tau ** 2 * kd + (1 - lam) * fis)
    assert float(loss) == pytest.approx(float(expect), rel=1e-6)


def test_fairdi_three_steps_and_student_needs_no_attribute(tiny):
    tr, va = tiny
    m = FairDi(teacher_freeze="backbone")
    res = m.fit(head(), tr, va, fast_cfg(epochs=1))
    student = res.model
    # the student is a plain model: forward takes x only, holds no teacher, and never sees g
    assert len(inspect.signature(student.forward).parameters) == 1
    assert sum(p.numel() for p in student.parameters()) == sum(p.numel() for p in head().parameters())
    x = va.arrays["x"]
    with torch.no_grad():
        out = student(x)
    assert out.shape == (len(va), 2) and torch.isfinite(out).all()
    # one teacher per group, fine-tuned on its own group: shared (frozen) backbone, group-specific classifier
    assert [t["fine_tuned"] for t in res.info["teachers"]] == [True, True]
    t0, t1 = m.teachers
    assert torch.equal(t0[0].weight, t1[0].weight) and torch.equal(t0[1].running_mean, t1[1].running_mean)
    assert not torch.equal(t0[3].weight, t1[3].weight)


def test_freeze_specs():
    h = head()
    assert freeze(h, "backbone") == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert [n for n, p in h.named_parameters() if p.requires_grad] == ["3.weight", "3.bias"]
    assert h[1].momentum == 0.0
    h2 = head()
    assert freeze(h2, "3.") == ["3.weight", "3.bias"]
    from cxrdistill.errors import CxrError

    with pytest.raises(CxrError, match="matches no parameter"):
        freeze(head(), "nonexistent.")


# ----------------------------------------------------------------------------------------------------- contract
def _method(name):
    if name == "fairdi":  # the student step on the shared trainer, with two fixed teachers
        teachers = [head(), head()]
        return FairDi(teachers=teachers, group_batch_size=16)
    if name == "fis":
        return FAIR_METHODS.create(name, group_batch_size=16)
    return FAIR_METHODS.create(name)


def _state_equal(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_state_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("name", FAIR_METHODS.names())
def test_contract_every_method(name, tiny, tmp_path):
    """Registered in both registries; one epoch runs with a finite loss; killed after epoch 1 and resumed, it ends
    exactly where an uninterrupted run ends (method state included)."""
    assert f"fair_{name}" in METHODS
    tr, va = tiny
    cfg = fast_cfg(epochs=2, schedule="constant")  # so that a 1-epoch run is the first half of a 2-epoch one
    torch.manual_seed(0)
    m_full = _method(name)
    torch.manual_seed(0)
    t_full = Trainer(head(), m_full, tr, va, cfg, run_dir=tmp_path / "full")
    hist = t_full.fit()
    assert all(math.isfinite(h["train_loss"]) for h in hist)
    assert math.isfinite(hist[-1]["val_loss"]) and "val_worst_auc" in hist[-1]

    torch.manual_seed(0)
    m1 = _method(name)
    torch.manual_seed(0)
    Trainer(head(), m1, tr, va, cfg.model_copy(update={"epochs": 1}), run_dir=tmp_path / "part").fit()
    torch.manual_seed(0)
    m2 = _method(name)
    if name == "fairdi":
        m2.teachers = m1.teachers
    torch.manual_seed(123)  # a different process state: everything must come from the checkpoint
    t2 = Trainer(head(), m2, tr, va, cfg, run_dir=tmp_path / "part")
    t2.fit()
    for a, b in zip(t_full.model.state_dict().values(), t2.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    assert _state_equal(m_full.state_dict(), m2.state_dict())
    info = m2.finalize(t2.model, t2)
    assert isinstance(info, dict)


@pytest.mark.parametrize("name", ["erm", "swad"])
def test_a_remainder_batch_of_one_with_batchnorm(name):
    """33 items in batches of 32: the last training batch (and SWAD's BN pass) has one item."""
    tr, va = make_data(33, 5), make_data(40, 6)
    res = FAIR_METHODS.create(name).fit(head(), tr, va, fast_cfg(epochs=1))
    assert all(math.isfinite(h["train_loss"]) for h in res.history)
    assert res.model[1].training is False  # returned in eval mode


def test_fairdi_student_step_alone_with_teachers_on_other_inputs(tiny):
    """fit_student: per-group teacher heads read the batch's teacher embeddings ``t`` (a black-box teacher's), the
    student reads ``x`` — the building block of fairness-aware distillation."""
    from cxrdistill.training.data import ArrayDataset

    tr, va = tiny

    def with_t(d):
        t = torch.from_numpy(np.random.default_rng(0).normal(size=(len(d), 5)).astype(np.float32))
        return ArrayDataset(**d.arrays, t=t)

    teachers = [torch.nn.Linear(5, 2), torch.nn.Linear(5, 2)]
    m = FairDi(teacher_input="t", lam=1.0, group_batch_size=0)
    res = m.fit_student(head(), teachers, with_t(tr), with_t(va), fast_cfg(epochs=1))
    assert math.isfinite(res.history[0]["train_kd"]) and res.history[0]["train_task"] >= 0
    assert not any(p.requires_grad for t in teachers for p in t.parameters())  # teachers stay fixed


def test_groupdro_keeps_one_q_across_torchrun_ranks(tmp_path):
    """Under torchrun the group losses that move q are summed over all ranks' batches, so both ranks end with the
    same q (each rank sees different samples: without the all-reduce the two q's drift apart)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).parent
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(here / "groupdro_ddp_script.py"),
                    str(tmp_path)], check=True, env=env, timeout=300, capture_output=True)
    q0, q1 = (json.loads((tmp_path / f"q{r}.json").read_text()) for r in (0, 1))
    assert q0 == q1
    assert abs(sum(q0) - 1) < 1e-9 and max(q0) > 0.55  # q moved toward the harder (minority) group
