"""One contract for every registered fair-distillation objective: a drop-in replacement for plain KD on the same
DistillModel and batches, attribute used in training only, a student whose forward takes x alone, a correct export."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from cxrdistill.errors import CxrError
from cxrdistill.fairkd import FAIR_KD
from cxrdistill.training.method import METHODS
from cxrdistill.training.trainer import Trainer

from fairkd_helpers import distill_model, fast_cfg, image_data

NAMES = FAIR_KD.names()


def test_registry_has_the_four_objectives_also_as_training_methods():
    assert set(NAMES) == {"balanced", "adversarial", "fairdi", "mmd"}
    for n in NAMES:
        assert METHODS.get(f"fairkd_{n}") is FAIR_KD.get(n)


@pytest.mark.parametrize("name", NAMES)
def test_objective_contract(name, tiny_images, tmp_path):
    d = tiny_images
    tr, va = np.arange(64), np.arange(64, 96)
    model = distill_model(d["t"][tr])
    # Distill's own constructor arguments, plus the attribute-related ones
    method = FAIR_KD.create(name, val_probe=False, monitor=None, attribute="sex")
    before = {k: v.clone() for k, v in model.student.state_dict().items()}
    trainer = Trainer(model, method, image_data(d, tr), image_data(d, va), fast_cfg(epochs=2), run_dir=tmp_path)
    hist = trainer.fit()
    assert len(hist) == 2 and np.isfinite(hist[-1]["train_loss"]) and np.isfinite(hist[-1]["val_kd_loss"])
    after = model.student.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after and before[k].is_floating_point())
    # the student is an ordinary network: forward(x) only, no group, no teacher
    st = method.export_student(model) if hasattr(method, "export_student") else model.export_student()
    assert list(inspect.signature(st.forward).parameters) == ["x"]
    x = image_data(d, va).get_batch(np.arange(len(va)))["x"]
    with torch.no_grad():
        out = st.eval()(x)
    assert out["embedding"].shape == (len(va), d["t"].shape[1]) and torch.isfinite(out["embedding"]).all()
    if method.needs_head:
        assert out["logits"].shape == (len(va), 2) and torch.isfinite(out["logits"]).all()
        assert "val_auc" in hist[-1] and "val_auc_gap" in hist[-1]
    else:
        assert "logits" not in out


@pytest.mark.parametrize("name", NAMES)
def test_objective_needs_the_groups(name, tiny_images):
    from cxrdistill.training.inputs import ImageBatches

    d = tiny_images
    rows = np.arange(40)
    data = ImageBatches(d["images"], rows, t=d["t"][rows], y=d["y"][rows])  # no g: no --attribute
    with pytest.raises(CxrError, match="--attribute"):
        Trainer(distill_model(d["t"][rows]), FAIR_KD.create(name), data, None, fast_cfg())


@pytest.mark.parametrize("name", ["fairdi", "mmd"])
def test_score_objectives_need_labels(name, tiny_images):
    from cxrdistill.training.inputs import ImageBatches

    d = tiny_images
    rows = np.arange(40)
    data = ImageBatches(d["images"], rows, t=d["t"][rows], g=d["g"][rows])
    with pytest.raises(CxrError, match="label"):
        Trainer(distill_model(d["t"][rows]), FAIR_KD.create(name), data, None, fast_cfg())


def test_unknown_group_index_is_refused(tiny_images):
    from cxrdistill.training.inputs import ImageBatches

    d = tiny_images
    rows = np.arange(40)
    g = d["g"][rows].copy()
    g[3] = -1  # run_distill codes a missing attribute value as -1
    data = ImageBatches(d["images"], rows, t=d["t"][rows], y=d["y"][rows], g=g)
    with pytest.raises(CxrError, match="unknown"):
        Trainer(distill_model(d["t"][rows]), FAIR_KD.create("balanced"), data, None, fast_cfg())


def test_export_folds_standardisation_into_projector_and_head(tiny_images, tmp_path):
    """The exported student's embedding is in the teacher's units and its head gives the trained logits; the saved
    file rebuilds the same network (head included)."""
    from cxrdistill.models.network import load_model, save_model

    d = tiny_images
    tr = np.arange(64)
    model = distill_model(d["t"][tr])
    method = FAIR_KD.create("mmd")
    Trainer(model, method, image_data(d, tr), None, fast_cfg())
    with torch.no_grad():  # a non-trivial head
        model.student.head.weight.normal_()
        model.student.head.bias.normal_()
    x = image_data(d, tr).get_batch(np.arange(16))["x"]
    model.eval()
    with torch.no_grad():
        ref = model(x)
    st = model.export_student()  # the instance-bound export, what `cxrdistill distill` calls
    with torch.no_grad():
        out = st.eval()(x)
    assert torch.allclose(out["logits"], ref["logits"], atol=1e-4)
    raw = ref["student"] * model.t_std + model.t_mean
    assert torch.allclose(out["embedding"], raw, atol=1e-4)
    save_model(st, tmp_path / "s.safetensors")
    again, _ = load_model(tmp_path / "s.safetensors")
    with torch.no_grad():
        assert torch.allclose(again.eval()(x)["logits"], out["logits"], atol=1e-5)


def test_bad_options_are_clear():
    with pytest.raises(CxrError, match="mode"):
        FAIR_KD.create("balanced", mode="sometimes")
    with pytest.raises(CxrError, match="kind"):
        FAIR_KD.create("mmd", kind="wasserstein")
    with pytest.raises(CxrError, match="head_init"):
        FAIR_KD.create("fairdi", head_init="random")
    with pytest.raises(CxrError, match="unknown fair distillation objective"):
        FAIR_KD.create("fairest")
