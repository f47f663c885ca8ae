"""Bias propagation: verdicts on constructed audits, the tests behind them, and pair orientation."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from cxrdistill.errors import InputError
from cxrdistill.evaluation.compare import compare_dirs, se_from, two_proportion_test, z_test
from features_fixtures import make_audit


def _write(tmp_path, name, audit=None, features=None, probes=None):
    d = tmp_path / name
    d.mkdir()
    for fname, obj in (("audit.json", audit), ("features_audit.json", features), ("probes.json", probes)):
        if obj is not None:
            (d / fname).write_text(json.dumps(obj), encoding="utf-8")
    return d


def _verdict(res, model, metric, **where):
    t = res.tidy
    sel = (t["model"] == model) & (t["metric"] == metric)
    for k, v in where.items():
        sel &= t[k] == v
    rows = t[sel]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_verdicts_halved_same_doubled(tmp_path):
    big = dict(se=0.002, n=40000, n_pos=20000)  # TPR gaps use binomial errors: tight with many positives
    dirs = [_write(tmp_path, "teacher", make_audit(0.10, **big)),
            _write(tmp_path, "half", make_audit(0.05, **big)),
            _write(tmp_path, "same", make_audit(0.10, **big)),
            _write(tmp_path, "double", make_audit(0.20, **big))]
    res = compare_dirs(dirs, alpha=0.05, correction="by")
    for metric in ("auc_gap", "auc_diff", "tpr_gap", "tpr_diff"):
        assert _verdict(res, "half", metric)["verdict"] == "reduced", metric
        assert _verdict(res, "same", metric)["verdict"] == "inherited", metric
        assert _verdict(res, "double", metric)["verdict"] == "amplified", metric
    assert res.summary["summary"]["same"]["reduced"] == res.summary["summary"]["same"]["amplified"] == 0
    r = _verdict(res, "half", "auc_gap")
    # the z-test of the two magnitudes with SEs from the group CIs: gap SE = hypot of the two groups' SEs
    se = math.hypot(0.002, 0.002)
    assert r["delta"] == pytest.approx(-0.05)
    assert r["z"] == pytest.approx(-0.05 / math.hypot(se, se), rel=1e-4)  # fixture CIs use 1.96


def test_wide_cis_make_a_halved_gap_inconclusive_not_inherited(tmp_path):
    dirs = [_write(tmp_path, "a", make_audit(0.10, se=0.05)), _write(tmp_path, "b", make_audit(0.05, se=0.05))]
    res = compare_dirs(dirs, names=["teacher", "student"])
    r = _verdict(res, "student", "auc_gap")
    assert r["verdict"] == "inconclusive"
    # the smallest change these errors could have shown (80% power, two-sided 5%): far above the halving
    se_d = math.hypot(math.hypot(0.05, 0.05), math.hypot(0.05, 0.05))
    assert r["mdc"] == pytest.approx((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * se_d, rel=1e-3)
    assert r["mdc"] > 0.05
    assert res.summary["models"] == ["teacher", "student"]


def test_reversed_pair_order_is_aligned(tmp_path):
    a = make_audit(0.10, se=0.002)
    b = make_audit(0.10, se=0.002)
    c = b["tasks"]["pleural_effusion"]["attributes"]["sex"]["comparisons"][0]
    c.update(group_a="M", group_b="F", auc_diff=-0.10, tpr_diff=-0.10, tpr_ci=[-0.11, -0.09])
    res = compare_dirs([_write(tmp_path, "a", a), _write(tmp_path, "b", b)])
    r = _verdict(res, "b", "auc_diff")
    assert (r["group_a"], r["group_b"]) == ("F", "M") and r["value"] == pytest.approx(0.10)
    assert r["verdict"] == "inherited"
    t = _verdict(res, "b", "tpr_diff")
    assert t["ci_low"] == pytest.approx(0.09) and t["ci_high"] == pytest.approx(0.11)


def test_feature_and_probe_rows(tmp_path):
    fa = {"n_tests": 200, "n_significant": 60, "by_attribute": {"sex": {"n_tests": 100, "n_significant": 50}},
          "bias_score": {"value": 0.3, "by_attribute": {"sex": 0.3}}}
    fb = {"n_tests": 180, "n_significant": 9, "by_attribute": {"sex": {"n_tests": 90, "n_significant": 45}},
          "bias_score": {"value": 0.1, "by_attribute": {"sex": 0.1}}}
    pa = {"sex": {"auc": 0.95, "auc_ci": [0.94, 0.96], "n": 1000, "per_class": {}}}
    pb = {"sex": {"auc": 0.80, "auc_ci": [0.78, 0.82], "n": 1000, "per_class": {}}}
    res = compare_dirs([_write(tmp_path, "t", features=fa, probes=pa), _write(tmp_path, "s", features=fb, probes=pb)])
    t = res.tidy
    overall = t[(t["model"] == "s") & (t["metric"] == "n_significant") & t["attribute"].isna()].iloc[0]
    assert overall["verdict"] == "reduced"
    _, z, p = two_proportion_test(60, 200, 9, 180)
    assert overall["z"] == pytest.approx(z) and overall["p"] == pytest.approx(p)
    by_sex = t[(t["model"] == "s") & (t["metric"] == "n_significant") & (t["attribute"] == "sex")].iloc[0]
    assert by_sex["verdict"] == "inconclusive"  # 50% vs 50% of ~100 tests: equal, but not shown equivalent
    bs = t[(t["model"] == "s") & (t["metric"] == "bias_score") & t["attribute"].isna()].iloc[0]
    assert bs["verdict"] is None and bs["value"] == pytest.approx(0.1)  # descriptive only
    pr = _verdict(res, "s", "probe_auc")
    assert pr["verdict"] == "reduced"


def test_two_proportion_test_equals_chi_square():
    _, z, p = two_proportion_test(30, 120, 55, 130)
    chi2, p_ref, _, _ = stats.chi2_contingency([[30, 90], [55, 75]], correction=False)
    assert z ** 2 == pytest.approx(chi2, rel=1e-10) and p == pytest.approx(p_ref, rel=1e-10)


def test_z_test_and_standard_errors():
    d, z, p = z_test(0.10, 0.01, 0.13, 0.02)
    assert d == pytest.approx(0.03) and z == pytest.approx(0.03 / math.hypot(0.01, 0.02))
    assert p == pytest.approx(2 * stats.norm.sf(abs(z)))
    assert se_from({"auc": 0.8, "auc_ci": [0.7804, 0.8196]}, "auc") == pytest.approx(0.01, rel=1e-3)
    assert se_from({"auc": 0.8, "auc_se": 0.02, "auc_ci": [0.0, 1.0]}, "auc") == 0.02
    boot = list(np.random.default_rng(0).normal(0.8, 0.03, 2000))
    assert se_from({"auc": 0.8, "auc_boot": boot}, "auc") == pytest.approx(0.03, rel=0.05)
    # a degenerate CI (zero width, or not containing the estimate) gives no error rather than a wrong one
    assert se_from({"tpr": 0.7, "tpr_ci": [1.0, 1.0]}, "tpr") is None
    assert se_from({"tpr": 0.7, "tpr_ci": [0.8, 0.9]}, "tpr") is None


def test_compare_bad_inputs(tmp_path):
    a = _write(tmp_path, "a", make_audit(0.1))
    with pytest.raises(InputError, match="at least two"):
        compare_dirs([a])
    with pytest.raises(InputError, match="not found"):
        compare_dirs([a, tmp_path / "missing"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds none of"):
        compare_dirs([a, empty])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "audit.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="not valid JSON"):
        compare_dirs([a, bad])
    with pytest.raises(InputError, match="names"):
        compare_dirs([a, a], names=["x"])
    with pytest.raises(InputError, match="unique"):
        compare_dirs([a, a])


def test_no_significant_ks_tests_in_either_model_is_not_proof_of_equivalence(tmp_path):
    """0 of 4 against 0 of 4 significant tests: no change, but far too few tests to call the shares equal."""
    few = {"n_tests": 4, "n_significant": 0, "by_attribute": {}, "bias_score": {"value": 0.0}}
    many = {"n_tests": 4000, "n_significant": 0, "by_attribute": {}, "bias_score": {"value": 0.0}}
    res = compare_dirs([_write(tmp_path, "t", features=few), _write(tmp_path, "s", features=dict(few))])
    r = res.tidy[(res.tidy["model"] == "s") & (res.tidy["metric"] == "n_significant")].iloc[0]
    assert r["verdict"] == "inconclusive" and r["delta_se"] > 0.1
    (tmp_path / "big").mkdir()
    res = compare_dirs([_write(tmp_path / "big", "t", features=many), _write(tmp_path / "big", "s", features=many)])
    r = res.tidy[(res.tidy["model"] == "s") & (res.tidy["metric"] == "n_significant")].iloc[0]
    assert r["verdict"] == "inherited"
