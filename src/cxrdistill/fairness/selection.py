"""Model selection for fair training (overall score, worst-group score, DTO) and the Pareto front of performance
against the gap between groups.

DTO follows MEDFAIR (Zong et al., ICLR 2023; ys-zong/MEDFAIR ``notebooks/results_analysis.ipynb``): every candidate
model is a point of per-group validation AUCs; each column is divided by its best value over the candidates (the
"utopia" point becomes all ones) and the candidate with the smallest Euclidean distance to it is chosen.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

RULES = ("auc", "worst", "dto")


def dto_distances(group_scores) -> np.ndarray:
    """Distance of each candidate (row) to the utopia point of per-group scores (columns), as in MEDFAIR.

    Columns that are NaN for some candidate are dropped (a group that could not be scored for every candidate
    cannot rank them); if none is left, every distance is NaN.
    """
    m = np.asarray(group_scores, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"group scores must be 2-D (candidates × groups), got shape {m.shape}")
    keep = np.all(np.isfinite(m), axis=0)
    m = m[:, keep]
    if m.shape[1] == 0 or m.shape[0] == 0:
        return np.full(m.shape[0], np.nan)
    best = m.max(axis=0)
    best[best == 0] = 1.0
    return np.sqrt(((m / best - 1.0) ** 2).sum(axis=1))


def select_index(overall: Sequence[float], worst: Sequence[float], groups, rule: str) -> int:
    """Index of the chosen candidate: max overall score (``auc``), max worst-group score (``worst``) or min DTO
    (``dto``). Ties go to the earliest candidate; NaN never wins (falls back to the last candidate if all NaN)."""
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; use one of {RULES}")
    n = len(overall)
    if n == 0:
        raise ValueError("no candidates to select from")
    if rule == "dto":
        key = -dto_distances(groups)
    else:
        key = np.asarray(overall if rule == "auc" else worst, dtype=float)
    key = np.where(np.isfinite(key), key, -np.inf)
    if not np.isfinite(key).any():
        return n - 1
    return int(np.argmax(key))  # argmax returns the first maximum


def pareto_front(points, maximize: Sequence[bool] = (True, False)) -> np.ndarray:
    """Indices of the non-dominated points (rows), sorted by the first coordinate.

    Default orientation: first column (overall AUC) larger is better, second (AUC gap) smaller is better. A point is
    dominated when another is at least as good in every coordinate and strictly better in one.
    """
    p = np.asarray(points, dtype=float)
    if p.ndim != 2 or p.shape[1] != len(maximize):
        raise ValueError(f"points must be (n, {len(maximize)}), got {p.shape}")
    sign = np.where(np.asarray(maximize), 1.0, -1.0)
    q = p * sign  # now larger is better everywhere
    ok = np.all(np.isfinite(q), axis=1)
    front = []
    for i in np.flatnonzero(ok):
        others = q[ok]
        dominated = np.any(np.all(others >= q[i], axis=1) & np.any(others > q[i], axis=1))
        if not dominated:
            front.append(i)
    front = np.asarray(front, dtype=int)
    return front[np.argsort(p[front, 0], kind="stable")] if front.size else front
