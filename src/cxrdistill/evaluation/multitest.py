"""Multiple-testing correction for one family of p-values (scipy for BH/BY; Bonferroni by its definition)."""
from __future__ import annotations

import numpy as np

from cxrdistill.errors import CxrError

CORRECTIONS = ("by", "bh", "bonferroni", "none")


def adjust_pvalues(p, method: str = "by") -> np.ndarray:
    """Adjusted p-values; NaN entries (tests that could not run) stay NaN and do not count towards the family size."""
    if method not in CORRECTIONS:
        raise CxrError(f"unknown correction {method!r}; choose one of {', '.join(CORRECTIONS)}")
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if not ok.any():
        return out
    q = p[ok]
    if method == "none":
        adj = q
    elif method == "bonferroni":
        adj = np.minimum(q * q.size, 1.0)
    else:
        from scipy.stats import false_discovery_control

        adj = false_discovery_control(q, method=method)
    out[ok] = adj
    return out
