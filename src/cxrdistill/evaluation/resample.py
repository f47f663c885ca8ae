"""Test-set resampling as in Glocker et al. 2023 (notebooks/chexpert.resample.ipynb of cxr-foundation-bias):
balance the groups of an attribute, then match the disease prevalence within each group to the overall prevalence,
then, within every (group, class), match the age-bin distribution to the overall one of that class.

Glocker et al. draw with ``WeightedRandomSampler``, so their counts match only in expectation. Here every target is an
exact count (largest-remainder apportionment), and each cell is filled with as few repeats as possible: whole copies
of the cell, then a random subset without replacement. Seeded; the report says what was drawn and any cell that had
to be redistributed because it was empty.
"""
from __future__ import annotations

import numpy as np

from cxrdistill.errors import InputError

# Glocker et al.'s age bins (<=20, 21-30, …, 71-80, >80), expressed as left-closed edges.
DEFAULT_AGE_EDGES = (0.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, float("inf"))
MISSING_AGE = "missing"


def _fmt(x: float) -> str:
    return "inf" if np.isinf(x) else f"{x:g}"


def bin_labels(edges) -> list[str]:
    """``[a,b)`` labels of consecutive edges."""
    return [f"[{_fmt(a)},{_fmt(b)})" for a, b in zip(edges[:-1], edges[1:])]


def bin_values(values, edges) -> np.ndarray:
    """Bin numbers into ``[a,b)`` labels (object array); values outside the edges or missing become None."""
    v = np.asarray(values, dtype=float)
    edges = np.asarray(edges, dtype=float)
    labels = np.array(bin_labels(edges), dtype=object)
    idx = np.searchsorted(edges, v, side="right") - 1
    ok = np.isfinite(v) & (idx >= 0) & (idx < len(labels))
    out = np.full(v.shape, None, dtype=object)
    out[ok] = labels[idx[ok]]
    return out


def parse_bins(text: str) -> list[float]:
    """``"0,40,60,80,120"`` → strictly increasing edges (at least two)."""
    try:
        edges = [float(t) for t in str(text).split(",") if t.strip() != ""]
    except ValueError:
        raise InputError(f"age bins {text!r} are not numbers", hint="write edges like 0,40,60,80,120") from None
    if len(edges) < 2 or any(b <= a for a, b in zip(edges[:-1], edges[1:])):
        raise InputError(f"age bins {text!r} must be at least two strictly increasing numbers",
                         hint="write edges like 0,40,60,80,120")
    return edges


def apportion(total: int, weights) -> np.ndarray:
    """Integer counts summing to ``total``, proportional to ``weights`` (largest remainder; ties to the first)."""
    w = np.asarray(weights, dtype=float)
    if total <= 0 or w.sum() <= 0:
        return np.zeros(w.size, dtype=np.int64)
    share = total * w / w.sum()
    base = np.floor(share).astype(np.int64)
    rest = total - int(base.sum())
    if rest > 0:
        order = np.argsort(-(share - base), kind="stable")
        base[order[:rest]] += 1
    return base


def _fill(members: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` draws from ``members``: whole copies first, then a random subset without replacement."""
    m = members.size
    reps, extra = divmod(k, m)
    parts = [np.tile(members, reps)] if reps else []
    if extra:
        parts.append(rng.choice(members, size=extra, replace=False))
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def balanced_resample(groups, y, age=None, age_edges=None, seed: int = 0, size_factor: float = 1.0):
    """Row indices of a resampled test set, and a report.

    ``groups``: the attribute value of every row (None = missing; such rows are left out). ``y``: 0/1 labels.
    ``age``: optional ages (NaN = missing, its own bin). Each kept group gets ``round(size_factor * N / G)`` rows
    (N = rows with a group), of which ``round(n * prevalence)`` positives; each (group, class) follows the overall
    age-bin distribution of that class.
    """
    groups = np.asarray(groups, dtype=object)
    y = np.asarray(y).astype(np.int64)
    rng = np.random.default_rng(seed)
    valid = np.array([g is not None and not (isinstance(g, float) and np.isnan(g)) for g in groups], dtype=bool)
    edges = list(age_edges) if age_edges is not None else list(DEFAULT_AGE_EDGES)
    if age is not None:
        ab = bin_values(age, edges)
        ab = np.where(ab == None, MISSING_AGE, ab).astype(object)  # noqa: E711  (elementwise None test)
    else:
        ab = np.full(y.size, "all", dtype=object)
    bins = [b for b in bin_labels(edges) + [MISSING_AGE, "all"] if (ab[valid] == b).any()]
    report: dict = {"method": "balanced", "seed": int(seed), "size_factor": float(size_factor),
                    "age_bins": bin_labels(edges) if age is not None else None, "n_before": int(valid.sum()),
                    "n_missing_attribute": int((~valid).sum()), "warnings": [], "groups": {}}
    vi = np.flatnonzero(valid)
    if vi.size == 0:
        report["warnings"].append("no row has a value for the attribute: nothing to resample")
        report.update(n_after=0, n_per_group=0, prevalence=None)
        return np.empty(0, dtype=np.int64), report
    vals = sorted({str(g) for g in groups[vi]})
    gstr = np.array([str(g) for g in groups], dtype=object)
    prev = float(y[vi].mean())
    # overall age-bin distribution within each class (on every row with a group)
    age_dist = {c: np.array([((y[vi] == c) & (ab[vi] == b)).sum() for b in bins], dtype=float) for c in (0, 1)}
    n_per = int(round(size_factor * vi.size / max(len(vals), 1)))
    n_pos = int(round(n_per * prev))
    need = [c for c, k in ((1, n_pos), (0, n_per - n_pos)) if k > 0]
    kept = [g for g in vals if all(((gstr[vi] == g) & (y[vi] == c)).any() for c in need)]
    for g in vals:
        if g not in kept:
            report["warnings"].append(f"group {g!r} has only one class; it cannot match the prevalence and is left out")
    report.update(n_per_group=n_per, prevalence=prev, n_pos_per_group=n_pos)
    out = []
    for g in kept:
        in_g = valid & (gstr == g)
        g_rows = []
        for c, n_c in ((1, n_pos), (0, n_per - n_pos)):
            cell_rows = [np.flatnonzero(in_g & (y == c) & (ab == b)) for b in bins]
            avail = np.array([r.size > 0 for r in cell_rows])
            target = apportion(n_c, age_dist[c])
            if (target[~avail] > 0).any():
                lost = [bins[i] for i in np.flatnonzero(~avail & (target > 0))]
                report["warnings"].append(
                    f"group {g!r}, class {c}: no rows in age bin(s) {', '.join(lost)}; their share goes to the "
                    "other bins of this group")
                target = apportion(n_c, np.where(avail, age_dist[c], 0.0))
                if target.sum() < n_c:  # this class has no row in any bin with overall mass
                    target = apportion(n_c, avail.astype(float))
            for rows, k in zip(cell_rows, target):
                if k > 0:
                    g_rows.append(_fill(rows, int(k), rng))
        idx = np.sort(np.concatenate(g_rows)) if g_rows else np.empty(0, dtype=np.int64)
        out.append(idx)
        report["groups"][g] = {"n_available": int(in_g.sum()), "n_pos_available": int((in_g & (y == 1)).sum()),
                               "n": int(idx.size), "n_pos": int(y[idx].sum()), "n_unique": int(np.unique(idx).size)}
    idx = np.concatenate(out) if out else np.empty(0, dtype=np.int64)
    report["n_after"] = int(idx.size)
    return idx, report
