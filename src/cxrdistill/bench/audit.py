"""Benchmark: the audit's vectorized bootstrap against fairlearn's ``MetricFrame(..., n_boot=...)``.

Both compute subgroup AUCs with bootstrap CIs on the same synthetic table, side by side in one run. Ours is the whole
``run_audit`` (AUC, TPR/FPR at a threshold re-chosen per replicate, gaps, DeLong, KS), so the ratio is conservative.
Full mode: 100k rows x 2,000 resamples; fairlearn is timed on fewer resamples and scaled linearly (its cost is one
pandas resample + per-group ``roc_auc_score`` per replicate). Quick mode measures both at the same small size.
"""
from __future__ import annotations

import time


def _data(n: int, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n)
    y = rng.binomial(1, 0.3, n)
    p = rng.normal(size=n) + y * np.where(sex == "F", 1.0, 1.3)
    return pd.DataFrame({"image_id": np.arange(n).astype(str), "sex": sex, "y_finding": y, "p_finding": p})


def run(quick: bool = False) -> list[dict]:
    import numpy as np
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import roc_auc_score

    from cxrdistill.evaluation.audit import run_audit

    n, n_boot, n_boot_fl = (20_000, 100, 100) if quick else (100_000, 2000, 50)
    df = _data(n)
    t0 = time.perf_counter()
    res = run_audit(df, ["sex"], n_boot=n_boot, min_n=1, seed=0)
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    mf = MetricFrame(metrics=roc_auc_score, y_true=df["y_finding"].to_numpy(), y_pred=df["p_finding"].to_numpy(),
                     sensitive_features=df["sex"].to_numpy(), n_boot=n_boot_fl, ci_quantiles=[0.025, 0.975],
                     random_state=0)
    t_fl_measured = time.perf_counter() - t0
    t_fl = t_fl_measured * n_boot / n_boot_fl

    doc = res.to_json()["tasks"]["finding"]
    ours = {"overall": doc["overall"]["auc"], **{g: d["auc"] for g, d in doc["attributes"]["sex"]["groups"].items()}}
    theirs = {"overall": float(mf.overall), **{str(g): float(v) for g, v in mf.by_group.items()}}
    diff = max(abs(ours[k] - theirs[k]) for k in theirs)
    lo, hi = mf.by_group_ci
    ci_diff = max(max(abs(doc["attributes"]["sex"]["groups"][str(g)]["auc_ci"][0] - float(lo[g])),
                      abs(doc["attributes"]["sex"]["groups"][str(g)]["auc_ci"][1] - float(hi[g]))) for g in lo.index)
    size = f"{n:,} rows x {n_boot:,} resamples, 2 groups"
    fl_note = (f"measured at the same size ({n_boot_fl} resamples)" if n_boot_fl == n_boot else
               f"measured on {n_boot_fl} resamples ({t_fl_measured:.1f} s) and scaled linearly to {n_boot:,}")
    return [
        {"name": "audit bootstrap: cxrdistill run_audit", "value": round(t_ours, 3), "unit": "s", "goal": "",
         "note": f"{size}; whole audit (AUC, TPR/FPR at re-chosen threshold, gaps, DeLong, KS)"},
        {"name": "audit bootstrap: fairlearn MetricFrame(roc_auc_score, n_boot)", "value": round(t_fl, 3),
         "unit": "s", "goal": "", "note": f"{size}; AUC only; {fl_note}"},
        {"name": "audit bootstrap speed-up vs fairlearn", "value": round(t_fl / t_ours, 1), "unit": "x",
         "goal": ">= 20x", "note": size + ("" if n_boot_fl == n_boot else "; fairlearn time extrapolated")},
        {"name": "audit AUC point estimates vs fairlearn (max abs diff)", "value": float(f"{diff:.3g}"),
         "unit": "AUC", "goal": "<= 1e-9", "note": "overall and per group"},
        {"name": "audit group AUC CI bounds vs fairlearn (max abs diff)", "value": round(ci_diff, 4), "unit": "AUC",
         "goal": "", "note": "different resamples (ours stratified by group x class): Monte Carlo agreement only"},
    ]


if __name__ == "__main__":
    import sys

    for row in run(quick="--quick" in sys.argv):
        print(row)
