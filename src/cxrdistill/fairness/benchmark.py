"""Statistics and pre-checks of a fairness comparison that includes test-set noise.

One *repetition* is a fresh cohort, split and training seed; every method is scored on that repetition's test set
against the ground truth. Per repetition, a paired patient-level bootstrap (the same resampled patients for every
method, :func:`~cxrdistill.evaluation.probes.bootstrap_weights`) gives replicates of each group's AUC and of each
method-minus-baseline difference. Across repetitions the point estimate is the mean; its 95% interval is the wider
of (a) the percentile interval of the averaged bootstrap replicates (test-set noise) and (b) the t-interval of the
per-repetition values (cohort, split, training and test-set noise together).

The gap is reported three ways — max − min over groups, worst group vs the rest pooled, and every pair — over the
groups with at least ``min_pos`` positives and ``min_pos`` negatives in the test set; a smaller group is reported
but left out of the gap.

Pre-checks (a comparison that fails them says so instead of claiming anything about a group-aware method):

* **P1** a group-specialised model (ERM on that group's training data only) beats pooled ERM on that group by
  ≥ ``P1_MARGIN`` with a paired interval excluding 0 — there is something group-specific to teach;
* **P2** an attribute probe on the embeddings reaches AUC ≥ ``P2_MIN`` — the group is identifiable from the input;
* **P3** ERM given the group as an input beats plain ERM on that group (interval excluding 0) — the group-specific
  rule is usable by one model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from cxrdistill.evaluation.probes import bootstrap_weights, weighted_auc
from cxrdistill.training.data import ArrayDataset

P1_MARGIN = 0.03
P2_MIN = 0.9
MIN_POS = 25  # positives (and negatives) a group needs in the test set to enter the gap


@dataclass
class Repetition:
    """One repetition's test set: labels, groups, patients and each variant's scores (same rows)."""

    y: np.ndarray
    groups: np.ndarray
    patients: np.ndarray
    scores: dict[str, np.ndarray]
    probe_auc: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _auc(y: np.ndarray, p: np.ndarray, W: np.ndarray | None) -> np.ndarray:
    """Point AUC (W None) as a length-1 array, or one AUC per bootstrap row."""
    if len(np.unique(y)) < 2:
        return np.full(1 if W is None else W.shape[0], np.nan)
    return weighted_auc(p, y, np.ones((1, len(y))) if W is None else W)


def group_metrics(y, p, groups, group_names, eligible, W=None) -> dict[str, np.ndarray]:
    """AUC overall, per group, and the gap three ways (``eligible`` groups only) — each a point or replicates."""
    out = {"auc": _auc(y, p, W)}
    for g in group_names:
        m = groups == g
        out[f"auc[{g}]"] = _auc(y[m], p[m], None if W is None else W[:, m])
    el = [g for g in group_names if g in eligible]
    if len(el) >= 2:
        A = np.stack([out[f"auc[{g}]"] for g in el])
        out["gap_max_min"] = A.max(0) - A.min(0)
        worst = np.argmin(A, axis=0)
        rest = []
        for b in range(A.shape[1]):
            m = groups != el[worst[b]]
            rest.append(_auc(y[m], p[m], None if W is None else W[b:b + 1, m])[0])
        out["gap_worst_vs_rest"] = np.asarray(rest) - A.min(0)
        for i, a in enumerate(el):
            for b_ in el[i + 1:]:
                out[f"diff[{a}-{b_}]"] = out[f"auc[{a}]"] - out[f"auc[{b_}]"]
    return out


def eligible_groups(y, groups, group_names, min_pos: int = MIN_POS) -> list[str]:
    return [g for g in group_names if min(int((y[groups == g] == 1).sum()), int((y[groups == g] == 0).sum()))
            >= min_pos]


def summarize(reps: list[Repetition], group_names: list[str], baseline: str = "erm", n_boot: int = 500,
              seed: int = 0, min_pos: int = MIN_POS, between_reps: bool = True) -> dict[str, dict[str, dict[str, Any]]]:
    """{variant: {metric: {mean, ci, per_rep, delta, delta_ci, delta_per_rep}}} over repetitions.

    ``between_reps=False`` when the repetitions share one test set (seeds of one split): the interval is then the
    bootstrap's alone (test-set noise, the seeds averaged)."""
    per: dict[str, dict[str, list]] = {}
    eligible_all = set(group_names)
    for r_i, rep in enumerate(reps):
        eligible_all &= set(eligible_groups(rep.y, rep.groups, group_names, min_pos))
    eligible = [g for g in group_names if g in eligible_all]
    for r_i, rep in enumerate(reps):
        rng = np.random.default_rng([seed, r_i])
        W = bootstrap_weights(rep.y, n_boot, rng, rep.patients) if n_boot > 0 else None
        base_pt = group_metrics(rep.y, rep.scores[baseline], rep.groups, group_names, eligible) \
            if baseline in rep.scores else None
        base_bs = group_metrics(rep.y, rep.scores[baseline], rep.groups, group_names, eligible, W) \
            if (baseline in rep.scores and W is not None) else None
        for v, p in rep.scores.items():
            pt = group_metrics(rep.y, p, rep.groups, group_names, eligible)
            bs = group_metrics(rep.y, p, rep.groups, group_names, eligible, W) if W is not None else None
            d = per.setdefault(v, {})
            for k, val in pt.items():
                e = d.setdefault(k, {"pt": [], "bs": [], "dpt": [], "dbs": []})
                e["pt"].append(float(val[0]))
                if bs is not None:
                    e["bs"].append(bs[k])
                if base_pt is not None and k in base_pt:
                    e["dpt"].append(float(val[0] - base_pt[k][0]))
                    if bs is not None:
                        e["dbs"].append(bs[k] - base_bs[k])
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for v, d in per.items():
        for k, e in d.items():
            row = {"mean": float(np.nanmean(e["pt"])), "per_rep": e["pt"],
                   "ci": _interval(e["pt"], e["bs"], between_reps)}
            if e["dpt"]:
                row["delta"] = float(np.nanmean(e["dpt"]))
                row["delta_per_rep"] = e["dpt"]
                row["delta_ci"] = _interval(e["dpt"], e["dbs"], between_reps)
                lo, hi = row["delta_ci"]
                row["delta_excludes_0"] = bool(lo is not None and (lo > 0 or hi < 0))
            out.setdefault(v, {})[k] = row
    out["_eligible"] = {"groups": eligible, "min_pos": min_pos}  # type: ignore[assignment]
    return out


def _interval(points: list[float], boot: list[np.ndarray], between_reps: bool = True
              ) -> tuple[float | None, float | None]:
    """The wider of the bootstrap percentile interval of the mean and the t-interval across repetitions."""
    pts = np.asarray(points, dtype=float)
    pts = pts[np.isfinite(pts)]
    if pts.size == 0:
        return (None, None)
    los, his = [], []
    if boot:
        B = np.nanmean(np.stack(boot), axis=0)
        B = B[np.isfinite(B)]
        if B.size:
            los.append(float(np.percentile(B, 2.5)))
            his.append(float(np.percentile(B, 97.5)))
    if between_reps and pts.size >= 2:
        h = float(stats.t.ppf(0.975, pts.size - 1) * pts.std(ddof=1) / np.sqrt(pts.size))
        los.append(float(pts.mean() - h))
        his.append(float(pts.mean() + h))
    if not los:
        return (None, None)
    return (min(los), max(his))


def prechecks(summary: dict, minority: str, probe_aucs: list[float], specialist: str = "specialist",
              with_group: str = "erm_with_group") -> dict[str, dict[str, Any]]:
    """P1, P2, P3 (see the module docstring) from a :func:`summarize` result; each {passed, value, ci, rule}."""
    key = f"auc[{minority}]"
    out = {}
    s = summary.get(specialist, {}).get(key, {})
    d, ci = s.get("delta"), s.get("delta_ci", (None, None))
    out["P1"] = {"rule": f"a {minority}-only model beats ERM on {minority} by ≥ {P1_MARGIN} (interval excluding 0)",
                 "value": d, "ci": ci,
                 "passed": bool(d is not None and d >= P1_MARGIN and ci[0] is not None and ci[0] > 0)}
    pa = [a for a in probe_aucs if a is not None and np.isfinite(a)]
    mean = float(np.mean(pa)) if pa else None
    out["P2"] = {"rule": f"attribute probe AUC ≥ {P2_MIN}", "value": mean, "ci": (min(pa), max(pa)) if pa else None,
                 "passed": bool(mean is not None and mean >= P2_MIN)}
    s = summary.get(with_group, {}).get(key, {})
    d, ci = s.get("delta"), s.get("delta_ci", (None, None))
    out["P3"] = {"rule": f"ERM given the group as an input beats ERM on {minority} (interval excluding 0)",
                 "value": d, "ci": ci, "passed": bool(d is not None and ci[0] is not None and ci[0] > 0)}
    return out


def with_group_input(ds, n_groups: int):
    """The same ArrayDataset with the one-hot group appended to ``x`` (for P3: ERM told the group)."""
    import torch

    arrays = dict(ds.arrays)
    onehot = torch.nn.functional.one_hot(arrays["g"].long(), n_groups).to(arrays["x"].dtype)
    arrays["x"] = torch.cat([arrays["x"], 2.0 * onehot - 1.0], dim=1)
    return ArrayDataset(**arrays)


def precheck_report(pre: dict[str, dict[str, Any]]) -> str:
    """One Markdown paragraph: which pre-checks passed, and what may be concluded."""
    pre = {k: v for k, v in pre.items() if isinstance(v, dict)}
    parts = []
    for k, v in pre.items():
        val = "n/a" if v["value"] is None else f"{v['value']:+.3f}" if k != "P2" else f"{v['value']:.3f}"
        parts.append(f"{k} {'passed' if v['passed'] else 'FAILED'} ({v['rule']}: {val})")
    failed = [k for k, v in pre.items() if not v["passed"]]
    tail = ("All pre-checks passed: a group-aware method has something to learn here, so its differences from ERM "
            "can be read as evidence for or against it." if not failed else
            f"Pre-check(s) {', '.join(failed)} failed: this data does not hold the mechanism a group-aware method "
            "(FairDi, group-specific teachers) relies on, so the comparison below cannot show whether such a method "
            "works; its differences are reported, not interpreted.")
    return "Pre-checks: " + "; ".join(parts) + ". " + tail
