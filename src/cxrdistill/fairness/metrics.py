"""Subgroup metrics of test predictions as tidy rows (one per task × group × metric).

Uses the performance audit's :func:`cxrdistill.evaluation.audit.subgroup_summary` (AUC overall and per group, worst-
group AUC, AUC gap, ES-AUC = AUC / (1 + Σ_g |AUC − AUC_g|), PSD = population std of the group AUCs).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cxrdistill.evaluation.audit import subgroup_summary

OVERALL = "(overall)"
SUMMARY = "(summary)"
SUMMARY_METRICS = ("worst_group_auc", "auc_gap", "es_auc", "psd")


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
