"""DeLong's test for AUCs: two independent groups (unpaired) and two models on the same samples (paired).

Variance from DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837, computed with the fast midrank algorithm of
Sun & Xu (2014), IEEE Signal Processing Letters 21:1389: O(n log n) instead of O(n_pos * n_neg). The structural
components are V10_i = (T_Z(x_i) - T_X(x_i)) / n for each positive and V01_j = 1 - (T_Z(y_j) - T_Y(y_j)) / m for each
negative (T = midranks within positives X, negatives Y, and both Z); AUC = mean(V10);
Var(AUC) = S10 / m + S01 / n with S the sample (co)variances (ddof = 1) of the components.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata


@dataclass
class DeLongResult:
    auc_a: float
    auc_b: float
    diff: float  # auc_a - auc_b
    se: float
    z: float
    p: float  # two-sided

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def structural_components(y, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs (k,), V10 (k, m) over positives and V01 (k, n) over negatives for k score vectors on the same samples.

    ``scores`` is (N,) or (k, N); ties count one half (midranks).
    """
    y = np.asarray(y).astype(bool)
    s = np.atleast_2d(np.asarray(scores, dtype=float))
    x, yy = s[:, y], s[:, ~y]
    m, n = x.shape[1], yy.shape[1]
    if m == 0 or n == 0:
        raise ValueError("DeLong needs both classes")
    tz = rankdata(np.concatenate([x, yy], axis=1), axis=1)  # 'average' = midranks
    tx = rankdata(x, axis=1)
    ty = rankdata(yy, axis=1)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return v10.mean(axis=1), v10, v01


def delong_variance(y, p) -> tuple[float, float]:
    """(AUC, DeLong variance of the AUC) for one score vector."""
    auc, v10, v01 = structural_components(y, p)
    m, n = v10.shape[1], v01.shape[1]
    var = _var(v10[0]) / m + _var(v01[0]) / n
    return float(auc[0]), float(var)


def _var(v: np.ndarray) -> float:
    return float(np.var(v, ddof=1)) if v.size > 1 else 0.0


def _z_test(diff: float, var: float) -> tuple[float, float, float]:
    se = float(np.sqrt(max(var, 0.0)))
    if se == 0.0:
        # both AUCs estimated without variance (e.g. perfect separation in both): no evidence unless they differ
        return se, (0.0 if diff == 0 else float(np.sign(diff) * np.inf)), (1.0 if diff == 0 else 0.0)
    z = diff / se
    return se, float(z), float(2.0 * norm.sf(abs(z)))


def delong_unpaired(y_a, p_a, y_b, p_b) -> DeLongResult:
    """Two AUCs from independent samples (e.g. two patient groups): z = (A_a - A_b) / sqrt(Var_a + Var_b)."""
    auc_a, var_a = delong_variance(y_a, p_a)
    auc_b, var_b = delong_variance(y_b, p_b)
    diff = auc_a - auc_b
    se, z, p = _z_test(diff, var_a + var_b)
    return DeLongResult(auc_a, auc_b, diff, se, z, p)


def delong_paired(y, p_a, p_b) -> DeLongResult:
    """Two correlated AUCs (two models scored on the same samples): Var(A_a - A_b) = S_aa + S_bb - 2 S_ab."""
    aucs, v10, v01 = structural_components(y, np.vstack([np.asarray(p_a, float), np.asarray(p_b, float)]))
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.cov(v10) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(v01) if n > 1 else np.zeros((2, 2))
    S = s10 / m + s01 / n
    var = S[0, 0] + S[1, 1] - 2 * S[0, 1]
    diff = float(aucs[0] - aucs[1])
    se, z, p = _z_test(diff, float(var))
    return DeLongResult(float(aucs[0]), float(aucs[1]), diff, se, z, p)
