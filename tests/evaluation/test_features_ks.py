"""Feature-space audit: KS tests, multiple-testing correction, PCA, bias score — checked against scipy/sklearn."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cxrdistill.errors import InputError
from cxrdistill.evaluation.attribute_groups import build_comparisons, parse_pair
from cxrdistill.evaluation.features import (audit_embeddings, audit_feature_columns, bias_score, level_score,
                                            pca_modes)
from features_fixtures import make_meta


def _table(n=240, f=6, seed=0, shift=None):
    rng = np.random.default_rng(seed)
    meta = make_meta(n, seed)
    for j in range(f):
        meta[f"feat_{j}"] = rng.normal(size=n)
    if shift is not None:
        meta.loc[meta["sex"] == "M", shift] += 1.0
    return meta


def test_ks_equals_scipy_for_every_test():
    t = _table()
    t.loc[3, "feat_1"] = np.nan  # a missing value is dropped, as scipy's nan_policy="omit"
    res = audit_feature_columns(t, [f"feat_{j}" for j in range(6)], attributes=["sex", "race"], correction="none")
    assert len(res.tests) == 6 * (1 + 3)
    for r in res.tests.itertuples():
        lab = t[r.attribute].astype(str)
        a = t.loc[lab == r.group_a, r.feature].dropna().to_numpy()
        b = t.loc[lab == r.group_b, r.feature].dropna().to_numpy()
        ref = stats.ks_2samp(a, b)
        assert r.ks_stat == pytest.approx(ref.statistic, abs=1e-12)
        assert r.p == pytest.approx(ref.pvalue, rel=1e-10, abs=1e-14)
        assert r.p_adj == r.p  # correction none
        assert (r.n_a, r.n_b) == (a.size, b.size)


@pytest.mark.parametrize("method", ["by", "bh"])
def test_fdr_adjustment_equals_scipy(method):
    t = _table(shift="feat_2")
    res = audit_feature_columns(t, [f"feat_{j}" for j in range(6)], attributes=["sex", "race"], correction=method)
    ref = stats.false_discovery_control(res.tests["p"].to_numpy(), method=method)
    np.testing.assert_allclose(res.tests["p_adj"].to_numpy(), ref, rtol=1e-12)
    assert res.summary["n_significant"] == int((ref < 0.05).sum())


def test_bonferroni_and_family_spans_every_test():
    t = _table()
    res = audit_feature_columns(t, ["feat_0", "feat_1"], attributes=["sex", "race"], correction="bonferroni")
    p = res.tests["p"].to_numpy()
    np.testing.assert_allclose(res.tests["p_adj"], np.minimum(p * p.size, 1.0))
    assert res.summary["n_tests"] == 8


def test_null_data_p_uniform_and_false_alarms_bounded():
    rng = np.random.default_rng(7)
    n, f = 400, 150
    meta = make_meta(n, 3)
    X = pd.DataFrame(rng.normal(size=(n, f)), columns=[f"x{j}" for j in range(f)])
    t = pd.concat([meta, X], axis=1)
    res = audit_feature_columns(t, list(X.columns), attributes=["sex"], correction="by")
    p = res.tests["p"].to_numpy()
    # raw p-values of a true null are ~uniform: KS against U(0,1), and the raw 5% false-alarm rate
    assert stats.kstest(p, "uniform").pvalue > 1e-3
    assert stats.binomtest(int((p < 0.05).sum()), p.size, 0.05).pvalue > 1e-3
    # after BY the number of (false) discoveries stays below alpha * n_tests
    assert res.summary["n_significant"] <= 0.05 * res.summary["n_tests"]


def test_planted_shift_in_one_feature_is_flagged_alone():
    t = _table(n=300, f=8, seed=2, shift="feat_5")
    res = audit_feature_columns(t, [f"feat_{j}" for j in range(8)], attributes=["sex"])
    sig = res.tests[res.tests["significant"]]
    assert list(sig["feature"]) == ["feat_5"]
    assert res.summary["by_attribute"]["sex"] == {"n_tests": 8, "n_significant": 1}


def test_pair_parsing_values_with_spaces_and_only_named_pairs():
    assert parse_pair("race = Black or African American , White") == ("race", "Black or African American", "White")
    meta = make_meta(60, 1)
    comps, labels = build_comparisons(meta, ["sex"], ["race=Black or African American,White"])
    assert [(c.attribute, c.group_a, c.group_b) for c in comps] == [
        ("sex", "F", "M"), ("race", "Black or African American", "White")]
    # x vs y named twice (also reversed, or through --attribute) is one test
    comps, _ = build_comparisons(meta, ["race"], ["race=White,Asian"])
    assert len(comps) == 3
    for bad in ["race", "race=White", "race=White,White", "=a,b", "race=a,b,c"]:
        with pytest.raises(InputError):
            parse_pair(bad)
    with pytest.raises(InputError, match="not found"):
        build_comparisons(meta, [], ["race=Martian,White"])


def test_age_is_binned_like_the_performance_audit():
    meta = make_meta(200, 4)
    comps, labels = build_comparisons(meta, ["age"], [])
    assert set(labels["age"].dropna()) <= {"[0,40)", "[40,60)", "[60,80)", "[80,inf)"}
    assert (comps[0].group_a, comps[0].group_b) == ("[0,40)", "[40,60)")
    comps, labels = build_comparisons(meta, ["age"], [], bins={"age": (0, 50, 200)})
    assert [(c.group_a, c.group_b) for c in comps] == [("[0,50)", "[50,200)")]


def _n_components_by_hand(X, frac):
    Xc = X - X.mean(axis=0)
    s = np.linalg.svd(Xc, compute_uv=False)
    ratio = s ** 2 / (s ** 2).sum()
    return int(np.searchsorted(np.cumsum(ratio), frac) + 1), ratio


@pytest.mark.parametrize("frac", [0.5, 0.9, 0.99])
def test_pca_variance_fraction_picks_the_right_number_of_modes(frac):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 20)) * np.linspace(5, 0.2, 20)  # a decaying spectrum
    Z, info = pca_modes(X, variance=frac)
    k, ratio = _n_components_by_hand(X, frac)
    assert info["n_components"] == k == Z.shape[1]
    np.testing.assert_allclose(info["explained_variance_ratio"], ratio[:k], rtol=1e-8)
    # the fast covariance solver (n >> d) agrees with the SVD too
    Z2, info2 = pca_modes(np.vstack([X] * 10), variance=frac)
    assert info2["n_components"] == k
    # --modes caps the number of tested modes
    _, info3 = pca_modes(X, variance=frac, modes=2)
    assert info3["n_components"] == min(2, k)


def test_bias_score_by_definition():
    tests = pd.DataFrame({
        "feature": ["mode_1", "mode_2", "mode_1", "mode_2"],
        "attribute": ["sex", "sex", "race", "race"],
        "group_a": ["F", "F", "A", "A"], "group_b": ["M", "M", "B", "B"],
        "p_adj": [0.0005, 0.03, 0.2, np.nan],
    })
    np.testing.assert_allclose(level_score(tests["p_adj"]), [1.0, 1 / 3, 0.0, 0.0])
    bs = bias_score(tests, {"mode_1": 0.6, "mode_2": 0.3})
    assert bs["by_attribute"]["sex"] == pytest.approx(0.6 * 1 + 0.3 / 3)
    assert bs["by_attribute"]["race"] == 0.0
    assert bs["value"] == pytest.approx((0.7 + 0.0) / 2)
    assert bs["max_possible"] == pytest.approx(0.9)


def test_embedding_audit_planted_mode_and_bias_score():
    rng = np.random.default_rng(5)
    meta = make_meta(240, 5)
    X = rng.normal(size=(240, 10))
    X[:, 0] *= 4.0  # the dominant direction...
    X[:, 0] += np.where(meta["sex"] == "M", 6.0, 0.0)  # ...carries sex
    res = audit_embeddings(X, meta, attributes=["sex", "race"], variance=0.95, tsne=True, tsne_points=60)
    s = res.summary
    first = res.tests[(res.tests["feature"] == "mode_1") & (res.tests["attribute"] == "sex")].iloc[0]
    assert first["significant"] and first["p_adj"] < 1e-3
    assert s["bias_score"]["by_attribute"]["sex"] >= s["pca"]["explained_variance_ratio"][0] - 1e-12
    assert s["bias_score"]["by_attribute"]["race"] < 0.05
    assert res.tsne.shape == (60, 2) and s["tsne"]["n_points"] == 60


def test_small_groups_are_reported_not_tested():
    t = _table(n=80)
    t.loc[:2, "race"] = "Other"  # 3 images
    res = audit_feature_columns(t, ["feat_0"], attributes=["race"], min_n=5)
    other = res.tests[(res.tests["group_a"] == "Other") | (res.tests["group_b"] == "Other")]
    assert other["p"].isna().all() and other["reason"].str.contains("fewer than 5").all()
    assert not other["significant"].any()
    assert res.summary["n_tests_not_run"] == len(other)


def test_bad_inputs_raise_input_error():
    t = _table()
    with pytest.raises(InputError, match="column 'nope'"):
        audit_feature_columns(t, ["nope"], attributes=["sex"])
    with pytest.raises(InputError, match="not numeric"):
        audit_feature_columns(t, ["race"], attributes=["sex"])
    t1 = t.assign(sex="F")
    with pytest.raises(InputError, match="1 distinct value"):
        audit_feature_columns(t1, ["feat_0"], attributes=["sex"])
    with pytest.raises(InputError, match="attribute column not found"):
        audit_feature_columns(t, ["feat_0"], attributes=["ethnicity"])
    with pytest.raises(InputError, match="nothing to compare"):
        audit_feature_columns(t, ["feat_0"])
    with pytest.raises(InputError):
        audit_feature_columns(t, ["feat_0"], attributes=["sex"], correction="holm")
