"""Per-task performance metrics with stratified bootstrap CIs, and a tidy metrics table.

Metrics: AUC-ROC, AUC-PR (average precision), maximum Youden's J, and — at the operating point whose
FPR is closest to the target (20% by default, as Glocker et al. 2023) — the threshold, TPR, FPR and Youden's J there.
Point estimates are computed on the data; CIs are percentile intervals over bootstrap replicates drawn within each
class (label-stratified), in which the operating point is re-chosen, as in Glocker et al.'s evaluation code.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from cxrdistill.evaluation import bootstrap as bs
from cxrdistill.evaluation.predictions import find_tasks, label_column, task_arrays

METRICS = ("auc", "auc_pr", "max_youden", "threshold", "tpr", "fpr", "youden")


def _check_binary(y, p):
    y = np.asarray(y)
    p = np.asarray(p, dtype=float)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y and p must be 1-D and of equal length, got {y.shape} and {p.shape}")
    return y.astype(np.int32), p


def _metrics_from_ranked(r: bs.Ranked, W: np.ndarray | None, target_fpr: float) -> dict[str, np.ndarray]:
    c = r.curves(W)
    k = bs.threshold_index(c, target_fpr)
    tpr, fpr = bs.rates_at(c, k)
    return {
        "auc": bs.auc_from_curves(c),
        "auc_pr": bs.average_precision_from_curves(c),
        "max_youden": bs.max_youden_from_curves(c),
        "threshold": bs.threshold_value(r, k),
        "tpr": tpr,
        "fpr": fpr,
        "youden": tpr - fpr,
    }


def binary_metrics(y, p, target_fpr: float = 0.2) -> dict[str, float]:
    """Point estimates of every metric in :data:`METRICS` (NaN when only one class is present)."""
    y, p = _check_binary(y, p)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        return {m: float("nan") for m in METRICS}
    r = bs.Ranked.from_scores(y, p)
    return {m: float(v[0]) for m, v in _metrics_from_ranked(r, None, target_fpr).items()}


def bootstrap_metrics(y, p, target_fpr: float = 0.2, n_boot: int = 2000, rng: np.random.Generator | None = None,
                      ranked: bs.Ranked | None = None) -> dict[str, np.ndarray]:
    """Replicate values (n_boot,) of every metric, from a label-stratified bootstrap."""
    y, p = _check_binary(y, p)
    rng = rng if rng is not None else np.random.default_rng(0)
    r = ranked if ranked is not None else bs.Ranked.from_scores(y, p)
    out: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    for W in bs.stratified_counts(r.y, n_boot, rng):
        for m, v in _metrics_from_ranked(r, W, target_fpr).items():
            out[m].append(v)
    return {m: (np.concatenate(v) if v else np.empty(0)) for m, v in out.items()}


def task_metrics(y, p, target_fpr: float = 0.2, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0,
                 min_n: int = 1) -> dict:
    """Every metric with its (1 - alpha) bootstrap CI: ``{n, n_pos, reason, <metric>: value, <metric>_ci: [lo, hi]}``.

    Returns null metrics and a ``reason`` (never raises) when there are fewer than ``min_n`` rows or one class only.
    """
    y, p = _check_binary(y, p)
    n, n_pos = int(y.size), int(y.sum())
    out: dict = {"n": n, "n_pos": n_pos, "reason": None}
    reason = degenerate_reason(n, n_pos, min_n)
    if reason:
        out["reason"] = reason
        for m in METRICS:
            out[m], out[f"{m}_ci"] = None, None
        return out
    r = bs.Ranked.from_scores(y, p)
    point = _metrics_from_ranked(r, None, target_fpr)
    reps = bootstrap_metrics(y, p, target_fpr, n_boot, np.random.default_rng(seed), ranked=r) if n_boot > 0 else None
    for m in METRICS:
        out[m] = float(point[m][0])
        if reps is None:
            out[f"{m}_ci"] = None
        else:
            lo, hi = bs.percentile_ci(reps[m], alpha)
            out[f"{m}_ci"] = [float(lo), float(hi)]
    return out


def degenerate_reason(n: int, n_pos: int, min_n: int) -> str | None:
    """Why metrics cannot be computed for a set of ``n`` labelled rows with ``n_pos`` positives (None if they can)."""
    if n == 0:
        return "no labelled rows"
    if n < min_n:
        return f"fewer than min_n={min_n} labelled rows (n={n})"
    if n_pos == 0:
        return f"only one class: no positives (n={n})"
    if n_pos == n:
        return f"only one class: no negatives (n={n})"
    return None


def metrics_table(df, tasks: Iterable[str] | None = None, labels: str = "observed", target_fpr: float = 0.2,
                  n_boot: int = 2000, alpha: float = 0.05, seed: int = 0, min_n: int = 1):
    """Tidy metrics of a predictions table: one row per task x metric with columns
    ``task, metric, value, ci_low, ci_high, n, n_pos, reason`` (rows with unknown label are left out per task).

    ``labels``: ``observed`` uses ``y_T``, ``true`` uses ``ytrue_T`` (synthetic ground truth).
    """
    import pandas as pd

    tasks = find_tasks(df, tasks, labels=labels)
    rows = []
    for t in tasks:
        y, p, _ = task_arrays(df, t, label_column(t, labels))
        res = task_metrics(y, p, target_fpr, n_boot, alpha, int(bs.derive_rng(seed, "metrics", t).integers(2**31)),
                           min_n=min_n)
        for m in METRICS:
            ci = res[f"{m}_ci"] or [None, None]
            rows.append({"task": t, "metric": m, "value": res[m], "ci_low": ci[0], "ci_high": ci[1],
                         "n": res["n"], "n_pos": res["n_pos"], "reason": res["reason"]})
    out = pd.DataFrame(rows, columns=["task", "metric", "value", "ci_low", "ci_high", "n", "n_pos", "reason"])
    for c in ("value", "ci_low", "ci_high"):
        out[c] = out[c].astype(float)
    return out
