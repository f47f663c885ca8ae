"""Helpers shared by the feature-audit / probe / compare tests (imported by file name; not a conftest, so that the
performance-audit tests in this folder keep their own)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def make_meta(n: int, seed: int = 0, race_values=("Asian", "Black or African American", "White")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "image_id": [f"img{i:04d}" for i in range(n)],
        "patient_id": [f"pat{i // 2:04d}" for i in range(n)],
        "sex": rng.choice(["F", "M"], n),
        "race": rng.choice(list(race_values), n),
        "age": rng.uniform(18, 95, n).round(1),
        "split": rng.choice(["train", "test"], n, p=[0.3, 0.7]),
    })


def write_npy(tmp_path, X, ids, name="emb"):
    p = tmp_path / f"{name}.npy"
    np.save(p, X)
    (tmp_path / f"{name}.ids.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    return p


def _ci(v, se):
    return [v - 1.96 * se, v + 1.96 * se]


def make_audit(gap: float, se: float = 0.01, task: str = "pleural_effusion", base_auc: float = 0.85,
               n: int = 3000, n_pos: int = 600, tpr_gap: float | None = None) -> dict:
    """An audit.json (the performance audit's layout) with one attribute (sex: F better than M by ``gap``)."""
    tpr_gap = gap if tpr_gap is None else tpr_gap
    a_auc, b_auc = base_auc, base_auc - gap
    groups = {
        "F": {"n": n, "n_pos": n_pos, "auc": a_auc, "auc_ci": _ci(a_auc, se), "tpr": 0.8, "fpr": 0.2},
        "M": {"n": n, "n_pos": n_pos, "auc": b_auc, "auc_ci": _ci(b_auc, se), "tpr": 0.8 - tpr_gap, "fpr": 0.2},
    }
    comp = {"group_a": "F", "group_b": "M", "auc_diff": gap, "auc_p": 1e-6, "auc_p_adj": 1e-5, "auc_significant": True,
            "tpr_diff": tpr_gap, "tpr_ci": _ci(tpr_gap, se), "fpr_diff": 0.0, "fpr_ci": _ci(0.0, se),
            "ks_stat": 0.1, "ks_p": 1e-4, "ks_p_adj": 1e-3}
    return {"tasks": {task: {
        "threshold": 0.5,
        "overall": {"n": 2 * n, "n_pos": 2 * n_pos, "auc": base_auc - gap / 2, "auc_ci": _ci(base_auc - gap / 2, se),
                    "tpr": 0.8 - tpr_gap / 2, "fpr": 0.2},
        "attributes": {"sex": {"groups": groups, "auc_gap": gap, "worst_group_auc": b_auc,
                               "es_auc": (base_auc - gap / 2) / (1 + gap), "comparisons": [comp]}},
    }}}
