"""Fine-tuning: from a pretrained checkpoint, under every label policy, with auxiliary heads; loss curves saved."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cxrdistill.pretraining.config import PretrainFinetuneConfig
from cxrdistill.pretraining.finetune import finetune, targets_for
from cxrdistill.pretraining.methods.finetune_aux import AuxNet, FinetuneAux

from pretraining_helpers import BACKBONE, TASKS, TINY_TRAIN


def test_checkpoint_from_pretrain_starts_a_finetune(tiny_cohort, pretrained_ckpt, tmp_path):
    from cxrdistill.models.network import load_model

    df, images = tiny_cohort
    cfg = {"init": f"checkpoint:{pretrained_ckpt}", "backbone": BACKBONE, "tasks": TASKS, "label_policy": "u-ones",
           "aux": True, "n_boot": 50, "train": {**TINY_TRAIN, "epochs": 2}}
    res = finetune(cfg, df, images, tmp_path / "ft")
    assert res["init_kind"] == "checkpoint" and res["source"] == "pretrain"
    assert res["label_policy"] == "u-ones:" + ",".join(TASKS)
    hist = json.loads((tmp_path / "ft" / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in hist)  # both loss curves
    assert all("train_aux_loss" in h and "val_aux_loss" in h for h in hist)
    assert (tmp_path / "ft" / "loss_curves.png").stat().st_size > 1000
    model, meta = load_model(tmp_path / "ft" / "model.safetensors")  # the classifier, without the aux head
    assert meta["finetune"]["tasks"] == TASKS and model.head.out_features == len(TASKS)
    pred = pd.read_parquet(tmp_path / "ft" / "predictions" / "test.parquet")
    assert len(pred) == 24 and {f"p_{t}" for t in TASKS} <= set(pred.columns)
    assert {f"ytrue_{t}" for t in TASKS} <= set(pred.columns)  # synthetic ground truth scored too
    metrics = pd.read_csv(tmp_path / "ft" / "metrics" / "test.csv")
    assert set(metrics["labels"]) == {"observed", "true"}
    # an identical finished run is reused, not retrained
    mtime = (tmp_path / "ft" / "model.safetensors").stat().st_mtime_ns
    again = finetune(cfg, df, images, tmp_path / "ft")
    assert again["observed"] == res["observed"]
    assert (tmp_path / "ft" / "model.safetensors").stat().st_mtime_ns == mtime
    from cxrdistill.errors import InputError

    with pytest.raises(InputError, match="another configuration"):
        finetune({**cfg, "aux_weight": 0.5}, df, images, tmp_path / "ft")


def raw_table():
    return pd.DataFrame({"edema": [1.0, 0.0, -1.0, np.nan, -1.0],
                         "atelectasis": [-1.0, 1.0, 0.0, -1.0, np.nan]})


@pytest.mark.parametrize("policy,edema_u,atel_u", [
    ("u-ignore", np.nan, np.nan), ("u-zeros", 0.0, 0.0), ("u-ones", 1.0, 1.0),
    ("u-ones:edema;u-zeros:*", 1.0, 0.0), ({"edema": "u-zeros", "*": "u-ones"}, 0.0, 1.0),
])
def test_every_label_policy_changes_training_targets(policy, edema_u, atel_u):
    df = raw_table()
    cfg = PretrainFinetuneConfig(label_policy=policy)
    y, yev = targets_for(cfg, df, ["edema", "atelectasis"])
    raw = df.to_numpy()
    np.testing.assert_array_equal(y[raw == 1], 1.0)
    np.testing.assert_array_equal(y[raw == 0], 0.0)
    np.testing.assert_array_equal(y[np.isnan(raw)], 0.0)  # blank = not mentioned = negative by default
    np.testing.assert_array_equal(y[raw[:, 0] == -1, 0], edema_u)
    np.testing.assert_array_equal(y[raw[:, 1] == -1, 1], atel_u)
    # the scoring labels do not depend on the training policy (U-Ignore by default)
    assert np.isnan(yev[raw == -1]).all() and (yev[np.isnan(raw)] == 0).all()
    y_ign, _ = targets_for(PretrainFinetuneConfig(label_policy=policy, blank="ignore"), df, ["edema", "atelectasis"])
    assert np.isnan(y_ign[np.isnan(raw)]).all()


def test_aux_heads_contribute_to_the_loss():
    from cxrdistill.models.network import CxrNet

    torch.manual_seed(0)
    net = CxrNet("resnet10t", num_classes=2)
    model = AuxNet(net, 4)
    batch = {"x": torch.randn(6, 1, 32, 32), "y": torch.tensor([[1.0, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]]),
             "m": torch.tensor([[1, 0, 1, 0.5], [1, 1, 0, -1], [1, 0, float("nan"), 0], [1, 1, 1, 1],
                                [1, 0, 0, float("nan")], [1, 1, 1, -0.5]])}
    plain, logs0 = FinetuneAux().training_step(model, batch)
    assert set(logs0) == {"task_loss"} and float(plain.detach()) == pytest.approx(logs0["task_loss"], rel=1e-6)
    model.zero_grad()
    with_aux, logs = FinetuneAux(["frontal", "ap_pa", "sex", "age"], aux_weight=0.5).training_step(model, batch)
    assert float(with_aux.detach()) == pytest.approx(logs["task_loss"] + 0.5 * logs["aux_loss"], rel=1e-5)
    assert logs["aux_loss"] > 0 and logs["task_loss"] == pytest.approx(logs0["task_loss"], rel=1e-6)
    with_aux.backward()
    assert model.aux_head.weight.grad.abs().sum() > 0  # the auxiliary head is trained …
    g_aux = net.backbone.conv1[0].weight.grad.clone()
    model.zero_grad()
    FinetuneAux().training_step(model, batch)[0].backward()
    assert not torch.allclose(g_aux, net.backbone.conv1[0].weight.grad)  # … and changes the backbone's gradient
    from cxrdistill.losses.classification import MaskedBCE

    model.eval()
    with torch.no_grad():
        v = FinetuneAux(["frontal", "ap_pa", "sex", "age"], aux_weight=0.5).validate(model, [batch])
        task_only = float(MaskedBCE()(model(batch["x"])["logits"], batch["y"]))
    assert v["val_loss"] == pytest.approx(task_only, rel=1e-5)  # validation loss = the pathology loss alone
    assert "val_aux_loss" in v and "val_auc" in v
