"""Fast metric summaries (no bootstrap) for validation during training and model selection."""
from __future__ import annotations

import numpy as np


def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(y)
    y, s = y[ok], s[ok]
    if y.size == 0 or y.min() == y.max():
        return None
    return float(roc_auc_score(y, s))


def task_aucs(y: np.ndarray, s: np.ndarray) -> list[float | None]:
    """AUC per column (None where a column has one class or no labels). NaN labels are ignored."""
    y = np.asarray(y, dtype=float).reshape(len(y), -1)
    s = np.asarray(s, dtype=float).reshape(len(s), -1)
    return [_auc(y[:, k], s[:, k]) for k in range(y.shape[1])]


def mean_auc(y, s) -> float | None:
    vals = [a for a in task_aucs(y, s) if a is not None]
    return float(np.mean(vals)) if vals else None


def mean_group_aucs(y, s, g) -> tuple[float | None, float | None]:
    """Mean over tasks of (worst-group AUC, max−min group AUC), groups with one class skipped."""
    y = np.asarray(y, dtype=float).reshape(len(y), -1)
    s = np.asarray(s, dtype=float).reshape(len(s), -1)
    g = np.asarray(g)
    worst, gaps = [], []
    for k in range(y.shape[1]):
        aucs = [a for gv in np.unique(g) if (a := _auc(y[g == gv, k], s[g == gv, k])) is not None]
        if len(aucs) >= 2:
            worst.append(min(aucs))
            gaps.append(max(aucs) - min(aucs))
    if not worst:
        return None, None
    return float(np.mean(worst)), float(np.mean(gaps))
