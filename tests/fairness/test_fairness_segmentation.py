"""Fair segmentation: Dice against a direct computation, the U-Net, and FairDi with pixel-wise KD end to end."""
import inspect
import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from cxrdistill.cli import main
from cxrdistill.fairness.segmentation import UNet, dice_per_image, group_summary


def test_dice_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    pred = rng.random((5, 2, 8, 8)) > 0.6
    true = rng.random((5, 2, 8, 8)) > 0.5
    true[4, 1] = False
    pred[4, 1] = False  # both empty: Dice 1 by convention
    d = dice_per_image(pred, true)
    for i in range(5):
        for c in range(2):
            if i == 4 and c == 1:
                assert d[i, c] == 1.0
                continue
            p, t = pred[i, c].ravel(), true[i, c].ravel()
            assert d[i, c] == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()))
            assert d[i, c] == pytest.approx(f1_score(t, p))  # Dice is the F1 score of the pixels


def test_group_summary_es_dice():
    s = group_summary(np.array([0.9, 0.8, 0.6, 0.7]), np.array(["a", "a", "b", "b"]), ["a", "b"])
    assert s["groups"] == {"a": pytest.approx(0.85), "b": pytest.approx(0.65)}
    assert s["gap"] == pytest.approx(0.2) and s["worst"] == pytest.approx(0.65)
    assert s["es"] == pytest.approx(0.75 / (1 + 0.1 + 0.1))


def test_unet_shapes_and_plain_forward():
    m = UNet(1, 2, base=4, depth=2)
    assert m(torch.zeros(3, 1, 16, 16)).shape == (3, 2, 16, 16)
    assert len(inspect.signature(m.forward).parameters) == 1


def test_fair_seg_cli_erm_and_fairdi(synth_files, tmp_path):
    cohort, root = synth_files
    out = tmp_path / "seg"
    main(["fair-seg", "--cohort", str(cohort), "--images-root", str(root), "--attribute", "race", "--size", "16",
          "--base", "4", "--method", "erm", "--method", "fairdi", "--seeds", "0", "--epochs", "1",
          "--batch-size", "16", "--cache-dir", str(tmp_path / "cache"), "--set", "fairdi.group_batch_size=4",
          "--out", str(out), "--quiet"])
    js = json.loads((out / "seg.json").read_text())
    assert set(js) == {"erm", "fairdi"}
    for m in js.values():
        assert 0.0 <= m["dice"] <= 1.0 and m["dice_gap"] >= 0 and set(m["group_dice"]) <= {"White", "Black", "Asian"}
    tidy = pd.read_parquet(out / "seg_results.parquet")
    assert set(tidy["task"]) == {"lung", "heart"}
    assert {"dice", "worst_group_dice", "dice_gap", "es_dice", "psd"} <= set(tidy["metric"])
    per_image = pd.read_parquet(out / "dice" / "erm_seed0.parquet")
    overall = tidy[(tidy.method == "erm") & (tidy.task == "lung") & (tidy.group == "(overall)")]["value"].item()
    assert overall == pytest.approx(per_image["dice_lung"].mean())
    info = json.loads((out / "runs" / "fairdi" / "seed0" / "result.json").read_text())
    assert len(info["info"]["teachers"]) >= 2
    assert (out / "seg_pareto.png").stat().st_size > 1000
