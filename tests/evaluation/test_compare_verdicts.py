"""Four-word verdicts on planted data: real predictions, real audits (``run_audit``), compared with the paired
bootstrap. An inherited gap at large n is 'inherited', a halved gap 'reduced', and small n 'inconclusive'; the TOST
is checked against an independent computation with scipy."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cxrdistill.evaluation.audit import run_audit
from cxrdistill.evaluation.compare import DEFAULT_MARGIN, compare_dirs, tost_p
from cxrdistill.storage.io import write_json


def _predictions(n: int, seed: int, gaps: dict[str, float], noise_scale: float = 1.0) -> dict[str, pd.DataFrame]:
    """One test set, several models: model m separates positives by 1.6 for F and 1.6 - gaps[m] for M. Models share
    most of their per-image noise (as a student distilled from its teacher does), so a paired test can see more."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n)
    y = rng.integers(0, 2, n)
    shared = rng.normal(size=n)
    out = {}
    for name, gap in gaps.items():
        sep = np.where(sex == "F", 1.6, 1.6 - gap)
        logit = y * sep + shared + 0.3 * noise_scale * rng.normal(size=n)
        out[name] = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "sex": sex, "y_effusion": y,
                                  "p_effusion": 1 / (1 + np.exp(-logit))})
    return out


def _audit_dirs(tmp_path, preds: dict[str, pd.DataFrame], n_boot: int = 300) -> list:
    dirs = []
    for name, df in preds.items():
        d = tmp_path / name
        d.mkdir(parents=True)
        df.to_parquet(d / "predictions.parquet")
        res = run_audit(df, ["sex"], n_boot=n_boot, seed=1, path=d / "predictions.parquet")
        write_json(res.to_json(), d / "audit.json")
        dirs.append(d)
    return dirs


def _row(res, model, metric):
    t = res.tidy
    r = t[(t["model"] == model) & (t["metric"] == metric)]
    assert len(r) == 1
    return r.iloc[0]


def test_large_n_inherited_and_reduced_small_n_inconclusive(tmp_path):
    big = compare_dirs(_audit_dirs(tmp_path / "big", _predictions(12000, 0, {"teacher": 1.0, "same": 1.0,
                                                                              "halved": 0.5})))
    same, halved = _row(big, "same", "auc_gap"), _row(big, "halved", "auc_gap")
    assert same["paired"] and halved["paired"] and big.summary["pairing"]["same"] == "paired bootstrap"
    assert same["verdict"] == "inherited", same.to_dict()
    assert halved["verdict"] == "reduced" and halved["delta"] < -0.02
    assert _row(big, "halved", "auc_diff")["verdict"] == "reduced"

    small = compare_dirs(_audit_dirs(tmp_path / "small", _predictions(100, 1, {"teacher": 1.0, "halved": 0.5})))
    r = _row(small, "halved", "auc_gap")
    assert r["verdict"] == "inconclusive", r.to_dict()
    # inconclusive comes with the smallest change the data could have detected (80% power, two-sided 5%)
    assert r["mdc"] == pytest.approx((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * r["delta_se"])
    assert r["mdc"] > DEFAULT_MARGIN
    doc = small.summary
    assert doc["margin"] == DEFAULT_MARGIN and set(doc["summary"]["halved"]) >= {"reduced", "amplified", "inherited",
                                                                                  "inconclusive"}
    js = next(x for x in doc["rows"] if x["metric"] == "auc_gap")["vs_reference"]["halved"]
    assert js["verdict"] == "inconclusive" and js["paired"] and js["mdc"] == pytest.approx(r["mdc"])

    # pairing matters: without it, the same large-n "inherited" pair has a wider error on its change
    unp = _row(compare_dirs(_audit_dirs(tmp_path / "unp", _predictions(12000, 0, {"teacher": 1.0, "same": 1.0})),
                            paired=False), "same", "auc_gap")
    assert not unp["paired"] and unp["delta_se"] > 2 * same["delta_se"]


def test_paired_error_matches_an_independent_paired_bootstrap(tmp_path):
    from sklearn.metrics import roc_auc_score

    preds = _predictions(1000, 3, {"teacher": 1.0, "student": 0.6})
    res = compare_dirs(_audit_dirs(tmp_path, preds))
    r = _row(res, "student", "auc_gap")
    t, s = preds["teacher"], preds["student"]
    rng = np.random.default_rng(5)
    deltas = []
    strata = [np.flatnonzero((t["sex"] == g).to_numpy() & (t["y_effusion"] == c).to_numpy())
              for g in ("F", "M") for c in (0, 1)]
    for _ in range(200):
        idx = np.concatenate([rng.choice(m, m.size) for m in strata])
        gaps = []
        for df in (t, s):
            sub = df.iloc[idx]
            aucs = [roc_auc_score(sub.loc[sub["sex"] == g, "y_effusion"], sub.loc[sub["sex"] == g, "p_effusion"])
                    for g in ("F", "M")]
            gaps.append(max(aucs) - min(aucs))
        deltas.append(gaps[1] - gaps[0])
    audit_t = json.loads((tmp_path / "teacher" / "audit.json").read_text())
    audit_s = json.loads((tmp_path / "student" / "audit.json").read_text())
    gap = lambda a: a["tasks"]["effusion"]["attributes"]["sex"]["auc_gap"]  # noqa: E731
    assert r["delta"] == pytest.approx(gap(audit_s) - gap(audit_t), abs=1e-9)
    assert r["delta_se"] == pytest.approx(np.std(deltas, ddof=1), rel=0.2)


@pytest.mark.parametrize("delta,se", [(0.0, 0.005), (0.012, 0.004), (-0.015, 0.01), (0.03, 0.002), (0.0, 0.0)])
def test_tost_against_two_one_sided_tests(delta, se):
    m = DEFAULT_MARGIN
    got = tost_p(delta, se, m)
    if se == 0:
        assert got == 0.0
        return
    # two one-sided tests written independently: H0 mu <= -m (reject when delta is large), H0 mu >= m
    p_lower = 1 - stats.norm(loc=-m, scale=se).cdf(delta)
    p_upper = stats.norm(loc=m, scale=se).cdf(delta)
    assert got == pytest.approx(max(p_lower, p_upper), rel=1e-9, abs=1e-15)
    # and the equivalent interval rule: equivalent at 5% exactly when the 90% CI lies within ± m
    lo, hi = stats.norm.interval(0.90, loc=delta, scale=se)
    assert (got < 0.05) == (-m < lo and hi < m)
    assert math.isfinite(got)
