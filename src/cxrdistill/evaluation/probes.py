"""Attribute probes: how well sex, race or age can be read from frozen embeddings — how much protected information
a model encodes (as in Glocker et al. 2023 and Gichoya et al. 2022). Cross-validated logistic regression on
standardized features; AUC from the pooled out-of-fold scores with a bootstrap CI."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from cxrdistill.errors import InputError
from cxrdistill.evaluation.attribute_groups import DEFAULT_AGE_BINS, MAX_GROUPS, group_labels, group_order
from cxrdistill.evaluation.resample import bin_labels

_CHUNK = 128  # bootstrap replicates per vectorized block (bounds memory at _CHUNK × n floats)


def weighted_auc(scores: np.ndarray, y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """AUC (Mann–Whitney, ties count 1/2) of ``scores`` for binary ``y`` under each row of sample weights ``W``.

    With integer weights a row is a bootstrap resample, so all replicates share one sort: O(B·n) after it.
    ``W`` of ones gives ``sklearn.metrics.roc_auc_score``.
    """
    scores = np.asarray(scores, dtype=float)
    y = np.asarray(y, dtype=bool)
    W = np.atleast_2d(np.asarray(W, dtype=float))
    order = np.argsort(scores, kind="mergesort")
    s, yy = scores[order], y[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    out = np.empty(W.shape[0])
    for lo in range(0, W.shape[0], _CHUNK):
        w = W[lo:lo + _CHUNK][:, order]
        wp = np.add.reduceat(w * yy, starts, axis=1)
        wn = np.add.reduceat(w * ~yy, starts, axis=1)
        below = np.cumsum(wn, axis=1) - wn
        num = (wp * (below + 0.5 * wn)).sum(axis=1)
        den = wp.sum(axis=1) * wn.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[lo:lo + _CHUNK] = np.where(den > 0, num / den, np.nan)
    return out


def bootstrap_weights(y: np.ndarray, n_boot: int, rng: np.random.Generator,
                      groups: np.ndarray | None = None) -> np.ndarray:
    """Resample counts (n_boot × n): stratified by class, or by whole clusters (patients) when ``groups`` is given,
    so that images of one patient are never treated as independent."""
    n = len(y)
    W = np.zeros((n_boot, n))
    if groups is None:
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            W[:, idx] = _row_counts(rng.integers(0, idx.size, size=(n_boot, idx.size)), idx.size)
        return W
    _, g = np.unique(groups, return_inverse=True)
    n_g = g.max() + 1
    return _row_counts(rng.integers(0, n_g, size=(n_boot, n_g)), n_g)[:, g]


def _row_counts(draws: np.ndarray, m: int) -> np.ndarray:
    """Per-row bincount of a (B × k) array of indices in [0, m), in one call."""
    B = draws.shape[0]
    flat = (draws + (np.arange(B) * m)[:, None]).ravel()
    return np.bincount(flat, minlength=B * m).reshape(B, m).astype(float)


def _interval(point: float, reps: np.ndarray, fit_sd: float | None, level: float = 0.95) -> tuple:
    """(CI, SE) of a cross-validated AUC.

    The bootstrap of the out-of-fold scores (``reps``) holds the fitted probes fixed, so it misses the variability of
    fitting; the spread of the AUC between CV repeats (``fit_sd``) estimates that part. SE = sqrt(SE_boot² + fit_sd²),
    and the percentile interval is widened about the point by SE / SE_boot (kept in [0, 1]). Null simulation
    (400 images, 32 dims, 80 probes, 5 folds): empirical SD of the AUC 0.028, mean SE 0.027 with 5 repeats, 95% CI
    covering 0.5 in 91% of probes (89% with a single CV, whose bootstrap-only SE is 0.025 for an SD of 0.031).
    """
    r = reps[np.isfinite(reps)]
    if r.size < 10:
        return None, None
    a = (1 - level) / 2
    lo, hi = float(np.quantile(r, a)), float(np.quantile(r, 1 - a))
    se_b = float(r.std(ddof=1))
    se = float(np.hypot(se_b, fit_sd or 0.0))
    f = se / se_b if se_b > 0 else 1.0
    return [max(0.0, point - (point - lo) * f), min(1.0, point + (hi - point) * f)], se


def _splitter(y: np.ndarray, folds: int, seed: int, groups: np.ndarray | None):
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if groups is not None:
        n_groups = len(np.unique(groups))
        if n_groups < folds:
            raise InputError(f"{n_groups} patients for {folds} folds", hint="use fewer --folds")
        return StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(
            np.zeros(len(y)), y, groups)
    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)


def _oof_proba(X, y_idx, n_classes, folds, seed, groups, C):
    """Out-of-fold class probabilities (n × K) and per-fold AUCs; a model never scores images it was fitted on."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    P = np.full((len(y_idx), n_classes), np.nan)
    fold_aucs, converged = [], True
    for tr, te in _splitter(y_idx, folds, seed, groups):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(X[tr], y_idx[tr])
        converged &= not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        proba = model.predict_proba(X[te])
        Pf = np.zeros((len(te), n_classes))
        Pf[:, model.classes_] = proba  # a class absent from this training fold keeps probability 0
        P[te] = Pf
        yt = y_idx[te]
        if len(np.unique(yt)) == n_classes:
            fold_aucs.append(float(roc_auc_score(yt, Pf[:, 1]) if n_classes == 2 else
                                   roc_auc_score(yt, Pf, multi_class="ovr", average="macro", labels=range(n_classes))))
    return P, fold_aucs, converged


def _regression(X, v, folds, seed, groups, alpha_ridge=1.0) -> dict:
    """Cross-validated ridge regression of a numeric attribute (age): MAE and R² from out-of-fold predictions,
    against the baseline that predicts the training-fold mean."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import mean_absolute_error, r2_score
    from sklearn.model_selection import GroupKFold, KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pred = np.empty_like(v)
    base = np.empty_like(v)
    cv = (GroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(X, v, groups) if groups is not None
          else KFold(n_splits=folds, shuffle=True, random_state=seed).split(X))
    for tr, te in cv:
        m = make_pipeline(StandardScaler(), Ridge(alpha=alpha_ridge)).fit(X[tr], v[tr])
        pred[te] = m.predict(X[te])
        base[te] = v[tr].mean()
    return {"mae": float(mean_absolute_error(v, pred)), "r2": float(r2_score(v, pred)),
            "mae_baseline": float(mean_absolute_error(v, base)), "n": int(len(v)), "model": "ridge(alpha=1.0)"}


def probe_attribute(X: np.ndarray, labels: pd.Series, *, folds: int = 5, seed: int = 0,
                    groups: np.ndarray | None = None, n_boot: int = 1000, C: float = 1.0, repeats: int = 5,
                    min_class_n: int | None = None, name: str = "attribute") -> dict:
    """Probe one categorical attribute (labels per row, None = missing). Binary → AUC of the second class (in
    ``group_order``); more classes → one-vs-rest macro AUC, plus every class's own AUC.

    The CV is repeated ``repeats`` times with different fold assignments (seeds ``seed``, ``seed + 1``, …); the AUC
    is the mean over repeats of the pooled out-of-fold AUC, and its error combines the bootstrap of the scores with
    the spread between repeats (see ``_interval``).
    """
    from sklearn.metrics import roc_auc_score

    if repeats < 1:
        raise InputError(f"--repeats must be >= 1, got {repeats}")
    lab = pd.Series(labels).reset_index(drop=True)
    keep = lab.notna().to_numpy().copy()
    counts = lab[keep].value_counts()
    min_class_n = min_class_n if min_class_n is not None else 2 * folds
    dropped = {str(k): int(v) for k, v in counts.items() if v < min_class_n}
    classes = group_order(str(k) for k, v in counts.items() if v >= min_class_n)
    if len(classes) < 2:
        raise InputError(f"fewer than 2 classes with at least {min_class_n} images "
                         f"(counts: {dict(counts.astype(int))})", column=name,
                         hint="a probe needs two or more groups; check the column or the --split filter")
    keep &= lab.isin(classes).to_numpy()
    Xk = np.asarray(X, dtype=np.float64)[keep]
    yk = lab[keep].to_numpy(dtype=object)
    y_idx = pd.Series(yk).map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=int)
    gk = None if groups is None else np.asarray(groups)[keep]
    K = len(classes)
    W = (bootstrap_weights(y_idx, n_boot, np.random.default_rng(seed), gk) if n_boot > 0
         else np.zeros((0, len(y_idx))))
    # per repeat: class AUCs (R × K), macro AUC (R), and bootstrap replicates with the same resamples (R × K × B)
    cls_auc = np.empty((repeats, K))
    cls_reps = np.empty((repeats, K, W.shape[0]))
    macro = np.empty(repeats)
    fold_aucs, converged = [], True
    for r in range(repeats):
        P, fa, conv = _oof_proba(Xk, y_idx, K, folds, seed + r, gk, C)
        fold_aucs += fa
        converged &= conv
        for k in range(K):
            yb = y_idx == k
            cls_auc[r, k] = roc_auc_score(yb, P[:, k])
            cls_reps[r, k] = weighted_auc(P[:, k], yb, W) if n_boot > 0 else np.array([])
        macro[r] = (cls_auc[r, 1] if K == 2 else
                    roc_auc_score(y_idx, P, multi_class="ovr", average="macro", labels=range(K)))

    def sd(v):
        return float(np.std(v, ddof=1)) if repeats > 1 else None

    per_class = {}
    for k, c in enumerate(classes):
        point = float(cls_auc[:, k].mean())
        ci, se = _interval(point, cls_reps[:, k].mean(axis=0), sd(cls_auc[:, k]))
        per_class[c] = {"auc": point, "auc_ci": ci, "auc_se": se, "n": int((y_idx == k).sum())}
    auc = float(macro.mean())
    reps = cls_reps[:, 1].mean(axis=0) if K == 2 else cls_reps.mean(axis=(0, 1))
    ci, se = _interval(auc, reps, sd(macro))
    kind = f"binary ({classes[1]} vs {classes[0]})" if K == 2 else "one-vs-rest macro"
    return {
        "auc": auc, "auc_ci": ci, "auc_se": se, "chance": 0.5, "kind": kind, "classes": classes,
        "per_class": per_class, "n": int(keep.sum()), "n_missing": int(lab.isna().sum()), "dropped_classes": dropped,
        "repeat_aucs": [float(v) for v in macro], "fold_aucs": fold_aucs, "folds": folds, "repeats": repeats,
        "seed": seed, "n_boot": n_boot, "C": C, "grouped_cv": groups is not None,
        "bootstrap": "patient clusters" if groups is not None else "stratified", "converged": bool(converged),
    }


def probe_attributes(X: np.ndarray, meta_df: pd.DataFrame, attributes: list[str], folds: int = 5, seed: int = 0,
                     groups=None, *, n_boot: int = 1000, C: float = 1.0, repeats: int = 5,
                     bins: dict | None = None, max_groups: int = MAX_GROUPS) -> dict:
    """Probe each attribute from the embeddings ``X`` (rows aligned with ``meta_df``).

    Numeric attributes with many values (age) are binned (``bins[name]``, default for age
    ``DEFAULT_AGE_BINS``) for the AUC, and also regressed (ridge) for MAE and R². ``groups`` (e.g. patient ids)
    keeps one patient's images in one fold and makes the bootstrap resample patients.
    """
    X = np.asarray(X, dtype=np.float64)
    meta_df = meta_df.reset_index(drop=True)
    if len(meta_df) != len(X):
        raise InputError(f"{len(meta_df)} metadata rows for {len(X)} embeddings; align them first")
    if not attributes:
        raise InputError("no attribute to probe", hint="pass --attribute sex (and/or race, age, …)")
    if folds < 2:
        raise InputError(f"--folds must be >= 2, got {folds}")
    if not np.isfinite(X).all():
        raise InputError("embeddings contain NaN or inf", hint="re-extract or drop those images")
    bins = bins or {}
    g = None if groups is None else pd.Series(groups).reset_index(drop=True)
    if g is not None and g.isna().any():
        raise InputError(f"{int(g.isna().sum())} images have no patient id", column="patient_id",
                         hint="fill patient_id, or pass --groups none")
    out: dict = {}
    for a in attributes:
        if a not in meta_df.columns:
            raise InputError("attribute column not found", column=a,
                             hint=f"available: {', '.join(map(str, list(meta_df.columns)[:25]))}")
        col = meta_df[a]
        is_num = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        many = is_num and col.dropna().nunique() > max_groups
        b = bins.get(a, DEFAULT_AGE_BINS if (many and a.lower() == "age") else None)
        lab = group_labels(col, a, bins=b, max_groups=max_groups)
        res = probe_attribute(X, lab, folds=folds, seed=seed, groups=None if g is None else g.to_numpy(),
                              n_boot=n_boot, C=C, repeats=repeats, name=a)
        if b is not None:
            res["bins"] = bin_labels(list(b))
        if is_num and many:
            ok = col.notna().to_numpy()
            res["regression"] = _regression(X[ok], col[ok].to_numpy(dtype=float), folds, seed,
                                            None if g is None else g[ok].to_numpy())
        out[a] = res
    return out
