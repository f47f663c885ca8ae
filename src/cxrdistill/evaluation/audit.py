"""The performance audit (Glocker et al. 2023, "Risk of Bias in Chest Radiography Deep Learning Foundation Models").

Per task, overall and for every group of every attribute: n, n_pos, AUC with a stratified bootstrap CI; TPR, FPR and
Youden's J at ONE global threshold (the overall operating point whose FPR is closest to the target); AUC gap,
worst-group AUC, ES-AUC and PSD; pairwise group comparisons (DeLong, bootstrap CIs of AUC/TPR/FPR differences, a KS
test of the score distributions). All p-values of one call are one family, adjusted with the chosen correction.

The tidy ``by_group`` table is the primary result (as fairlearn's ``MetricFrame.by_group``); ``to_json()`` renders it
with the comparisons into the ``audit.json`` layout.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from cxrdistill.errors import InputError
from cxrdistill.evaluation import bootstrap as bs
from cxrdistill.evaluation.delong import delong_unpaired
from cxrdistill.evaluation.metrics import METRICS, _metrics_from_ranked, bootstrap_metrics, degenerate_reason
from cxrdistill.evaluation.multitest import CORRECTIONS, adjust_pvalues
from cxrdistill.evaluation.predictions import (LABEL_KINDS, check_attributes, check_ids, find_tasks, label_column,
                                               task_arrays)
from cxrdistill.evaluation.resample import DEFAULT_AGE_EDGES, balanced_resample, bin_labels, bin_values
from cxrdistill.storage.io import clean_json

OVERALL = "(overall)"
SUMMARY = "(summary)"
GROUP_METRICS = ("auc", "tpr", "fpr", "youden")
SUMMARY_METRICS = ("auc_gap", "worst_group_auc", "es_auc", "psd")
RESAMPLE_METHODS = ("none", "balanced")
MAX_GROUPS = 50  # a numeric attribute with more distinct values needs bins
BY_GROUP_COLUMNS = ["task", "attribute", "group", "metric", "value", "ci_low", "ci_high", "n", "n_pos", "reason",
                    "labels"]
THRESHOLD_RULE = ("one global threshold per task: the point of the overall ROC curve (all distinct scores as "
                  "thresholds, score >= threshold is positive) whose FPR is closest to the target; ties -> lower "
                  "FPR (Glocker et al. 2023, argmin |fpr - target|); re-chosen in every bootstrap replicate")


@dataclass
class AuditResult:
    """Result of :func:`run_audit`: tidy tables plus the nested dict behind ``audit.json``."""

    settings: dict
    tasks: dict[str, dict]  # label kind ("observed" / "true") -> task -> nested results
    by_group: "object"  # pandas DataFrame, columns BY_GROUP_COLUMNS
    comparisons: "object"  # pandas DataFrame, one row per task x attribute x pair of groups
    resampling: dict | None = None
    n_tests: int = 0
    n_significant: int = 0
    input: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The ``audit.json`` document (JSON-safe: NaN/inf become null)."""
        labels = self.settings["labels"]
        doc: dict = {"schema": "cxrdistill.audit/1", "input": self.input, "settings": self.settings}
        if labels == "both":
            doc["tasks"] = self.tasks["observed"]
            doc["tasks_true"] = self.tasks["true"]
        else:
            doc["tasks"] = self.tasks[labels]
        doc["n_tests"] = self.n_tests
        doc["n_significant"] = self.n_significant
        doc["resampling"] = self.resampling
        return clean_json(doc)


# ----------------------------------------------------------------------------------------------------------------
# Attributes


def _value_str(v) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def attribute_labels(series, name: str, age_bins: Sequence[float] | None = None, path=None):
    """Group label (str or None for missing) of every row, and the ordered list of groups.

    ``age`` with ``age_bins`` becomes ``[a,b)`` bins; other numeric attributes with many values are refused.
    """
    import pandas as pd

    s = series
    if name == "age" and age_bins is not None:
        num = pd.to_numeric(s, errors="coerce")
        lab = bin_values(num.to_numpy(dtype=float), age_bins)
        present = set(x for x in lab if x is not None)
        return lab, [b for b in bin_labels(list(age_bins)) if b in present]
    miss = s.isna().to_numpy().copy()
    if s.dtype == object or isinstance(s.dtype, pd.StringDtype):
        miss |= (s.astype(str).str.strip() == "").to_numpy()
    uniq: dict = {}
    mapping: dict = {}
    for v in pd.unique(s[~miss]):
        mapping[v] = _value_str(v)
        uniq.setdefault(mapping[v], v)
    lab = np.where(miss, None, s.map(mapping).to_numpy(dtype=object)).astype(object)
    if len(uniq) > MAX_GROUPS:
        hint = ("pass --age-bins, e.g. 0,40,60,80,120" if name == "age" else
                "bin the attribute into a few groups first")
        raise InputError(f"attribute has {len(uniq)} distinct values; too many groups to audit", path=path,
                         column=name, hint=hint)
    try:
        groups = sorted(uniq, key=lambda k: (float(uniq[k]), k))
    except (TypeError, ValueError):
        groups = sorted(uniq)
    return lab, groups


# ----------------------------------------------------------------------------------------------------------------
# Core per task


def _ci(lo, hi):
    if lo is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    return [float(lo), float(hi)]


def _f(x):
    return None if x is None or not np.isfinite(x) else float(x)


def _summaries(overall_auc, aucs):
    """auc_gap, worst_group_auc, es_auc, psd from group AUCs (last axis); works on replicate matrices too."""
    aucs = np.asarray(aucs, dtype=float)
    overall_auc = np.asarray(overall_auc, dtype=float)
    gap = aucs.max(axis=-1) - aucs.min(axis=-1)
    worst = aucs.min(axis=-1)
    # ES-AUC (Luo et al. 2024, FairVision): AUC / (1 + sum_g |AUC - AUC_g|)
    es = overall_auc / (1.0 + np.abs(aucs - overall_auc[..., None]).sum(axis=-1))
    psd = aucs.std(axis=-1)  # performance standard deviation across groups (population std, ddof = 0)
    return {"auc_gap": gap, "worst_group_auc": worst, "es_auc": es, "psd": psd}


def _null_group(n, n_pos, reason):
    d = {"n": int(n), "n_pos": int(n_pos)}
    for m in GROUP_METRICS:
        d[m], d[f"{m}_ci"] = None, None
    d["reason"] = reason
    return d


def _null_comparison(a, b, reason):
    return {"group_a": a, "group_b": b, "auc_diff": None, "auc_diff_ci": None, "auc_se": None, "auc_z": None,
            "auc_p": None, "auc_p_adj": None, "auc_significant": None, "tpr_diff": None, "tpr_ci": None,
            "fpr_diff": None, "fpr_ci": None, "ks_stat": None, "ks_p": None, "ks_p_adj": None,
            "ks_significant": None, "reason": reason}


@dataclass(frozen=True)
class TaskSettings:
    """The settings of :func:`run_audit` that one task's audit uses."""

    target_fpr: float  # the operating point: the overall ROC point whose FPR is closest to this
    n_boot: int  # bootstrap replicates (0: no CIs)
    alpha: float  # 1 − CI level, and the significance level before the multiple-testing correction
    seed: int  # every bootstrap stream derives from it (task, attribute and label kind spawn their own)
    min_n: int  # groups with fewer labelled rows get null metrics and a reason


def _audit_task(kind: str, task: str, y: np.ndarray, p: np.ndarray, attrs: dict, settings: TaskSettings):
    """Nested result for one task, its tidy rows, and its comparison dicts (raw p-values, adjusted later)."""
    from scipy.stats import ks_2samp

    s = settings
    target, n_boot, alpha, seed, min_n = s.target_fpr, s.n_boot, s.alpha, s.seed, s.min_n
    rows: list[dict] = []
    comps: list[dict] = []
    n, n_pos = int(y.size), int(y.sum())
    out: dict = {"n": n, "n_pos": n_pos, "threshold": None, "threshold_ci": None, "target_fpr": target}
    reason = degenerate_reason(n, n_pos, 1)
    overall: dict = {"n": n, "n_pos": n_pos}
    r = None
    if reason is None:
        r = bs.Ranked.from_scores(y, p)
        k0 = bs.threshold_index(r.curves(None), target)
        point = {m: float(v[0]) for m, v in _metrics_from_ranked(r, None, target).items()}
        reps = (bootstrap_metrics(y, p, target, n_boot, bs.derive_rng(seed, kind, task, OVERALL), ranked=r)
                if n_boot > 0 else None)
        for m in METRICS:
            lo, hi = bs.percentile_ci(reps[m], alpha) if reps is not None else (None, None)
            overall[m], overall[f"{m}_ci"] = _f(point[m]), _ci(lo, hi)
            rows.append(dict(task=task, attribute=OVERALL, group=OVERALL, metric=m, value=point[m],
                             ci_low=_f(lo) if lo is not None else None, ci_high=_f(hi) if hi is not None else None,
                             n=n, n_pos=n_pos, reason=None))
        out["threshold"], out["threshold_ci"] = overall["threshold"], overall["threshold_ci"]
    else:
        for m in METRICS:
            overall[m], overall[f"{m}_ci"] = None, None
            rows.append(dict(task=task, attribute=OVERALL, group=OVERALL, metric=m, value=None, ci_low=None,
                             ci_high=None, n=n, n_pos=n_pos, reason=reason))
    overall["reason"] = reason
    out["overall"] = overall
    out["reason"] = reason
    out["attributes"] = {}

    for a, (lab, groups) in attrs.items():
        codes = np.full(lab.size, -1, dtype=np.int64)
        for gi, g in enumerate(groups):
            codes[lab == g] = gi
        ares: dict = {"n_missing": int((codes < 0).sum()), "groups": {}}
        cs = codes[r.order] if r is not None else codes
        ys = r.y if r is not None else y
        info = []
        for gi, g in enumerate(groups):
            rows_g = np.flatnonzero(cs == gi)
            ng, npg = int(rows_g.size), int(ys[rows_g].sum())
            why = reason and f"task not evaluable: {reason}" or degenerate_reason(ng, npg, min_n)
            info.append((g, rows_g, ng, npg, why))
        valid = [i for i, t in enumerate(info) if t[4] is None]
        subs = {i: r.subset(info[i][1]) for i in valid}
        # point estimates at the global operating point
        point_g = {}
        for i in valid:
            cg = subs[i].curves(None)
            tpr, fpr = bs.rates_at(cg, bs.local_index(subs[i], k0))
            point_g[i] = {"auc": float(bs.auc_from_curves(cg)[0]), "tpr": float(tpr[0]), "fpr": float(fpr[0])}
            point_g[i]["youden"] = point_g[i]["tpr"] - point_g[i]["fpr"]
        # bootstrap within (group, class) strata; the threshold is re-chosen on each whole replicate
        reps_g = None
        if valid and n_boot > 0:
            acc = {m: [] for m in ("auc", "tpr", "fpr")}
            acc_all = []
            rng = bs.derive_rng(seed, kind, task, a)
            for W in bs.stratified_counts(cs * 2 + ys, n_boot, rng):
                c_all = r.curves(W)
                k = bs.threshold_index(c_all, target)
                acc_all.append(bs.auc_from_curves(c_all))
                cols = {m: np.empty((W.shape[0], len(valid))) for m in acc}
                for j, i in enumerate(valid):
                    cg = subs[i].curves(W[:, info[i][1]])
                    cols["auc"][:, j] = bs.auc_from_curves(cg)
                    cols["tpr"][:, j], cols["fpr"][:, j] = bs.rates_at(cg, bs.local_index(subs[i], k))
                for m in acc:
                    acc[m].append(cols[m])
            reps_g = {m: np.concatenate(v) for m, v in acc.items()}
            reps_g["youden"] = reps_g["tpr"] - reps_g["fpr"]
            reps_all = np.concatenate(acc_all)
        for i, (g, rows_g, ng, npg, why) in enumerate(info):
            if why is not None:
                ares["groups"][g] = _null_group(ng, npg, why)
                for m in GROUP_METRICS:
                    rows.append(dict(task=task, attribute=a, group=g, metric=m, value=None, ci_low=None, ci_high=None,
                                     n=ng, n_pos=npg, reason=why))
                continue
            j = valid.index(i)
            d = {"n": ng, "n_pos": npg}
            for m in GROUP_METRICS:
                lo, hi = bs.percentile_ci(reps_g[m][:, j], alpha) if reps_g is not None else (None, None)
                d[m], d[f"{m}_ci"] = point_g[i][m], _ci(lo, hi)
                rows.append(dict(task=task, attribute=a, group=g, metric=m, value=point_g[i][m],
                                 ci_low=None if lo is None else _f(lo), ci_high=None if hi is None else _f(hi),
                                 n=ng, n_pos=npg, reason=None))
            d["reason"] = None
            ares["groups"][g] = d
        # summaries over evaluated groups
        n_eval = len(valid)
        ares["n_groups_evaluated"] = n_eval
        s_reason = None if n_eval >= 2 else f"fewer than two groups evaluated ({n_eval})"
        if s_reason is None:
            aucs = np.array([point_g[i]["auc"] for i in valid])
            sm = _summaries(overall["auc"], aucs)
            sm_reps = _summaries(reps_all, reps_g["auc"]) if reps_g is not None else None
            ares["worst_group"] = info[valid[int(np.argmin(aucs))]][0]
        else:
            ares["worst_group"] = None
        n_attr = int((codes >= 0).sum())
        npos_attr = int(y[codes >= 0].sum())
        for m in SUMMARY_METRICS:
            if s_reason is None:
                lo, hi = bs.percentile_ci(sm_reps[m], alpha) if sm_reps is not None else (None, None)
                val = float(sm[m])
                ares[m], ares[f"{m}_ci"] = val, _ci(lo, hi)
                rows.append(dict(task=task, attribute=a, group=SUMMARY, metric=m, value=val,
                                 ci_low=None if lo is None else _f(lo), ci_high=None if hi is None else _f(hi),
                                 n=n_attr, n_pos=npos_attr, reason=None))
            else:
                ares[m], ares[f"{m}_ci"] = None, None
                rows.append(dict(task=task, attribute=a, group=SUMMARY, metric=m, value=None, ci_low=None,
                                 ci_high=None, n=n_attr, n_pos=npos_attr, reason=s_reason))
        ares["summary_reason"] = s_reason
        # pairwise comparisons
        clist = []
        for (ia, ga), (ib, gb) in itertools.combinations(list(enumerate(groups)), 2):
            bad = [info[i][0] for i in (ia, ib) if info[i][4] is not None]
            if bad:
                c = _null_comparison(ga, gb, "; ".join(f"group {g!r} not evaluated: {info[groups.index(g)][4]}"
                                                       for g in bad))
            else:
                sa, sb = subs[ia], subs[ib]
                pa = sa.values[sa.block_id - 1]
                pb = sb.values[sb.block_id - 1]
                dl = delong_unpaired(sa.y, pa, sb.y, pb)
                ks = ks_2samp(pa, pb)
                c = {"group_a": ga, "group_b": gb, "auc_diff": point_g[ia]["auc"] - point_g[ib]["auc"],
                     "auc_diff_ci": None, "auc_se": dl.se, "auc_z": dl.z, "auc_p": dl.p, "auc_p_adj": None,
                     "auc_significant": None, "tpr_diff": point_g[ia]["tpr"] - point_g[ib]["tpr"], "tpr_ci": None,
                     "fpr_diff": point_g[ia]["fpr"] - point_g[ib]["fpr"], "fpr_ci": None,
                     "ks_stat": float(ks.statistic), "ks_p": float(ks.pvalue), "ks_p_adj": None,
                     "ks_significant": None, "reason": None}
                if reps_g is not None:
                    ja, jb = valid.index(ia), valid.index(ib)
                    for m, key in (("auc", "auc_diff_ci"), ("tpr", "tpr_ci"), ("fpr", "fpr_ci")):
                        lo, hi = bs.percentile_ci(reps_g[m][:, ja] - reps_g[m][:, jb], alpha)
                        c[key] = _ci(lo, hi)
            clist.append(c)
            comps.append(c)
        ares["comparisons"] = clist
        out["attributes"][a] = ares
    for row in rows:
        row["labels"] = kind
    return out, rows, comps


# ----------------------------------------------------------------------------------------------------------------
# Public API


def run_audit(df, attributes: Iterable[str], tasks: Iterable[str] | None = None, target_fpr: float = 0.2,
              n_boot: int = 2000, alpha: float = 0.05, correction: str = "by", seed: int = 0, resample: str = "none",
              min_n: int = 20, *, labels: str = "observed", age_bins: Sequence[float] | None = None,
              resample_by: str | None = None, resample_size_factor: float = 1.0, drop_missing_scores: bool = False,
              path=None) -> AuditResult:
    """Audit a predictions table (one row per image: ``y_T``, ``p_T``, attribute columns) for every task and
    attribute.

    ``labels``: ``observed`` (``y_T``), ``true`` (``ytrue_T``) or ``both`` (two audits; p-values form one family).
    ``resample="balanced"``: per task, the test set is first resampled as Glocker et al. (balance the groups of
    ``resample_by`` — default the first attribute — then prevalence, then age bins). ``age_bins`` turns ``age`` into
    ``[a,b)`` groups. Groups with fewer than ``min_n`` labelled rows or one class get null metrics and a reason.
    """
    import pandas as pd

    attributes = list(dict.fromkeys(attributes))
    if not attributes:
        raise InputError("no attribute to audit", hint="pass at least one --attribute, e.g. --attribute sex")
    if not 0.0 < float(target_fpr) < 1.0:
        raise InputError(f"target FPR {target_fpr} must be strictly between 0 and 1", hint="e.g. --target-fpr 0.2")
    if not 0.0 < float(alpha) < 1.0:
        raise InputError(f"alpha {alpha} must be strictly between 0 and 1", hint="e.g. --alpha 0.05")
    if int(n_boot) < 0:
        raise InputError(f"n_boot {n_boot} must be >= 0", hint="0 skips the bootstrap CIs")
    if correction not in CORRECTIONS:
        raise InputError(f"unknown correction {correction!r}", hint=f"choose one of {', '.join(CORRECTIONS)}")
    if resample not in RESAMPLE_METHODS:
        raise InputError(f"unknown resampling {resample!r}", hint=f"choose one of {', '.join(RESAMPLE_METHODS)}")
    if labels not in LABEL_KINDS:
        raise InputError(f"unknown labels {labels!r}", hint=f"choose one of {', '.join(LABEL_KINDS)}")
    if int(min_n) < 1:
        raise InputError(f"min_n {min_n} must be >= 1")
    if len(df) == 0:
        raise InputError("predictions table has no rows", path=path)
    check_ids(df, path=path)
    check_attributes(df, attributes, path=path)
    resample_by = resample_by or attributes[0]
    if resample != "none":
        check_attributes(df, [resample_by], path=path)
    tasks = find_tasks(df, tasks, labels=labels, path=path)
    age_bins = list(age_bins) if age_bins is not None else None
    settings = {"attributes": attributes, "tasks": tasks, "target_fpr": float(target_fpr), "n_boot": int(n_boot),
                "alpha": float(alpha), "correction": correction, "seed": int(seed), "resample": resample,
                "resample_by": resample_by if resample != "none" else None, "age_bins": age_bins,
                "min_n": int(min_n), "labels": labels, "drop_missing_scores": bool(drop_missing_scores),
                "threshold_rule": THRESHOLD_RULE,
                "ci": "percentile bootstrap; overall: resampled within class; groups, gaps and differences: within "
                      "group x class (missing attribute its own stratum)",
                "pvalue_family": "every auc_p and ks_p of this call"}
    task_settings = TaskSettings(target_fpr=float(target_fpr), n_boot=int(n_boot), alpha=float(alpha), seed=int(seed),
                                 min_n=int(min_n))
    all_attr = {a: attribute_labels(df[a], a, age_bins, path=path) for a in dict.fromkeys(attributes + (
        [resample_by] if resample != "none" else []))}
    kinds = ["observed", "true"] if labels == "both" else [labels]
    results: dict[str, dict] = {k: {} for k in kinds}
    all_rows: list[dict] = []
    all_comps: list[tuple[str, str, str, dict]] = []
    resampling = None
    if resample != "none":
        has_age = "age" in df.columns
        resampling = {"method": resample, "attribute": resample_by,
                      "age_bins": bin_labels(age_bins or list(DEFAULT_AGE_EDGES)) if has_age else None,
                      "age_column": "age" if has_age else None, "seed": int(seed),
                      "size_factor": float(resample_size_factor), "tasks": {}}
    for kind in kinds:
        for t in tasks:
            y, p, keep = task_arrays(df, t, label_column(t, kind), drop_missing_scores, path=path)
            n_labelled = int((~np.isnan(pd.to_numeric(df[label_column(t, kind)], errors="coerce").to_numpy(float)))
                             .sum()) if drop_missing_scores else int(keep.sum())
            attrs = {a: (all_attr[a][0][keep], all_attr[a][1]) for a in attributes}
            rep = None
            if resample != "none":
                ages = (pd.to_numeric(df["age"], errors="coerce").to_numpy(float)[keep]
                        if "age" in df.columns else None)
                idx, rep = balanced_resample(all_attr[resample_by][0][keep], y, ages,
                                             age_edges=age_bins, seed=int(bs.derive_rng(seed, "resample", kind, t)
                                                                          .integers(2**31)),
                                             size_factor=resample_size_factor)
                y, p = y[idx], p[idx]
                attrs = {a: (lab[idx], groups) for a, (lab, groups) in attrs.items()}
                key = t if kind == "observed" or labels != "both" else f"{t} (true)"
                resampling["tasks"][key] = rep
            res, rows, comps = _audit_task(kind, t, y, p, attrs, task_settings)
            res["n_dropped_missing_score"] = n_labelled - int(keep.sum())
            if rep is not None:
                res["resampling"] = rep
            results[kind][t] = res
            all_rows.extend(rows)
            all_comps.extend((kind, t, a, c) for a in res["attributes"] for c in res["attributes"][a]["comparisons"])
    # one family of p-values for the whole call
    raw = np.array([c["auc_p"] if c["auc_p"] is not None else np.nan for *_, c in all_comps] +
                   [c["ks_p"] if c["ks_p"] is not None else np.nan for *_, c in all_comps], dtype=float)
    adj = adjust_pvalues(raw, correction) if raw.size else raw
    m = len(all_comps)
    for i, (*_, c) in enumerate(all_comps):
        for key, val in (("auc", adj[i]), ("ks", adj[m + i])):
            if np.isfinite(val):
                c[f"{key}_p_adj"] = float(val)
                c[f"{key}_significant"] = bool(val < alpha)
    by_group = pd.DataFrame(all_rows, columns=BY_GROUP_COLUMNS)
    for col in ("value", "ci_low", "ci_high"):
        by_group[col] = pd.to_numeric(by_group[col], errors="coerce").astype(float)
    for col in ("n", "n_pos"):
        by_group[col] = by_group[col].astype("int64")
    by_group["group"] = by_group["group"].astype(str)
    comp_df = pd.DataFrame([{"labels": k, "task": t, "attribute": a, **{kk: (vv if not isinstance(vv, list) else None)
                                                                      for kk, vv in c.items()},
                             **_split_ci(c)} for k, t, a, c in all_comps],
                           columns=_COMP_COLUMNS)
    n_tests = int(np.isfinite(raw).sum())
    n_sig = int(sum(bool(c.get(f"{k}_significant")) for *_, c in all_comps for k in ("auc", "ks")))
    return AuditResult(settings=settings, tasks=results, by_group=by_group, comparisons=comp_df,
                       resampling=resampling, n_tests=n_tests, n_significant=n_sig,
                       input={"path": str(path) if path is not None else None, "n_rows": int(len(df))})


_COMP_COLUMNS = ["labels", "task", "attribute", "group_a", "group_b", "auc_diff", "auc_diff_ci_low",
                 "auc_diff_ci_high", "auc_se", "auc_z", "auc_p", "auc_p_adj", "auc_significant", "tpr_diff",
                 "tpr_ci_low", "tpr_ci_high", "fpr_diff", "fpr_ci_low", "fpr_ci_high", "ks_stat", "ks_p", "ks_p_adj",
                 "ks_significant", "reason"]


def _split_ci(c: dict) -> dict:
    out = {}
    for key, base in (("auc_diff_ci", "auc_diff_ci"), ("tpr_ci", "tpr_ci"), ("fpr_ci", "fpr_ci")):
        ci = c.get(key) or [None, None]
        out[f"{base}_low"], out[f"{base}_high"] = ci[0], ci[1]
    return out


def subgroup_summary(y, p, groups, min_n: int = 1) -> dict:
    """Fast subgroup AUC summary (no bootstrap) for model selection during training.

    Returns ``{auc, worst_group_auc, auc_gap, es_auc, psd, group_aucs}``; groups that are missing (None/NaN), smaller
    than ``min_n`` or one-class are left out of the summaries (their ``group_aucs`` entry is None). Rows with an
    unknown label (NaN) are ignored.
    """
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    g = np.asarray(groups, dtype=object)
    ok = ~np.isnan(y) & ~np.isnan(p)
    y, p, g = y[ok].astype(np.int32), p[ok], g[ok]
    nan = float("nan")
    if degenerate_reason(int(y.size), int(y.sum()), 1):
        return {"auc": nan, "worst_group_auc": nan, "auc_gap": nan, "es_auc": nan, "psd": nan, "group_aucs": {}}
    r = bs.Ranked.from_scores(y, p)
    auc = float(bs.auc_from_curves(r.curves())[0])
    missing = np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in g], dtype=bool)
    keys = np.array([None if m else _value_str(v) for v, m in zip(g, missing)], dtype=object)
    gs = keys[r.order]
    group_aucs: dict[str, float | None] = {}
    for k in sorted({k for k in keys if k is not None}):
        rows = np.flatnonzero(gs == k)
        if degenerate_reason(int(rows.size), int(r.y[rows].sum()), min_n):
            group_aucs[k] = None
            continue
        group_aucs[k] = float(bs.auc_from_curves(r.subset(rows).curves())[0])
    vals = np.array([v for v in group_aucs.values() if v is not None])
    if vals.size == 0:
        return {"auc": auc, "worst_group_auc": nan, "auc_gap": nan, "es_auc": nan, "psd": nan,
                "group_aucs": group_aucs}
    sm = _summaries(auc, vals)
    return {"auc": auc, **{k: float(v) for k, v in sm.items()}, "group_aucs": group_aucs}
