"""Feature-space bias audit (Glocker et al. 2023): do feature columns or the PCA modes of frozen embeddings differ in
distribution between protected groups? Two-sample KS tests per (feature, group pair), one multiple-testing family per
call, PCA to a variance fraction, t-SNE for plots, and a variance-weighted bias score (the share of embedding variance in
modes that differ between groups)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cxrdistill.errors import InputError
from cxrdistill.evaluation.attribute_groups import Comparison, build_comparisons, group_order
from cxrdistill.evaluation.embedding_input import numeric_matrix
from cxrdistill.evaluation.multitest import CORRECTIONS, adjust_pvalues

SIGNIFICANCE_LEVELS: tuple[float, ...] = (0.05, 0.01, 0.001)
MIN_GROUP_N = 5  # smaller groups get p = null with a reason instead of a test

BIAS_SCORE_DEFINITION = (
    "For every test (feature or PCA mode m, group pair c) the level score s = (number of levels L in {levels} with "
    "p_adj < L) / {k}, i.e. 0, 1/3, 2/3 or 1. The score of a pair is sum_m w_m * s(m, c), where w_m is the mode's "
    "explained-variance ratio (share of the total embedding variance; 1/F per feature for plain feature columns). "
    "An attribute's score is the mean over its pairs; the overall score is the mean over attributes. "
    "Range 0 (no mode differs) to the retained variance fraction (every retained mode differs at p_adj < {last}). "
    "Tests that could not run count as 0."
)


@dataclass
class FeatureAuditResult:
    """``summary`` is features_audit.json; the rest feeds plots and reports."""

    summary: dict
    tests: pd.DataFrame
    values: np.ndarray                      # n × F tested values (feature columns or PCA mode scores)
    feature_names: list[str]
    labels: dict[str, pd.Series]            # attribute → group label per row (None = missing)
    explained_variance_ratio: np.ndarray | None = None
    tsne: np.ndarray | None = None          # m × 2
    tsne_rows: np.ndarray | None = None     # rows of ``values`` that the t-SNE points are
    extra: dict = field(default_factory=dict)


def ks_tests(values: np.ndarray, feature_names: list[str], labels: dict[str, pd.Series],
             comparisons: list[Comparison], *, correction: str = "by", alpha: float = 0.05,
             min_n: int = MIN_GROUP_N) -> pd.DataFrame:
    """One row per (feature, comparison): ``scipy.stats.ks_2samp`` (two-sided, method ``auto``) on the non-missing
    values of the two groups, and p-values adjusted over every test of the call together."""
    from scipy.stats import ks_2samp

    if correction not in CORRECTIONS:
        raise InputError(f"unknown correction {correction!r}", hint=f"choose one of {', '.join(CORRECTIONS)}")
    values = np.asarray(values, dtype=np.float64)
    n_feat = values.shape[1]
    finite = np.isfinite(values)
    frames = []
    for c in comparisons:
        lab = labels[c.attribute].to_numpy(dtype=object)
        ma, mb = lab == c.group_a, lab == c.group_b
        na = finite[ma].sum(axis=0)
        nb = finite[mb].sum(axis=0)
        stat = np.full(n_feat, np.nan)
        p = np.full(n_feat, np.nan)
        ok = (na >= min_n) & (nb >= min_n)
        if ok.any():
            xa, xb = values[ma][:, ok], values[mb][:, ok]
            pol = "omit" if not (finite[ma][:, ok].all() and finite[mb][:, ok].all()) else "propagate"
            res = ks_2samp(xa, xb, axis=0, nan_policy=pol)
            stat[ok] = np.atleast_1d(res.statistic)
            p[ok] = np.atleast_1d(res.pvalue)
        reason = np.where(ok, None, f"fewer than {min_n} values in a group").astype(object)
        frames.append(pd.DataFrame({
            "feature": feature_names, "attribute": c.attribute, "group_a": c.group_a, "group_b": c.group_b,
            "n_a": na.astype(int), "n_b": nb.astype(int), "ks_stat": stat, "p": p, "reason": reason,
        }))
    tests = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["feature", "attribute", "group_a", "group_b", "n_a", "n_b", "ks_stat", "p", "reason"])
    tests["p_adj"] = adjust_pvalues(tests["p"].to_numpy(dtype=float), correction)
    tests["significant"] = (tests["p_adj"] < alpha).fillna(False).astype(bool)
    cols = ["feature", "attribute", "group_a", "group_b", "ks_stat", "p", "p_adj", "significant", "n_a", "n_b",
            "reason"]
    return tests[cols]


def level_score(p_adj, levels: tuple[float, ...] = SIGNIFICANCE_LEVELS) -> np.ndarray:
    """Fraction of significance levels passed: 0, 1/k, …, 1 (NaN → 0)."""
    p = np.asarray(p_adj, dtype=float)
    passed = sum((np.nan_to_num(p, nan=1.0) < lv).astype(float) for lv in levels)
    return passed / len(levels)


def bias_score(tests: pd.DataFrame, weights: dict[str, float], *,
               levels: tuple[float, ...] = SIGNIFICANCE_LEVELS, weighting: str = "explained_variance_ratio") -> dict:
    """The variance-weighted bias score: KS outcomes graded by significance level, weighted by each mode's
    explained variance (see ``BIAS_SCORE_DEFINITION``)."""
    t = tests.assign(w=tests["feature"].map(weights).astype(float), s=level_score(tests["p_adj"], levels))
    t["ws"] = t["w"] * t["s"]
    by_pair = t.groupby(["attribute", "group_a", "group_b"], sort=False)["ws"].sum().reset_index()
    by_attr = by_pair.groupby("attribute", sort=False)["ws"].mean()
    return {
        "value": float(by_attr.mean()) if len(by_attr) else None,
        "by_attribute": {str(k): float(v) for k, v in by_attr.items()},
        "by_pair": [{"attribute": r.attribute, "group_a": r.group_a, "group_b": r.group_b, "value": float(r.ws)}
                    for r in by_pair.itertuples(index=False)],
        "levels": list(levels),
        "weighting": weighting,
        "max_possible": float(sum(weights.values())),
        "definition": BIAS_SCORE_DEFINITION.format(levels=list(levels), k=len(levels), last=min(levels)),
    }


def pca_modes(X: np.ndarray, *, variance: float = 0.99, modes: int | None = None, standardize: bool = False,
              seed: int = 0) -> tuple[np.ndarray, dict]:
    """PCA scores of the smallest number of components whose explained variance reaches ``variance``
    (sklearn's fractional ``n_components``), capped at ``modes`` when given."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(X, dtype=np.float64)
    if X.shape[0] < 3:
        raise InputError(f"PCA needs at least 3 images, got {X.shape[0]}")
    bad = ~np.isfinite(X)
    if bad.any():
        r = int(np.argwhere(bad)[0][0])
        raise InputError(f"embeddings contain NaN or inf (first at row {r})", hint="re-extract or drop those images")
    if not 0.0 < variance <= 1.0:
        raise InputError(f"--pca-variance must be in (0, 1], got {variance}")
    if modes is not None and modes < 1:
        raise InputError(f"--modes must be >= 1, got {modes}")
    if standardize:
        X = StandardScaler().fit_transform(X)
    max_k = min(X.shape)
    n_comp: float | int = variance if variance < 1.0 else max_k
    # both solvers are exact; the covariance route is much faster when images far outnumber dimensions
    solver = "covariance_eigh" if X.shape[0] >= 5 * X.shape[1] else "full"
    pca = PCA(n_components=n_comp, svd_solver=solver, random_state=seed)
    Z = pca.fit_transform(X)
    k_var = int(pca.n_components_)
    k = min(k_var, modes) if modes is not None else k_var
    evr = pca.explained_variance_ratio_[:k]
    info = {
        "n_components": int(k),
        "n_components_for_variance": k_var,
        "variance_fraction": float(variance),
        "modes_cap": modes,
        "explained_variance_ratio": [float(v) for v in evr],
        "explained_variance_retained": float(evr.sum()),
        "standardized": bool(standardize),
        "n_images": int(X.shape[0]),
        "n_dims": int(X.shape[1]),
    }
    return Z[:, :k], info


def tsne_embed(Z: np.ndarray, *, max_points: int = 2000, seed: int = 0, max_dims: int = 50):
    """2-D t-SNE (sklearn) of a random subset of at most ``max_points`` rows of the PCA scores."""
    from sklearn.manifold import TSNE

    n = Z.shape[0]
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, max_points), replace=False))
    m = rows.size
    if m < 5:
        return None, None
    perplexity = float(min(30.0, max(2.0, (m - 1) / 3.0)))
    Y = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
             learning_rate="auto").fit_transform(Z[rows, :max_dims])
    return Y, rows


def _summary(tests: pd.DataFrame, comparisons: list[Comparison], correction: str, alpha: float) -> dict:
    recs = []
    for r in tests.itertuples(index=False):
        recs.append({"feature": r.feature, "attribute": r.attribute, "group_a": r.group_a, "group_b": r.group_b,
                     "ks_stat": _f(r.ks_stat), "p": _f(r.p), "p_adj": _f(r.p_adj), "significant": bool(r.significant),
                     "n_a": int(r.n_a), "n_b": int(r.n_b), **({"reason": r.reason} if r.reason else {})})
    n_tests = int(tests["p"].notna().sum())
    by_attr = {}
    for a, g in tests.groupby("attribute", sort=False):
        by_attr[str(a)] = {"n_tests": int(g["p"].notna().sum()), "n_significant": int(g["significant"].sum())}
    return {
        "correction": correction, "alpha": alpha,
        "comparisons": [{"attribute": c.attribute, "group_a": c.group_a, "group_b": c.group_b} for c in comparisons],
        "n_tests": n_tests, "n_tests_not_run": int(tests["p"].isna().sum()),
        "n_significant": int(tests["significant"].sum()),
        "by_attribute": by_attr,
        "tests": recs,
    }


def _f(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def _group_sizes(labels: dict[str, pd.Series]) -> dict:
    out = {}
    for a, s in labels.items():
        counts = s.value_counts(dropna=True)
        out[a] = {g: int(counts[g]) for g in group_order(counts.index)}
    return out


def audit_feature_columns(table: pd.DataFrame, features: list[str], *, attributes: list[str] = (),
                          pairs: list[str] = (), correction: str = "by", alpha: float = 0.05,
                          bins: dict | None = None, min_n: int = MIN_GROUP_N,
                          path: object | None = None) -> FeatureAuditResult:
    """KS audit of numeric columns already in a table (each feature weighs 1/F in the bias score)."""
    if not features:
        raise InputError("no feature columns given", hint="pass --features COL (patterns like 'emb_*' work)")
    table = table.reset_index(drop=True)
    values = numeric_matrix(table, list(features), path)
    comps, labels = build_comparisons(table, list(attributes), list(pairs), bins=bins, path=path)
    tests = ks_tests(values, list(features), labels, comps, correction=correction, alpha=alpha, min_n=min_n)
    summary = {"source": "columns", "n_images": int(len(table)), "features": list(features),
               "group_sizes": _group_sizes(labels), **_summary(tests, comps, correction, alpha)}
    weights = {f: 1.0 / len(features) for f in features}
    summary["bias_score"] = bias_score(tests, weights, weighting="uniform")
    return FeatureAuditResult(summary=summary, tests=tests, values=values, feature_names=list(features),
                              labels=labels)


def audit_embeddings(X: np.ndarray, meta: pd.DataFrame, *, attributes: list[str] = (), pairs: list[str] = (),
                     variance: float = 0.99, modes: int | None = None, standardize: bool = False,
                     correction: str = "by", alpha: float = 0.05, bins: dict | None = None,
                     min_n: int = MIN_GROUP_N, tsne: bool = True, tsne_points: int = 2000, seed: int = 0,
                     path: object | None = None) -> FeatureAuditResult:
    """PCA of the embeddings to ``variance``, KS tests of every retained mode between groups, the bias score,
    and (optionally) a t-SNE of a subset for plots. ``meta`` rows must be aligned with ``X`` rows."""
    meta = meta.reset_index(drop=True)
    if len(meta) != len(X):
        raise InputError(f"{len(meta)} metadata rows for {len(X)} embeddings; align them first")
    comps, labels = build_comparisons(meta, list(attributes), list(pairs), bins=bins, path=path)
    Z, info = pca_modes(X, variance=variance, modes=modes, standardize=standardize, seed=seed)
    names = [f"mode_{i + 1}" for i in range(Z.shape[1])]
    tests = ks_tests(Z, names, labels, comps, correction=correction, alpha=alpha, min_n=min_n)
    evr = np.asarray(info["explained_variance_ratio"])
    summary = {"source": "embeddings", "n_images": int(len(meta)), "pca": info, "group_sizes": _group_sizes(labels),
               **_summary(tests, comps, correction, alpha)}
    summary["bias_score"] = bias_score(tests, dict(zip(names, evr)))
    Y, rows = (tsne_embed(Z, max_points=tsne_points, seed=seed) if tsne else (None, None))
    summary["tsne"] = ({"n_points": int(len(rows)), "seed": seed} if Y is not None else None)
    return FeatureAuditResult(summary=summary, tests=tests, values=Z, feature_names=names, labels=labels,
                              explained_variance_ratio=evr, tsne=Y, tsne_rows=rows)
