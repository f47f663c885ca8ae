"""In-domain supervised pretraining targets (view, sex, age) and their masked loss."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from cxrdistill.pretraining.methods.supervised_meta import META_TASKS, SupervisedMeta, meta_loss, meta_targets


def table():
    return pd.DataFrame({
        "view": ["PA", "AP", "LATERAL", None, "PA"],
        "frontal": [True, True, False, None, None],
        "sex": ["M", "F", None, "F", "M"],
        "age": [50.0, 70.0, np.nan, 60.0, 40.0],
    })


def test_meta_targets_from_cohort_columns():
    y = meta_targets(table(), META_TASKS, {"age_mean": 60.0, "age_std": 10.0})
    exp = np.array([[1, 0, 1, -1.0],
                    [1, 1, 0, 1.0],
                    [0, np.nan, np.nan, np.nan],  # a lateral has no AP/PA; unknown sex and age
                    [np.nan, np.nan, 0, 0.0],  # nothing about the view is known
                    [1, 0, 1, -2.0]], dtype=np.float32)  # frontal from the PA view when the column is blank
    np.testing.assert_array_equal(y, exp)
    assert meta_targets(table(), ["sex", "age"]).shape == (5, 2)
    from cxrdistill.errors import CxrError

    with pytest.raises(CxrError):
        meta_targets(table(), ["race"])


def test_unknown_targets_are_masked():
    torch.manual_seed(0)
    t = torch.from_numpy(meta_targets(table(), META_TASKS, {"age_mean": 60.0, "age_std": 10.0}))
    out = torch.randn(5, 4, requires_grad=True)
    loss, logs = meta_loss(out, t)
    loss.backward()
    known = ~torch.isnan(t)
    # the gradient is exactly zero wherever the target is unknown …
    assert torch.all(out.grad[~known] == 0) and torch.all(out.grad[known] != 0)
    # … and the loss is the mean over known entries only, task by task
    o = out.detach()
    manual = 0.0
    for k, name in enumerate(META_TASKS):
        m = known[:, k]
        f = F.smooth_l1_loss if name == "age" else F.binary_cross_entropy_with_logits
        manual += float(f(o[m, k], t[m, k]))
        assert logs[f"{name}_loss"] == pytest.approx(float(f(o[m, k], t[m, k])), rel=1e-6)
    assert float(loss.detach()) == pytest.approx(manual, rel=1e-6)
    # changing a prediction where the target is unknown changes nothing
    o2 = o.clone()
    o2[~known] = 1e3
    assert float(meta_loss(o2, t)[0]) == pytest.approx(float(loss.detach()), rel=1e-6)


def test_weights_and_all_unknown_batch():
    t = torch.full((3, 4), float("nan"))
    out = torch.randn(3, 4, requires_grad=True)
    loss, logs = meta_loss(out, t)
    loss.backward()  # still differentiable (zero), no NaN
    assert float(loss.detach()) == 0.0 and logs == {} and torch.all(out.grad == 0)
    t = torch.from_numpy(meta_targets(table(), META_TASKS, {"age_mean": 60.0, "age_std": 10.0}))
    out = torch.randn(5, 4)
    base, logs = meta_loss(out, t)
    w, _ = meta_loss(out, t, weights={"age": 3.0})
    assert float(w - base) == pytest.approx(2.0 * logs["age_loss"], rel=1e-5)


def test_supervised_meta_method_trains_and_validates():
    from cxrdistill.models.network import CxrNet

    torch.manual_seed(0)
    model = CxrNet("resnet10t", num_classes=4)
    t = torch.from_numpy(meta_targets(table(), META_TASKS, {"age_mean": 60.0, "age_std": 10.0}))
    batch = {"x": torch.randn(5, 1, 32, 32), "y": t}
    m = SupervisedMeta(age_std=10.0)
    loss, logs = m.training_step(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and "age_loss" in logs
    model.eval()
    with torch.no_grad():
        res = m.validate(model, [batch])
    assert {"val_loss", "val_sex_auc", "val_ap_pa_auc", "val_age_mae"} <= set(res)
    assert res["val_age_mae"] > 0
