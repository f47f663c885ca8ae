"""Metrics and the vectorized bootstrap, checked against scikit-learn on the same (re)samples."""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from cxrdistill.evaluation import bootstrap as bs
from cxrdistill.evaluation.audit import run_audit, subgroup_summary
from cxrdistill.evaluation.metrics import binary_metrics, metrics_table, task_metrics


def _sk_operating_point(y, p, target=0.2):
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    j = int(np.argmin(np.abs(fpr - target)))
    return thr[j], tpr[j], fpr[j]


@pytest.mark.parametrize("decimals", [None, 1, 0])  # continuous scores, and heavy ties
def test_point_metrics_equal_sklearn(decimals):
    rng = np.random.default_rng(5)
    y = rng.binomial(1, 0.3, 800)
    p = rng.normal(size=800) + y
    if decimals is not None:
        p = np.round(p, decimals)
    m = binary_metrics(y, p, target_fpr=0.2)
    assert abs(m["auc"] - roc_auc_score(y, p)) < 1e-12
    assert abs(m["auc_pr"] - average_precision_score(y, p)) < 1e-12
    fpr, tpr, _ = roc_curve(y, p)
    assert abs(m["max_youden"] - (tpr - fpr).max()) < 1e-12
    thr, t, f = _sk_operating_point(y, p)
    assert (m["threshold"], m["tpr"], m["fpr"]) == (thr, t, f)
    assert m["youden"] == pytest.approx(t - f)


def test_bootstrap_replicates_equal_sklearn_on_explicit_resamples():
    """Each replicate's count row, expanded into an explicit resample, gives sklearn's numbers."""
    rng = np.random.default_rng(11)
    for trial in range(12):
        n = int(rng.integers(30, 250))
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        p = np.round(rng.normal(size=n) + y, int(rng.integers(0, 3)))
        r = bs.Ranked.from_scores(y, p)
        W = np.concatenate(list(bs.stratified_counts(r.y, 6, rng)))
        assert (W.sum(axis=1) == n).all() and (W[:, r.y == 1].sum(axis=1) == r.n_pos).all()  # stratified
        c = r.curves(W)
        k = bs.threshold_index(c, 0.2)
        tpr, fpr = bs.rates_at(c, k)
        auc, ap, thr = bs.auc_from_curves(c), bs.average_precision_from_curves(c), bs.threshold_value(r, k)
        ys, ps = r.y, r.values[r.block_id - 1]
        for b in range(W.shape[0]):
            idx = np.repeat(np.arange(n), W[b])
            assert abs(auc[b] - roc_auc_score(ys[idx], ps[idx])) < 1e-12
            assert abs(ap[b] - average_precision_score(ys[idx], ps[idx])) < 1e-12
            assert (thr[b], tpr[b], fpr[b]) == _sk_operating_point(ys[idx], ps[idx])


def _table(n_per=400, seed=0):
    rng = np.random.default_rng(seed)
    race = rng.choice(["White", "Black", "Asian"], 3 * n_per, p=[0.5, 0.3, 0.2])
    sex = rng.choice(["F", "M"], race.size)
    y = rng.binomial(1, 0.3, race.size)
    p = rng.normal(size=race.size) + y * np.where(race == "Black", 0.8, 1.3)
    return pd.DataFrame({"image_id": [f"im{i}" for i in range(race.size)], "race": race, "sex": sex,
                         "age": rng.uniform(18, 95, race.size), "y_effusion": y, "p_effusion": p})


def test_group_aucs_and_global_threshold():
    df = _table()
    res = run_audit(df, ["race", "sex"], n_boot=200, seed=1)
    t = res.to_json()["tasks"]["effusion"]
    y, p = df["y_effusion"].to_numpy(), df["p_effusion"].to_numpy()
    # overall FPR at the one global threshold is the target (continuous scores: within one negative)
    thr = t["threshold"]
    neg = y == 0
    assert abs((p[neg] >= thr).mean() - 0.2) <= 1.0 / neg.sum()
    assert t["overall"]["fpr"] == pytest.approx((p[neg] >= thr).mean())
    for a in ("race", "sex"):
        for g, d in t["attributes"][a]["groups"].items():
            m = (df[a] == g).to_numpy()
            assert abs(d["auc"] - roc_auc_score(y[m], p[m])) < 1e-9
            # group TPR / FPR are taken at the global threshold, not a per-group one
            assert d["tpr"] == pytest.approx((p[m & ~neg] >= thr).mean(), abs=1e-12)
            assert d["fpr"] == pytest.approx((p[m & neg] >= thr).mean(), abs=1e-12)
            assert d["auc_ci"][0] <= d["auc"] <= d["auc_ci"][1]
        aucs = np.array([d["auc"] for d in t["attributes"][a]["groups"].values()])
        A = t["attributes"][a]
        assert A["auc_gap"] == pytest.approx(aucs.max() - aucs.min())
        assert A["worst_group_auc"] == pytest.approx(aucs.min())
        assert A["psd"] == pytest.approx(aucs.std())
        assert A["es_auc"] == pytest.approx(t["overall"]["auc"] / (1 + np.abs(t["overall"]["auc"] - aucs).sum()))
    bg = res.by_group
    assert list(bg.columns[:10]) == ["task", "attribute", "group", "metric", "value", "ci_low", "ci_high", "n",
                                     "n_pos", "reason"]
    assert len(bg[(bg.attribute == "race") & (bg.metric == "auc")]) == 3


def test_task_metrics_and_table():
    df = _table(200, seed=3)
    out = task_metrics(df["y_effusion"], df["p_effusion"], n_boot=300, seed=0)
    for m in ("auc", "auc_pr", "max_youden", "tpr", "youden"):
        assert out[f"{m}_ci"][0] <= out[m] <= out[f"{m}_ci"][1]
    tab = metrics_table(df, n_boot=100)
    assert set(tab["metric"]) == {"auc", "auc_pr", "max_youden", "threshold", "tpr", "fpr", "youden"}
    assert list(tab.columns) == ["task", "metric", "value", "ci_low", "ci_high", "n", "n_pos", "reason"]
    one = task_metrics(np.zeros(30), np.random.default_rng(0).random(30), n_boot=10)
    assert one["auc"] is None and "one class" in one["reason"]


def test_subgroup_summary_matches_sklearn():
    df = _table(150, seed=4)
    y, p, g = df["y_effusion"].to_numpy(), df["p_effusion"].to_numpy(), df["race"].to_numpy().astype(object)
    g[:5] = None
    s = subgroup_summary(y, p, g)
    aucs = {k: roc_auc_score(y[g == k], p[g == k]) for k in ("Asian", "Black", "White")}
    assert s["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    for k, v in aucs.items():
        assert s["group_aucs"][k] == pytest.approx(v, abs=1e-12)
    assert s["auc_gap"] == pytest.approx(max(aucs.values()) - min(aucs.values()))
    assert s["worst_group_auc"] == pytest.approx(min(aucs.values()))
