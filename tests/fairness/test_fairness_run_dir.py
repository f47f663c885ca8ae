"""The run directories of a fairness comparison and of its segmentation twin (``runs/<method>/seed<s>/``): a run
that died after its first epoch resumes and ends where an uninterrupted one ends; a finished run is reused; a changed
setting starts that run over (its directory emptied) instead of resuming another configuration's checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cxrdistill.fairness.data import from_arrays
from cxrdistill.fairness.methods.erm import ERM
from cxrdistill.fairness.run import FairRunConfig, run_fair


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 160
    sex = np.where(rng.random(n) < 0.3, "F", "M").astype(object)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] + rng.normal(size=n) * 0.5 > 0).astype(float)
    df = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "patient_id": [f"p{k}" for k in range(n)],
                       "sex": sex, "split": np.array(["train", "train", "val", "test"])[np.arange(n) % 4],
                       "pleural_effusion": y})
    return from_arrays(df, x, ["pleural_effusion"], "sex")


def _cfg(**train):
    return FairRunConfig(methods=["erm"], seeds=[0], head="linear",
                         train={"epochs": 2, "batch_size": 32, "schedule": "constant", **train})


def _preds(out):
    return pd.read_parquet(out / "predictions" / "erm_seed0.parquet")["p_pleural_effusion"].to_numpy()


def test_killed_fair_run_resumes_and_a_changed_setting_starts_over(data, tmp_path, die_once_at_epoch_1):
    run_fair(data, _cfg(), tmp_path / "straight", device="cpu", log=lambda s: None)

    started = die_once_at_epoch_1(ERM)
    out = tmp_path / "killed"
    with pytest.raises(RuntimeError, match="killed"):
        run_fair(data, _cfg(), out, device="cpu", log=lambda s: None)
    rd = out / "runs" / "erm" / "seed0"
    assert (rd / "checkpoints" / "last.pt").exists() and not (rd / "result.json").exists()
    assert json.loads((rd / "run.json").read_text())["inputs"] == {"data": data.fingerprint}

    lines = []
    run_fair(data, _cfg(), out, device="cpu", log=lines.append)
    assert "[fair] erm seed 0: training" in lines
    assert started == [0, 1, 1]  # resumed at epoch 1: epoch 0 was not trained again
    np.testing.assert_allclose(_preds(out), _preds(tmp_path / "straight"), rtol=0, atol=1e-6)

    # finished: reused, nothing retrained
    lines.clear()
    run_fair(data, _cfg(), out, device="cpu", log=lines.append)
    assert any("done before, reusing" in s for s in lines)

    # a changed setting: that run starts over in an emptied directory and equals a straight run of the new setting
    (rd / "stray.txt").write_text("from the earlier configuration")
    run_fair(data, _cfg(lr=0.01), out, device="cpu", log=lambda s: None)
    assert started == [0, 1, 1, 0, 1] and not (rd / "stray.txt").exists()
    run_fair(data, _cfg(lr=0.01), tmp_path / "straight2", device="cpu", log=lambda s: None)
    assert json.loads((rd / "run.json").read_text())["config"]["train"]["lr"] == 0.01
    np.testing.assert_allclose(_preds(out), _preds(tmp_path / "straight2"), rtol=0, atol=1e-6)
    assert not np.allclose(_preds(out), _preds(tmp_path / "straight"))


def test_killed_fair_seg_run_resumes_and_a_changed_setting_starts_over(tmp_path, die_once_at_epoch_1):
    from cxrdistill.fairness.segmentation import run_seg, seg_data_from_arrays

    rng = np.random.default_rng(1)
    n, size = 48, 16
    images = rng.integers(0, 255, size=(n, size, size), dtype=np.uint8)
    masks = (images[:, None] > 128).astype(np.uint8)
    groups = np.where(np.arange(n) % 3 == 0, "F", "M").astype(object)
    frame = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "_group": groups, "_g": (groups == "M") * 1,
                          "_split": np.array(["train", "train", "val", "test"])[np.arange(n) % 4]})
    seg = seg_data_from_arrays(images, masks, frame, ["lung"], "sex", ["F", "M"], [], "fp-seg")

    def dice(out):
        return pd.read_parquet(out / "dice" / "erm_seed0.parquet")["dice_lung"].to_numpy()

    def go(out, **train):
        run_seg(seg, _cfg(**train), out, base=4, depth=2, device="cpu", log=lambda s: None)

    go(tmp_path / "straight")
    started = die_once_at_epoch_1(ERM)
    out = tmp_path / "killed"
    with pytest.raises(RuntimeError, match="killed"):
        go(out)
    rd = out / "runs" / "erm" / "seed0"
    assert (rd / "checkpoints" / "last.pt").exists() and not (rd / "result.json").exists()
    go(out)
    assert started == [0, 1, 1]
    np.testing.assert_allclose(dice(out), dice(tmp_path / "straight"), rtol=0, atol=1e-6)
    (rd / "stray.txt").write_text("from the earlier configuration")
    go(out, lr=0.05)
    assert started == [0, 1, 1, 0, 1] and not (rd / "stray.txt").exists()
    assert json.loads((rd / "run.json").read_text())["config"]["train"]["lr"] == 0.05
