"""Attribute probes: planted information is found, none is not invented; AUC machinery equals scikit-learn."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxrdistill.errors import InputError
from cxrdistill.evaluation.probes import bootstrap_weights, probe_attributes, weighted_auc
from features_fixtures import make_meta


def test_weighted_auc_equals_sklearn_with_ties_and_weights():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 12, 300).astype(float)  # many ties
    assert weighted_auc(s, y, np.ones((1, 300)))[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    W = rng.integers(0, 4, size=(5, 300)).astype(float)
    for w, got in zip(W, weighted_auc(s, y, W)):
        assert got == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)


def test_bootstrap_weights_are_stratified_or_clustered():
    rng = np.random.default_rng(1)
    y = np.array([0] * 30 + [1] * 10)
    W = bootstrap_weights(y, 50, rng)
    assert (W[:, y == 0].sum(1) == 30).all() and (W[:, y == 1].sum(1) == 10).all()
    groups = np.repeat(np.arange(20), 2)  # two images per patient
    Wg = bootstrap_weights(y, 50, rng, groups)
    assert (Wg[:, 0::2] == Wg[:, 1::2]).all()  # a patient's images are drawn together
    assert (Wg.sum(1) == 40).all()


def _planted(n=400, seed=0):
    rng = np.random.default_rng(seed)
    meta = make_meta(n, seed)
    X = rng.normal(size=(n, 12))
    X[:, 0] += np.where(meta["sex"] == "M", 3.0, -3.0)            # sex: linearly decodable
    X[:, 1] += (meta["age"].to_numpy() - 55) / 8                   # age: decodable
    meta["coin"] = rng.choice(["heads", "tails"], n)               # independent of X
    return X, meta


def test_planted_attribute_is_decoded_and_random_one_is_chance():
    X, meta = _planted()
    res = probe_attributes(X, meta, ["sex", "coin", "race", "age"], folds=5, seed=0, n_boot=400)
    assert res["sex"]["auc"] > 0.9 and res["sex"]["auc_ci"][0] > 0.85
    lo, hi = res["coin"]["auc_ci"]
    assert abs(res["coin"]["auc"] - 0.5) < 0.1 and lo <= 0.5 <= hi
    assert res["race"]["kind"] == "one-vs-rest macro" and set(res["race"]["per_class"]) == {
        "Asian", "Black or African American", "White"}
    assert res["race"]["auc_ci"][0] <= 0.5 <= res["race"]["auc_ci"][1]
    age = res["age"]
    assert age["bins"] == ["[0,40)", "[40,60)", "[60,80)", "[80,inf)"] and age["auc"] > 0.7
    assert age["regression"]["r2"] > 0.5 and age["regression"]["mae"] < age["regression"]["mae_baseline"]
    assert res["sex"]["chance"] == 0.5 and res["sex"]["n"] == 400


def test_pooled_oof_auc_matches_sklearn_on_the_same_folds():
    """Re-fit the probe by hand with sklearn on the same folds; macro OvR AUC must match to 1e-9."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, meta = _planted(300, 3)
    res = probe_attributes(X, meta, ["race"], folds=4, seed=3, n_boot=0, repeats=1)
    classes = sorted(meta["race"].unique())
    y = meta["race"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    P = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)), X, y,
                          cv=StratifiedKFold(4, shuffle=True, random_state=3), method="predict_proba")
    assert res["race"]["auc"] == pytest.approx(roc_auc_score(y, P, multi_class="ovr"), abs=1e-9)
    assert res["race"]["auc_ci"] is None  # no bootstrap asked


def test_repeated_cv_point_and_error():
    X, meta = _planted(300, 6)
    one = probe_attributes(X, meta, ["race"], folds=4, seed=0, n_boot=300, repeats=1)["race"]
    rep = probe_attributes(X, meta, ["race"], folds=4, seed=0, n_boot=300, repeats=3)["race"]
    assert rep["repeat_aucs"][0] == pytest.approx(one["auc"], abs=1e-12)  # repeat 0 uses the same folds
    assert rep["auc"] == pytest.approx(np.mean(rep["repeat_aucs"]), abs=1e-12)
    assert len(rep["fold_aucs"]) == 12
    # the between-repeat spread is added to the bootstrap error, never subtracted
    assert rep["auc_se"] >= 0.9 * one["auc_se"]
    lo, hi = rep["auc_ci"]
    assert lo < rep["auc"] < hi and hi - lo == pytest.approx(2 * 1.96 * rep["auc_se"], rel=0.35)


def test_patient_groups_keep_a_patient_in_one_fold():
    X, meta = _planted(200, 4)
    res = probe_attributes(X, meta, ["sex"], folds=4, seed=0, groups=meta["patient_id"], n_boot=100)
    assert res["sex"]["grouped_cv"] and res["sex"]["bootstrap"] == "patient clusters"
    assert res["sex"]["auc"] > 0.9


def test_probe_bad_inputs():
    X, meta = _planted(100, 5)
    with pytest.raises(InputError, match="fewer than 2 classes"):
        probe_attributes(X, meta.assign(sex="F"), ["sex"], n_boot=0)
    with pytest.raises(InputError, match="not found"):
        probe_attributes(X, meta, ["ethnicity"], n_boot=0)
    with pytest.raises(InputError, match="metadata rows"):
        probe_attributes(X[:50], meta, ["sex"], n_boot=0)
    with pytest.raises(InputError, match="patients for"):
        probe_attributes(X, meta, ["sex"], folds=5, groups=pd.Series(["p1", "p2"] * 50), n_boot=0)
