"""DeLong (fast midrank) against the O(m*n) definition and the bootstrap; null calibration; planted gaps; KS."""
import numpy as np
import pandas as pd
from scipy.stats import kstest, ks_2samp, norm

from cxrdistill.evaluation import bootstrap as bs
from cxrdistill.evaluation.audit import run_audit
from cxrdistill.evaluation.delong import delong_paired, delong_unpaired, delong_variance, structural_components


def _naive_components(y, p):
    """DeLong et al. 1988 structural components by their definition: psi(x, y) = 1[x > y] + 1/2 1[x = y]."""
    x, z = p[y == 1], p[y == 0]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
    return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)


def test_fast_components_equal_definition_with_ties():
    rng = np.random.default_rng(0)
    y = rng.binomial(1, 0.4, 300)
    pa = np.round(rng.normal(size=300) + y, 1)
    pb = np.round(rng.normal(size=300) + 0.5 * y + 0.3 * pa, 1)
    aucs, v10, v01 = structural_components(y, np.vstack([pa, pb]))
    for i, p in enumerate((pa, pb)):
        a, n10, n01 = _naive_components(y, p)
        assert abs(aucs[i] - a) < 1e-12
        np.testing.assert_allclose(v10[i], n10, atol=1e-12)
        np.testing.assert_allclose(v01[i], n01, atol=1e-12)
    # paired variance by the definition: S10/m + S01/n with the 2x2 covariance matrices
    _, a10, a01 = _naive_components(y, pa)
    _, b10, b01 = _naive_components(y, pb)
    S = np.cov(np.vstack([a10, b10])) / a10.size + np.cov(np.vstack([a01, b01])) / a01.size
    var = S[0, 0] + S[1, 1] - 2 * S[0, 1]
    res = delong_paired(y, pa, pb)
    assert abs(res.se - np.sqrt(var)) < 1e-12
    assert abs(res.p - 2 * norm.sf(abs(res.diff) / np.sqrt(var))) < 1e-12
    # unpaired: sum of the two independent variances
    g = rng.random(300) < 0.5
    r = delong_unpaired(y[g], pa[g], y[~g], pa[~g])
    va = np.var(_naive_components(y[g], pa[g])[1], ddof=1) / (y[g] == 1).sum() + \
        np.var(_naive_components(y[g], pa[g])[2], ddof=1) / (y[g] == 0).sum()
    vb = np.var(_naive_components(y[~g], pa[~g])[1], ddof=1) / (y[~g] == 1).sum() + \
        np.var(_naive_components(y[~g], pa[~g])[2], ddof=1) / (y[~g] == 0).sum()
    assert abs(r.se - np.sqrt(va + vb)) < 1e-12


def test_delong_variance_matches_bootstrap_variance():
    """Independent check: the label-stratified bootstrap variance of the AUC (and of a paired difference)."""
    rng = np.random.default_rng(1)
    n = 3000
    y = rng.binomial(1, 0.3, n)
    pa = rng.normal(size=n) + 1.0 * y
    pb = 0.6 * pa + rng.normal(size=n) * 0.8 + 0.3 * y
    _, var = delong_variance(y, pa)
    ra, rb = bs.Ranked.from_scores(y, pa), bs.Ranked.from_scores(y, pb)
    da, db = [], []
    for W in bs.stratified_counts(y, 1500, np.random.default_rng(2)):  # counts in original row order
        da.append(bs.auc_from_curves(ra.curves(W[:, ra.order])))
        db.append(bs.auc_from_curves(rb.curves(W[:, rb.order])))
    da, db = np.concatenate(da), np.concatenate(db)
    assert 0.85 < da.var(ddof=1) / var < 1.15
    paired = delong_paired(y, pa, pb)
    assert 0.85 < (da - db).var(ddof=1) / paired.se ** 2 < 1.15
    # pairing matters here: the paired SE is well below the unpaired one
    assert paired.se < 0.8 * np.sqrt(var + delong_variance(y, pb)[1])


def _two_groups(rng, n, d_a, d_b, prev=0.3):
    g = np.repeat(["A", "B"], n)
    y = rng.binomial(1, prev, 2 * n)
    p = rng.normal(size=2 * n) + y * np.where(g == "A", d_a, d_b)
    return pd.DataFrame({"image_id": np.arange(2 * n).astype(str), "grp": g, "y_t": y, "p_t": p})


def test_null_pvalues_uniform_and_false_alarms_at_alpha():
    rng = np.random.default_rng(7)
    auc_p, ks_p = [], []
    for _ in range(200):
        res = run_audit(_two_groups(rng, 120, 1.0, 1.0), ["grp"], n_boot=0, min_n=1)
        c = res.to_json()["tasks"]["t"]["attributes"]["grp"]["comparisons"][0]
        auc_p.append(c["auc_p"])
        ks_p.append(c["ks_p"])
    auc_p, ks_p = np.array(auc_p), np.array(ks_p)
    assert kstest(auc_p, "uniform").pvalue > 0.01
    assert (auc_p < 0.05).mean() <= 0.05 + 0.04
    assert (ks_p < 0.05).mean() <= 0.05 + 0.04


def test_planted_gap_is_flagged():
    # binormal: AUC = Phi(d / sqrt 2): d = 1.19 -> 0.80, d = 0.91 -> 0.74 (gap 0.06), 3,000 per group
    for seed in range(3):
        df = _two_groups(np.random.default_rng(100 + seed), 3000, 1.19, 0.91)
        res = run_audit(df, ["grp"], n_boot=200, seed=seed)
        a = res.to_json()["tasks"]["t"]["attributes"]["grp"]
        c = a["comparisons"][0]
        assert c["auc_diff"] > 0.03
        assert c["auc_significant"] is True and c["auc_p_adj"] < 0.05
        assert c["auc_diff_ci"][0] > 0
        assert a["worst_group"] == "B"


def test_ks_equals_scipy():
    df = _two_groups(np.random.default_rng(3), 200, 1.0, 0.5)
    c = run_audit(df, ["grp"], n_boot=0).to_json()["tasks"]["t"]["attributes"]["grp"]["comparisons"][0]
    a, b = df.loc[df.grp == "A", "p_t"], df.loc[df.grp == "B", "p_t"]
    ref = ks_2samp(a, b)
    assert c["ks_stat"] == ref.statistic and c["ks_p"] == ref.pvalue
