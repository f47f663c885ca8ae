"""Subgroup metrics of test predictions as tidy rows (one per task × group × metric).

Uses the performance audit's :func:`cxrdistill.evaluation.audit.subgroup_summary` (AUC overall and per group, worst-
group AUC, AUC gap, ES-AUC = AUC / (1 + Σ_g |AUC − AUC_g|), PSD = population std of the group AUCs); when that module
is not installed, an equivalent computation with scikit-learn (same definitions) is used instead.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

OVERALL = "(overall)"
SUMMARY = "(summary)"
SUMMARY_METRICS = ("worst_group_auc", "auc_gap", "es_auc", "psd")


def _subgroup_summary_fallback(y, p, groups) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    y, p, g = np.asarray(y, float), np.asarray(p, float), np.asarray(groups, dtype=object)
    ok = ~np.isnan(y) & ~np.isnan(p)
    y, p, g = y[ok], p[ok], g[ok]
    nan = float("nan")

    def auc(yy, pp):
        return float(roc_auc_score(yy, pp)) if yy.size and 0 < yy.sum() < yy.size else None

    a = auc(y, p)
    if a is None:
        return {"auc": nan, "worst_group_auc": nan, "auc_gap": nan, "es_auc": nan, "psd": nan, "group_aucs": {}}
    ga = {str(k): auc(y[g == k], p[g == k]) for k in sorted({str(v) for v in g if v is not None})}
    vals = np.array([v for v in ga.values() if v is not None])
    if not vals.size:
        return {"auc": a, "worst_group_auc": nan, "auc_gap": nan, "es_auc": nan, "psd": nan, "group_aucs": ga}
    return {"auc": a, "worst_group_auc": float(vals.min()), "auc_gap": float(vals.max() - vals.min()),
            "es_auc": float(a / (1 + np.abs(vals - a).sum())), "psd": float(vals.std()), "group_aucs": ga}


def subgroup_summary(y, p, groups) -> dict[str, Any]:
    try:
        from cxrdistill.evaluation.audit import subgroup_summary as audit_summary
    except ImportError:  # the audit module is optional for fair training
        return _subgroup_summary_fallback(y, p, groups)
    return audit_summary(y, p, groups)


def tidy_rows(y: np.ndarray, p: np.ndarray, groups: Sequence[str], tasks: Sequence[str], group_names: Sequence[str],
              **keys: Any) -> list[dict[str, Any]]:
    """Rows ``{**keys, task, group, metric, value, n, n_pos}``: per task the overall AUC, each group's AUC and the
    summary metrics (group ``(summary)``)."""
    y = np.asarray(y, dtype=float).reshape(len(y), -1)
    p = np.asarray(p, dtype=float).reshape(len(p), -1)
    g = np.asarray(groups, dtype=object)
    rows: list[dict[str, Any]] = []
    for k, task in enumerate(tasks):
        yk, pk = y[:, k], p[:, k]
        lab = ~np.isnan(yk)
        s = subgroup_summary(yk, pk, g)

        def add(group, metric, value, mask):
            rows.append({**keys, "task": task, "group": group, "metric": metric,
                         "value": float("nan") if value is None else float(value),
                         "n": int((mask & lab).sum()), "n_pos": int(np.nansum(yk[mask & lab]))})

        allm = np.ones(len(yk), dtype=bool)
        add(OVERALL, "auc", s["auc"], allm)
        for name in group_names:
            add(str(name), "auc", s["group_aucs"].get(str(name)), g == name)
        for m in SUMMARY_METRICS:
            add(SUMMARY, m, s.get(m), allm)
    return rows
