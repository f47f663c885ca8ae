"""The init × policy × aux × seed grid: the table, its bootstrap, the plots, reuse on a re-run."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cxrdistill.pretraining.grid import run_grid, summarize, table_markdown

from pretraining_helpers import BACKBONE, TASKS, TINY_TRAIN


def test_grid_on_tiny_data_writes_table_and_plots(tiny_cohort, timm_file, tmp_path):
    df, images = tiny_cohort
    path, _ = timm_file
    cfg = {"inits": ["random", f"imagenet:{path}", "supervised", "barlow"], "label_policies": ["u-ones"],
           "aux": [False], "seeds": [0], "backbone": BACKBONE, "tasks": TASKS, "pretrain_n": 40,
           "pretrain_epochs": 1, "finetune_epochs": 1, "n_boot": 200,
           "pretrain": {"projector": [32, 32], "train": TINY_TRAIN}, "finetune": {"n_boot": 20, "train": TINY_TRAIN}}
    out = tmp_path / "grid"
    table = run_grid(cfg, df, images, out)
    for f in ("results.parquet", "table.parquet", "table.csv", "table.md", "auc.png", "grid.json",
              "loss_curves_u-ones_aux0.png", "pretrain/supervised.safetensors", "pretrain/barlow.safetensors"):
        assert (out / f).exists(), f
    assert (out / "loss_curves_u-ones_aux0.png").stat().st_size > 1000
    assert len(table) == 4 * 2 * (len(TASKS) + 1)  # 4 inits × (observed, true) × (tasks + mean)
    assert set(table["init"]) == {"random", f"imagenet:{path}", "supervised", "barlow"}
    assert set(table["labels"]) == {"observed", "true"}
    ok = table.dropna(subset=["auc", "ci_low"])
    assert len(ok) >= len(table) - 8
    assert ((ok["ci_low"] <= ok["auc"] + 1e-9) & (ok["auc"] <= ok["ci_high"] + 1e-9)).all()
    means = table[table["task"] == "mean"]
    assert means.loc[means["init"] == "random", "delta_vs_ref"].isna().all()
    assert means.loc[means["init"] != "random", "delta_vs_ref"].notna().all()
    results = pd.read_parquet(out / "results.parquet")  # tidy per-run metrics from metrics_table
    assert {"init", "label_policy", "aux", "seed", "run", "labels", "task", "metric", "value", "ci_low",
            "ci_high"} <= set(results.columns)
    assert results["run"].nunique() == 4
    md = (out / "table.md").read_text()
    assert "Barlow Twins" in md and "in-domain supervised" in md and "(reference)" in md
    info = json.loads((out / "grid.json").read_text())
    assert set(info["pretraining"]) == {"supervised", "barlow"}
    assert info["pretraining"]["barlow"]["multi_instance"] == "patient"
    # a re-run with the same settings reuses every run and pretraining
    stamp = (out / "runs" / "random__u-ones__aux0__s0" / "model.safetensors").stat().st_mtime_ns
    ck = (out / "pretrain" / "barlow.safetensors").stat().st_mtime_ns
    again = run_grid(cfg, df, images, out)
    pd.testing.assert_frame_equal(again, table)
    assert (out / "runs" / "random__u-ones__aux0__s0" / "model.safetensors").stat().st_mtime_ns == stamp
    assert (out / "pretrain" / "barlow.safetensors").stat().st_mtime_ns == ck


def _preds(y, p):
    return pd.DataFrame({"image_id": [f"i{k}" for k in range(len(y))], "y_a": y, "p_a": p})


def test_summary_against_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    n = 120
    y = rng.integers(0, 2, n).astype(float)
    y[:5] = np.nan  # unknown labels are left out
    p0, p1, q = rng.normal(size=n) + y, rng.normal(size=n) + 0.5 * np.nan_to_num(y), rng.normal(size=n)
    runs = [{"init": "random", "label_policy": "u-ones", "aux": False, "seed": s, "run": f"r{s}"} for s in (0, 1)]
    runs += [{"init": "x", "label_policy": "u-ones", "aux": False, "seed": 0, "run": "x0"},
             {"init": "same", "label_policy": "u-ones", "aux": False, "seed": 0, "run": "s0"}]
    preds = {"r0": _preds(y, p0), "r1": _preds(y, p1), "x0": _preds(y, q), "s0": _preds(y, p0)}
    t = summarize(runs, preds, ["a"], n_boot=400, seed=0, reference="random")
    ok = np.isfinite(y)
    a0, a1, ax = (roc_auc_score(y[ok], p[ok]) for p in (p0, p1, q))
    r = t[(t["init"] == "random") & (t["task"] == "a")].iloc[0]
    assert r["auc"] == pytest.approx((a0 + a1) / 2, abs=1e-12) and r["n_seeds"] == 2 and r["n"] == n - 5
    assert r["ci_low"] < r["auc"] < r["ci_high"]
    m = t[(t["init"] == "x") & (t["task"] == "mean")].iloc[0]
    assert m["delta_vs_ref"] == pytest.approx(ax - (a0 + a1) / 2, abs=1e-12)
    assert m["delta_ci_high"] < 0 and m["p_boot"] < 0.05  # a random scorer is clearly worse
    s = t[(t["init"] == "same") & (t["task"] == "mean")].iloc[0]
    assert s["delta_ci_low"] < 0 < s["delta_ci_high"]  # one of the reference's seeds: no difference
    md = table_markdown(t)
    assert "| random | u-ones | off | 2 |" in md
