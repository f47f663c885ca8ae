"""Benchmark + calibration of the feature-space audit and the attribute probes, side by side in one run:

- KS false alarms on null embeddings (raw rate ≈ α; after BY far below α);
- null coverage of the probe AUC's 95% CI (the CV-aware error of ``probes._interval``);
- the vectorized bootstrap AUC (``probes.weighted_auc``) against a loop of ``sklearn.metrics.roc_auc_score`` with
  ``sample_weight`` (same numbers, measured speed-up — the reason it is hand-written);
- wall time of ``audit_embeddings`` and ``probe_attributes`` on a realistic size.
"""
from __future__ import annotations

import time


def _meta(n: int, seed: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "patient_id": [f"p{k // 2}" for k in range(n)],
                         "sex": rng.choice(["F", "M"], n), "race": rng.choice(["Asian", "Black", "White"], n),
                         "age": rng.uniform(18, 95, n)})


def run(quick: bool = False) -> list[dict]:
    import warnings

    import numpy as np
    from sklearn.metrics import roc_auc_score

    from cxrdistill.evaluation.features import audit_embeddings
    from cxrdistill.evaluation.probes import bootstrap_weights, probe_attributes, weighted_auc

    rows = []
    # 1. KS false alarms on null data
    n, d = (600, 64) if quick else (2000, 256)
    rng = np.random.default_rng(0)
    meta = _meta(n, 0)
    res = audit_embeddings(rng.normal(size=(n, d)), meta, attributes=["sex", "race", "age"], tsne=False)
    p = res.tests["p"].to_numpy()
    rows.append({"name": "KS raw false-alarm rate on null embeddings", "value": round(float((p < 0.05).mean()), 4),
                 "unit": "fraction", "goal": "≈ 0.05", "note": f"{p.size} tests, {n} images × {d} dims"})
    rows.append({"name": "KS significant after BY on null embeddings", "value": res.summary["n_significant"],
                 "unit": "tests", "goal": f"≤ {0.05 * p.size:.0f} (α·n_tests)", "note": f"of {p.size}"})

    # 2. probe CI coverage under the null
    reps = 10 if quick else 40
    cover, total = 0, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in range(reps):
            r = np.random.default_rng(100 + s)
            m = _meta(400, 100 + s)
            out = probe_attributes(r.normal(size=(400, 32)), m, ["sex", "race"], folds=5, seed=s, n_boot=300)
            for a in ("sex", "race"):
                lo, hi = out[a]["auc_ci"]
                cover += lo <= 0.5 <= hi
                total += 1
    rows.append({"name": "probe 95% CI covers 0.5 on null embeddings", "value": round(cover / total, 3),
                 "unit": "fraction", "goal": "≥ 0.85 (nominal 0.95; the CV-aware SE is approximate)",
                 "note": f"{total} probes, 400 images × 32 dims, 5-fold CV × 5 repeats"})

    # 3. vectorized bootstrap AUC vs a loop over sklearn
    n, B = (5000, 200) if quick else (20000, 1000)
    y = rng.integers(0, 2, n)
    s = rng.normal(size=n) + y
    W = bootstrap_weights(y, B, np.random.default_rng(1))
    t0 = time.perf_counter()
    ours = weighted_auc(s, y, W)
    t_ours = time.perf_counter() - t0
    k = min(B, 100)
    t0 = time.perf_counter()
    ref = np.array([roc_auc_score(y, s, sample_weight=w) for w in W[:k]])
    t_ref = (time.perf_counter() - t0) * B / k
    rows.append({"name": "bootstrap AUC: weighted_auc vs sklearn loop", "value": round(t_ref / t_ours, 1),
                 "unit": "× faster", "goal": "> 1 with equal values",
                 "note": f"{n} scores × {B} resamples; max |diff| {np.abs(ours[:k] - ref).max():.1e}; "
                         f"ours {t_ours:.2f} s, sklearn {t_ref:.2f} s (timed on {k}, scaled)"})

    # 4. wall time at a realistic size
    n, d = (1000, 256) if quick else (5000, 768)
    meta = _meta(n, 2)
    X = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.05
    t0 = time.perf_counter()
    res = audit_embeddings(X, meta, attributes=["sex", "race", "age"], tsne=False)
    rows.append({"name": "audit_embeddings wall time", "value": round(time.perf_counter() - t0, 2), "unit": "s",
                 "goal": "interactive (< 60 s)", "note": f"{n} × {d}, PCA 0.99 → {res.summary['pca']['n_components']}"
                                                         f" modes, {res.summary['n_tests']} KS tests, no t-SNE"})
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe_attributes(X, meta, ["sex", "race", "age"], groups=meta["patient_id"], n_boot=1000)
    rows.append({"name": "probe_attributes wall time", "value": round(time.perf_counter() - t0, 2), "unit": "s",
                 "goal": "interactive (< 120 s)", "note": f"{n} × {d}, 3 attributes, 5 folds × 5 repeats, 1000 boot"})
    return rows


if __name__ == "__main__":
    for row in run(quick=True):
        print(row)
