"""Bias propagation: put the gaps of several audits (teacher, student, …) side by side and decide, for each model
against the reference (the first), whether a gap was reduced, amplified, inherited (equivalent within a margin) or
whether the data cannot tell (inconclusive) — with a test of the change and an equivalence test (TOST).

Reads audit directories: ``audit.json`` (performance audit), optionally ``features_audit.json`` (feature-space KS
audit) and ``probes.json`` (attribute probes).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxrdistill.errors import InputError
from cxrdistill.evaluation.audit import attribute_labels
from cxrdistill.evaluation.multitest import CORRECTIONS, adjust_pvalues
from cxrdistill.evaluation.predictions import read_predictions, task_arrays
from cxrdistill.storage.io import clean_json

VERDICTS = ("reduced", "amplified", "inherited", "inconclusive")
DEFAULT_MARGIN = 0.02  # equivalence margin: ± 0.02 on the quantity's own scale (AUC for AUC gaps)
POWER = 0.8            # power of the "minimum detectable change"
VERDICT_HELP = {
    "reduced": "the change is significant after correction and the bias is smaller",
    "amplified": "the change is significant after correction and the bias is larger",
    "inherited": "equivalent: the 90% CI of the change lies within ± the margin (TOST, after correction)",
    "inconclusive": "neither a significant change nor equivalence: not enough data to tell",
}

METHOD = (
    "Each bias quantity is compared with the reference model's (the first audit). For AUC/TPR/FPR gaps and per-pair "
    "differences the bias magnitude is |value|; for probe AUCs it is the AUC itself. The change "
    "delta = magnitude(model) - magnitude(reference) has a standard error se_delta. Paired (AUC gaps and AUC "
    "differences, when both audits' predictions files can be read and hold the same images): a stratified bootstrap "
    "that resamples the images once for both models, so that se_delta is the spread of the per-replicate change. "
    "Otherwise unpaired: se_delta = sqrt(se_ref^2 + se_model^2), each standard error from the audit's 95% CI as "
    "(high - low) / (2 * 1.96) (gaps combine the two groups' errors; TPR/FPR of a group without a CI use the "
    "binomial error at the fixed threshold); on the same test images this is conservative (too wide). Change test: "
    "two-sided z = delta / se_delta. Equivalence test (TOST): two one-sided z-tests of delta <= -margin and "
    "delta >= +margin, p_equiv = the larger p, i.e. equivalent at level alpha when the (1 - 2 alpha) CI of delta "
    "lies within ± margin. Feature-space results compare the share of significant KS tests (n_significant / "
    "n_tests): pooled two-proportion z-test for the change, an unpooled error (half a success added to each "
    "share) for the TOST, treating tests as "
    "independent trials (an approximation). Within one model-vs-reference comparison the change p-values form one "
    "family and the equivalence p-values another, each adjusted with the chosen correction. Verdict: 'reduced' or "
    "'amplified' when p_adj < alpha (smaller or larger magnitude); else 'inherited' when p_equiv_adj < alpha (the "
    "model keeps the reference's bias within ± margin, including when neither model shows it); else "
    "'inconclusive' with the minimum detectable change mdc = (z_(1-alpha/2) + z_power) * se_delta (power 0.8, "
    "alpha before correction): changes smaller than that could not have been seen. Rows without a test (bias "
    "score, context metrics) carry no verdict."
)

_Z975 = 1.959963984540054


@dataclass
class AuditBundle:
    name: str
    path: Path
    audit: dict | None
    features: dict | None
    probes: dict | None


@dataclass
class CompareResult:
    summary: dict          # compare.json
    tidy: pd.DataFrame     # compare.parquet


def _read_json(p: Path) -> dict:
    try:
        with open(p, encoding="utf-8") as fh:
            obj = json.load(fh)
    except json.JSONDecodeError as e:
        raise InputError(f"is not valid JSON ({e.msg} at line {e.lineno})", path=p) from None
    if not isinstance(obj, dict):
        raise InputError("must hold a JSON object", path=p)
    return obj


def load_audit_dir(path: str | Path, name: str | None = None) -> AuditBundle:
    """An audit output directory: audit.json (required unless a feature audit or probes are there)."""
    p = Path(path)
    if not p.is_dir():
        raise InputError("audit directory not found", path=p, hint="give the --out directory of `cxrdistill audit`")
    files = {k: p / f for k, f in (("audit", "audit.json"), ("features", "features_audit.json"),
                                   ("probes", "probes.json"))}
    got = {k: (_read_json(f) if f.exists() else None) for k, f in files.items()}
    if not any(got.values()):
        raise InputError("holds none of audit.json, features_audit.json, probes.json", path=p,
                         hint="run `cxrdistill audit … --out DIR` (and audit-features / probe-attributes) first")
    if got["audit"] is not None and not isinstance(got["audit"].get("tasks"), dict):
        raise InputError("has no 'tasks' object", path=files["audit"], hint="is this a `cxrdistill audit` output?")
    return AuditBundle(name=name or p.name, path=p, **got)


# ---------------------------------------------------------------- standard errors


def se_from(entry: dict, key: str, ci_key: str | None = None, level: float = 0.95) -> float | None:
    """Standard error of ``entry[key]``: from ``<key>_se``, bootstrap replicates ``<key>_boot``, or the CI.

    A CI that is empty (zero width) or does not contain the point estimate is ignored (None is returned, so the
    caller falls back to another error estimate) rather than turned into a zero or wrong error.
    """
    if _num(entry.get(f"{key}_se")) is not None:
        return float(entry[f"{key}_se"])
    boot = entry.get(f"{key}_boot")
    if isinstance(boot, list) and len(boot) > 1:
        b = np.asarray([x for x in boot if x is not None], dtype=float)
        b = b[np.isfinite(b)]
        if b.size > 1:
            return float(b.std(ddof=1))
    lo, hi = _ci(entry.get(ci_key or f"{key}_ci"))
    v = _num(entry.get(key))
    if lo is None or hi is None or not hi > lo:
        return None
    if v is not None and not (lo - 1e-9 <= v <= hi + 1e-9):
        return None
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2)) if level != 0.95 else _Z975
    return (hi - lo) / (2 * z)


def _binom_se(p: float | None, n: int | None) -> float | None:
    if p is None or not n:
        return None
    q = min(max(float(p), 0.5 / n), 1 - 0.5 / n)  # keep a non-zero error when the rate is 0 or 1
    return math.sqrt(q * (1 - q) / n)


def _num(x) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _ci(x) -> tuple[float | None, float | None]:
    if isinstance(x, (list, tuple)) and len(x) == 2:
        return _num(x[0]), _num(x[1])
    return None, None


# ---------------------------------------------------------------- rows of one audit


def _row(kind, metric, task, attribute, group_a, group_b, value, ci=(None, None), se=None, n=None, test="z",
         magnitude="abs", x=None):
    value, se = _num(value), _num(se)
    ci_source = "audit" if ci[0] is not None and ci[1] is not None else None
    if ci_source is None and value is not None and se is not None:  # e.g. TPR/FPR gaps: normal CI from the SE
        lo = value - _Z975 * se
        ci, ci_source = (max(lo, 0.0) if metric.endswith("_gap") else lo, value + _Z975 * se), "normal from se"
    return {"kind": kind, "metric": metric, "task": task, "attribute": attribute, "group_a": group_a,
            "group_b": group_b, "value": value, "ci_low": ci[0], "ci_high": ci[1], "ci_source": ci_source, "se": se,
            "n": n, "test": test, "magnitude": magnitude, "x": x}


def performance_rows(audit: dict) -> list[dict]:
    """The performance gaps of an ``audit.json`` (as ``cxrdistill audit`` writes it), one row per gap."""
    level = float(audit.get("ci_level", 0.95))
    rows = []
    for task, t in (audit.get("tasks") or {}).items():
        ov = t.get("overall") or {}
        rows.append(_row("performance", "auc_overall", task, None, None, None, ov.get("auc"), _ci(ov.get("auc_ci")),
                         se_from(ov, "auc", level=level), ov.get("n"), test=None, magnitude="value"))
        for attr, a in (t.get("attributes") or {}).items():
            groups = {str(k): v for k, v in (a.get("groups") or {}).items()}
            g_auc = {k: (_num(v.get("auc")), se_from(v, "auc", level=level)) for k, v in groups.items()}
            ok = {k: v for k, v in g_auc.items() if v[0] is not None}
            # AUC gap = max - min group AUC; its error combines the two extreme groups' errors
            se_gap = None
            if len(ok) >= 2:
                hi = max(ok, key=lambda k: ok[k][0])
                lo = min(ok, key=lambda k: ok[k][0])
                if ok[hi][1] is not None and ok[lo][1] is not None:
                    se_gap = math.hypot(ok[hi][1], ok[lo][1])
            gap = a.get("auc_gap")
            if gap is None and len(ok) >= 2:
                gap = max(v[0] for v in ok.values()) - min(v[0] for v in ok.values())
            rows.append(_row("performance", "auc_gap", task, attr, None, None, gap, _ci(a.get("auc_gap_ci")),
                             se_from(a, "auc_gap", level=level) or se_gap, sum(int(v.get("n") or 0)
                                                                              for v in groups.values())))
            rows.append(_row("performance", "worst_group_auc", task, attr, None, None, a.get("worst_group_auc"),
                             test=None, magnitude="value"))
            rows.append(_row("performance", "es_auc", task, attr, None, None, a.get("es_auc"), test=None,
                             magnitude="value"))
            for rate, n_of in (("tpr", lambda v: v.get("n_pos")),
                               ("fpr", lambda v: (v.get("n") or 0) - (v.get("n_pos") or 0))):
                vals = {}
                for k, v in groups.items():
                    r = _num(v.get(rate))
                    if r is None:
                        continue
                    se = se_from(v, rate, level=level) or _binom_se(r, int(n_of(v) or 0))
                    vals[k] = (r, se)
                if len(vals) >= 2:
                    hi = max(vals, key=lambda k: vals[k][0])
                    lo = min(vals, key=lambda k: vals[k][0])
                    se = (math.hypot(vals[hi][1], vals[lo][1])
                          if vals[hi][1] is not None and vals[lo][1] is not None else None)
                    gap_v = a.get(f"{rate}_gap", vals[hi][0] - vals[lo][0])
                    rows.append(_row("performance", f"{rate}_gap", task, attr, None, None, gap_v, se=se))
            for c in a.get("comparisons") or []:
                ga, gb = str(c.get("group_a")), str(c.get("group_b"))
                # AUC difference: its own CI if stored, else the two (disjoint, independent) groups' errors
                se_d = se_from(c, "auc_diff", level=level) or _num(c.get("auc_se"))  # bootstrap CI, else DeLong
                if se_d is None and ga in g_auc and gb in g_auc and None not in (g_auc[ga][1], g_auc[gb][1]):
                    se_d = math.hypot(g_auc[ga][1], g_auc[gb][1])
                rows.append(_row("performance", "auc_diff", task, attr, ga, gb, c.get("auc_diff"),
                                 _ci(c.get("auc_diff_ci")), se_d))
                for rate, n_of in (("tpr", lambda v: v.get("n_pos")),
                                   ("fpr", lambda v: (v.get("n") or 0) - (v.get("n_pos") or 0))):
                    se_r = se_from(c, f"{rate}_diff", f"{rate}_ci", level)
                    if se_r is None and ga in groups and gb in groups:  # binomial errors of the two groups
                        sa = _binom_se(_num(groups[ga].get(rate)), int(n_of(groups[ga]) or 0))
                        sb = _binom_se(_num(groups[gb].get(rate)), int(n_of(groups[gb]) or 0))
                        se_r = math.hypot(sa, sb) if sa is not None and sb is not None else None
                    rows.append(_row("performance", f"{rate}_diff", task, attr, ga, gb, c.get(f"{rate}_diff"),
                                     _ci(c.get(f"{rate}_ci")), se_r))
                rows.append(_row("performance", "score_ks_stat", task, attr, ga, gb, c.get("ks_stat"), test=None,
                                 magnitude="value"))
    return rows


def feature_rows(fa: dict) -> list[dict]:
    """Feature-space results: share of significant KS tests (tested) and the bias score (descriptive)."""
    rows = [_row("features", "n_significant", None, None, None, None, fa.get("n_significant"), n=fa.get("n_tests"),
                 test="proportion", magnitude="value", x=fa.get("n_significant"))]
    for attr, d in (fa.get("by_attribute") or {}).items():
        rows.append(_row("features", "n_significant", None, attr, None, None, d.get("n_significant"),
                         n=d.get("n_tests"), test="proportion", magnitude="value", x=d.get("n_significant")))
    bs = fa.get("bias_score") or {}
    rows.append(_row("features", "bias_score", None, None, None, None, bs.get("value"), test=None, magnitude="value"))
    for attr, v in (bs.get("by_attribute") or {}).items():
        rows.append(_row("features", "bias_score", None, attr, None, None, v, test=None, magnitude="value"))
    return rows


def probe_rows(pr: dict) -> list[dict]:
    """Probe AUCs (higher = more protected information encoded) and age-regression R² (descriptive)."""
    rows = []
    for attr, d in pr.items():
        if not isinstance(d, dict) or "auc" not in d:
            continue
        rows.append(_row("probes", "probe_auc", None, attr, None, None, d.get("auc"), _ci(d.get("auc_ci")),
                         se_from(d, "auc"), d.get("n"), magnitude="value"))
        per = d.get("per_class") or {}
        for cls, c in (per.items() if len(per) > 2 else ()):  # binary: both classes repeat the attribute's AUC
            # per-class AUCs are shown, not tested: the attribute-level AUC carries the verdict (fewer tests)
            rows.append(_row("probes", "probe_class_auc", None, attr, str(cls), None, c.get("auc"),
                             _ci(c.get("auc_ci")), se_from(c, "auc"), c.get("n"), test=None, magnitude="value"))
        reg = d.get("regression")
        if isinstance(reg, dict):
            rows.append(_row("probes", "probe_r2", None, attr, None, None, reg.get("r2"), n=reg.get("n"), test=None,
                             magnitude="value"))
    return rows


def bundle_rows(b: AuditBundle) -> pd.DataFrame:
    rows = []
    if b.audit:
        rows += performance_rows(b.audit)
    if b.features:
        rows += feature_rows(b.features)
    if b.probes:
        rows += probe_rows(b.probes)
    df = pd.DataFrame(rows, columns=list(_row("", "", None, None, None, None, None).keys()))
    # one orientation per pair, so that teacher "a vs b" meets student "b vs a"
    swap = df["group_b"].notna() & (df["group_a"].astype(str) > df["group_b"].astype(str))
    if swap.any():
        signed = swap & df["metric"].isin(["auc_diff", "tpr_diff", "fpr_diff"])
        df.loc[swap, ["group_a", "group_b"]] = df.loc[swap, ["group_b", "group_a"]].to_numpy()
        lo, hi = df.loc[signed, "ci_low"].copy(), df.loc[signed, "ci_high"].copy()
        df.loc[signed, "value"] = -df.loc[signed, "value"]
        df.loc[signed, "ci_low"], df.loc[signed, "ci_high"] = -hi, -lo
    df["model"] = b.name
    return df


# ---------------------------------------------------------------- paired bootstrap of AUC gaps


def _predictions_of(b: AuditBundle):
    """The predictions table an audit was computed from (its ``input.path``), or None when it cannot be read."""
    path = ((b.audit or {}).get("input") or {}).get("path")
    if not path:
        return None
    for cand in (Path(path), b.path / path):
        if cand.is_file():
            try:
                return read_predictions(cand)
            except (InputError, OSError, ValueError):
                return None
    return None


def _auc_rows(y: np.ndarray, P: np.ndarray) -> np.ndarray:
    """AUC of every row of the score matrix ``P`` (replicates × images) against labels ``y`` (Mann–Whitney)."""
    from scipy.stats import rankdata

    r = rankdata(P, axis=-1)
    n1 = y.sum()
    n0 = y.size - n1
    return ((r[..., y == 1]).sum(axis=-1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def paired_auc_changes(ref: AuditBundle, other: AuditBundle, *, n_boot: int | None = None,
                       seed: int | None = None) -> tuple[dict, str | None]:
    """Paired bootstrap of the change of every AUC gap and AUC difference, other minus reference.

    Both audits' predictions are read, matched by image id, and resampled together (within group × class, as the
    audit does), so one replicate gives both models' gaps on the same images. Returns ``{(task, attribute,
    group_a, group_b, metric): (delta, se)}`` for metric ``auc_gap`` (groups None) or ``auc_diff`` (groups sorted,
    delta of |difference|), and why pairing was not possible (or None)."""
    if not (ref.audit and other.audit):
        return {}, "no audit.json"
    st = ref.audit.get("settings") or {}
    if st.get("resample", "none") != "none" or (other.audit.get("settings") or {}).get("resample", "none") != "none":
        return {}, "audits on resampled test sets"
    dr, do = _predictions_of(ref), _predictions_of(other)
    if dr is None or do is None:
        return {}, "predictions files not found"
    ids_r, ids_o = dr["image_id"].astype(str), do["image_id"].astype(str)
    if set(ids_r) != set(ids_o):
        return {}, "the two predictions files hold different images"
    do = do.set_index(ids_o).loc[ids_r.to_numpy()].reset_index(drop=True)
    # at least 500 replicates whatever the audits used: the paired error needs them, and costs little
    n_boot = int(n_boot if n_boot is not None else max(int(st.get("n_boot") or 0), 500))
    seed = int(seed if seed is not None else st.get("seed") or 0)
    if n_boot < 50:
        return {}, "fewer than 50 bootstrap replicates"
    age_bins = st.get("age_bins")
    out: dict = {}
    for task, t_ref in (ref.audit.get("tasks") or {}).items():
        t_oth = (other.audit.get("tasks") or {}).get(task)
        if t_oth is None or f"p_{task}" not in do.columns or f"y_{task}" not in dr.columns:
            continue
        try:
            y, p_r, keep = task_arrays(dr, task)
            y_o, p_o, keep_o = task_arrays(do, task)
        except InputError:
            continue
        if not (np.array_equal(keep, keep_o) and np.array_equal(y, y_o)):
            continue  # the labels differ between the files: not the same test set
        for attr, a_ref in (t_ref.get("attributes") or {}).items():
            a_oth = (t_oth.get("attributes") or {}).get(attr)
            if a_oth is None or attr not in dr.columns:
                continue
            lab = np.asarray(attribute_labels(dr[attr], attr, age_bins)[0], dtype=object)[keep]
            groups = [g for g, v in (a_ref.get("groups") or {}).items()
                      if _num(v.get("auc")) is not None and _num(((a_oth.get("groups") or {}).get(g) or {})
                                                                  .get("auc")) is not None]
            if len(groups) < 2:
                continue
            rng = np.random.default_rng(np.random.SeedSequence([seed, *map(ord, f"{task}|{attr}")]))
            point, reps = {}, {}
            for g in groups:
                rows = np.flatnonzero(lab == g)
                yg = y[rows]
                if yg.min() == yg.max():
                    break
                pos, neg = rows[yg == 1], rows[yg == 0]
                idx = np.concatenate([pos[rng.integers(0, pos.size, (n_boot, pos.size))],
                                      neg[rng.integers(0, neg.size, (n_boot, neg.size))]], axis=1)
                yy = np.r_[np.ones(pos.size, int), np.zeros(neg.size, int)]
                point[g] = (_auc_rows(yy, p_r[np.r_[pos, neg]]), _auc_rows(yy, p_o[np.r_[pos, neg]]))
                reps[g] = (_auc_rows(yy, p_r[idx]), _auc_rows(yy, p_o[idx]))
            else:
                # the audits' own group AUCs must be these (else the files are not what the audits read)
                if any(abs(point[g][0] - float(a_ref["groups"][g]["auc"])) > 1e-6
                       or abs(point[g][1] - float(a_oth["groups"][g]["auc"])) > 1e-6 for g in groups):
                    continue
                gap = [np.max([reps[g][m] for g in groups], axis=0) - np.min([reps[g][m] for g in groups], axis=0)
                       for m in (0, 1)]
                gap0 = [max(point[g][m] for g in groups) - min(point[g][m] for g in groups) for m in (0, 1)]
                d = gap[1] - gap[0]
                out[(task, attr, None, None, "auc_gap")] = (gap0[1] - gap0[0], float(np.std(d, ddof=1)))
                for ga, gb in ((x, z) for i, x in enumerate(sorted(groups)) for z in sorted(groups)[i + 1:]):
                    dd = np.abs(reps[ga][1] - reps[gb][1]) - np.abs(reps[ga][0] - reps[gb][0])
                    d0 = abs(point[ga][1] - point[gb][1]) - abs(point[ga][0] - point[gb][0])
                    out[(task, attr, ga, gb, "auc_diff")] = (float(d0), float(np.std(dd, ddof=1)))
    return out, (None if out else "no AUC gap could be paired")


# ---------------------------------------------------------------- tests


def _two_sided(z: float) -> float:
    from scipy.stats import norm

    return float(2 * norm.sf(abs(z)))


def _z_p(delta: float, s: float) -> tuple[float, float]:
    """(z, two-sided p) of ``delta`` with standard error ``s``; a zero error makes any nonzero change certain."""
    if s == 0:
        return (0.0 if delta == 0 else math.copysign(math.inf, delta)), (1.0 if delta == 0 else 0.0)
    return delta / s, _two_sided(delta / s)


def z_test(mag_ref: float, se_ref: float, mag: float, se: float) -> tuple[float, float, float]:
    """(delta, z, two-sided p) for the change of a magnitude between two independent estimates."""
    delta = mag - mag_ref
    return (delta, *_z_p(delta, math.hypot(se_ref, se)))


def two_proportion_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float, float]:
    """Pooled two-proportion z-test of p2 - p1: (delta, z, two-sided p)."""
    from scipy.stats import norm

    p1, p2 = x1 / n1, x2 / n2
    pool = (x1 + x2) / (n1 + n2)
    s = math.sqrt(pool * (1 - pool) * (1 / n1 + 1 / n2))
    if s == 0:
        return p2 - p1, 0.0, 1.0
    z = (p2 - p1) / s
    return p2 - p1, z, float(2 * norm.sf(abs(z)))


def tost_p(delta: float, se: float, margin: float) -> float:
    """Two one-sided z-tests of equivalence (Schuirmann 1987): H0 delta <= -margin and H0 delta >= margin; the
    larger of the two p-values (small = the change lies within ± margin)."""
    from scipy.stats import norm

    if not se > 0:
        return 0.0 if abs(delta) < margin else 1.0
    return float(max(norm.sf((delta + margin) / se), norm.cdf((delta - margin) / se)))


def min_detectable_change(se: float, alpha: float = 0.05, power: float = POWER) -> float:
    """Smallest |change| a two-sided z-test at ``alpha`` detects with probability ``power``."""
    from scipy.stats import norm

    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * se)


def verdict_of(p_adj: float, p_equiv_adj: float, delta: float, alpha: float) -> str:
    """The four-word verdict from the adjusted change and equivalence p-values."""
    if p_adj < alpha:
        return "reduced" if delta < 0 else "amplified"
    if p_equiv_adj < alpha:
        return "inherited"
    return "inconclusive"


def _magnitude(v: float, how: str) -> float:
    return abs(v) if how == "abs" else v


def compare_bundles(bundles: list[AuditBundle], *, alpha: float = 0.05, correction: str = "by",
                    margin: float = DEFAULT_MARGIN, paired: bool = True) -> CompareResult:
    """Compare every model with the first (the reference): side-by-side values and four-word verdicts (see
    ``METHOD``). ``margin`` is the equivalence margin of the TOST; ``paired`` uses the audits' predictions files for
    a paired bootstrap of AUC gaps when they can be read."""
    if len(bundles) < 2:
        raise InputError("compare needs at least two audit directories", hint="cxrdistill compare DIR_A DIR_B")
    if correction not in CORRECTIONS:
        raise InputError(f"unknown correction {correction!r}", hint=f"choose one of {', '.join(CORRECTIONS)}")
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin > 0):
        raise InputError(f"equivalence margin {margin!r} must be a positive number", hint="e.g. --margin 0.02")
    if not 0.0 < float(alpha) < 0.5:
        raise InputError(f"alpha {alpha} must be strictly between 0 and 0.5", hint="e.g. --alpha 0.05")
    names = [b.name for b in bundles]
    if len(set(names)) != len(names):
        raise InputError(f"model names must be unique, got {names}", hint="pass --names teacher,student")
    frames = [bundle_rows(b) for b in bundles]
    key = ["kind", "metric", "task", "attribute", "group_a", "group_b"]
    long = pd.concat(frames, ignore_index=True)
    long[key] = long[key].astype(object).where(long[key].notna(), None)
    long["n"] = pd.to_numeric(long["n"], errors="coerce")
    long["test"] = long["test"].astype(object).where(long["test"].notna(), None)
    for c in ("value", "ci_low", "ci_high", "se"):
        long[c] = pd.to_numeric(long[c], errors="coerce").astype(float)
    ref = long[long["model"] == names[0]]
    for c in ("delta", "delta_se", "delta_ci_low", "delta_ci_high", "z", "p", "p_adj", "p_equiv", "p_equiv_adj",
              "mdc"):
        long[c] = np.nan
    long["paired"] = False
    long["margin"] = float(margin)
    long["verdict"] = None
    long["note"] = None
    long["reference"] = names[0]
    ref_idx = {tuple(r[k] for k in key): i for i, r in ref.iterrows()}
    summary_counts: dict[str, dict] = {}
    pairing: dict[str, str | None] = {}
    for b in bundles[1:]:
        sel = long.index[long["model"] == b.name]
        pair, why = paired_auc_changes(bundles[0], b) if paired else ({}, "not requested")
        pairing[b.name] = "paired bootstrap" if pair else f"unpaired ({why})"
        tested = []
        for i in sel:
            r = long.loc[i]
            k = tuple(r[c] for c in key)
            if r["test"] is None or pd.isna(r["test"]):
                continue
            if k not in ref_idx:
                long.at[i, "note"] = f"not in {names[0]}"
                continue
            a = ref.loc[ref_idx[k]]
            if pd.isna(r["value"]) or pd.isna(a["value"]):
                long.at[i, "note"] = "value missing"
                continue
            if r["test"] == "proportion":
                if pd.isna(a["n"]) or pd.isna(r["n"]) or not a["n"] or not r["n"]:
                    long.at[i, "note"] = "no tests"
                    continue
                x1, n1, x2, n2 = int(a["x"]), int(a["n"]), int(r["x"]), int(r["n"])
                d, z, p = two_proportion_test(x1, n1, x2, n2)
                # unpooled error with half a success added (never zero: 0 of 4 tests is no proof of equivalence)
                q1, q2 = (x1 + 0.5) / (n1 + 1), (x2 + 0.5) / (n2 + 1)
                se_d = math.sqrt(q1 * (1 - q1) / n1 + q2 * (1 - q2) / n2)
            elif (k[2], k[3], k[4], k[5], k[1]) in pair:  # (task, attribute, group_a, group_b, metric)
                d, se_d = pair[(k[2], k[3], k[4], k[5], k[1])]
                z, p = _z_p(d, se_d)
                long.at[i, "paired"] = True
            else:
                if pd.isna(a["se"]) or pd.isna(r["se"]):
                    long.at[i, "note"] = "no standard error (CI missing)"
                    continue
                d, z, p = z_test(_magnitude(a["value"], a["magnitude"]), float(a["se"]),
                                 _magnitude(r["value"], r["magnitude"]), float(r["se"]))
                se_d = math.hypot(float(a["se"]), float(r["se"]))
            if r["magnitude"] == "abs" and a["value"] * r["value"] < 0:
                long.at[i, "note"] = "direction reversed"
            long.loc[i, ["delta", "delta_se", "delta_ci_low", "delta_ci_high", "z", "p", "p_equiv", "mdc"]] = [
                d, se_d, d - _Z975 * se_d, d + _Z975 * se_d, z, p, tost_p(d, se_d, margin),
                min_detectable_change(se_d, alpha)]
            tested.append(i)
        if tested:
            long.loc[tested, "p_adj"] = adjust_pvalues(long.loc[tested, "p"].to_numpy(dtype=float), correction)
            long.loc[tested, "p_equiv_adj"] = adjust_pvalues(long.loc[tested, "p_equiv"].to_numpy(dtype=float),
                                                             correction)
            for i in tested:
                long.at[i, "verdict"] = verdict_of(long.at[i, "p_adj"], long.at[i, "p_equiv_adj"],
                                                   long.at[i, "delta"], alpha)
        counts = long.loc[sel, "verdict"].value_counts()
        summary_counts[b.name] = {v: int(counts.get(v, 0)) for v in VERDICTS}
        summary_counts[b.name]["not_tested"] = int(long.loc[sel, "verdict"].isna().sum())
    tidy = long.drop(columns=["x"])
    summary = {
        "models": names, "reference": names[0], "dirs": {b.name: str(b.path) for b in bundles},
        "alpha": alpha, "correction": correction, "margin": float(margin), "power": POWER, "method": METHOD,
        "verdicts": VERDICT_HELP, "pairing": pairing,
        "summary": summary_counts,
        "rows": _json_rows(tidy, names, key),
    }
    return CompareResult(summary=summary, tidy=tidy)


def _json_rows(tidy: pd.DataFrame, names: list[str], key: list[str]) -> list[dict]:
    out = []
    kt = tidy[key].astype(object).where(tidy[key].notna(), None)
    groups: dict[tuple, list[int]] = {}
    for i, k in zip(tidy.index, map(tuple, kt.to_numpy())):
        groups.setdefault(k, []).append(i)
    for k, idx in groups.items():
        sub = tidy.loc[idx]
        rec = dict(zip(key, k))
        rec["tested"] = bool(sub["test"].notna().any())
        rec["values"] = {r.model: {"value": r.value, "ci": None if pd.isna(r.ci_low) else [r.ci_low, r.ci_high],
                                   "se": r.se, "n": None if pd.isna(r.n) else int(r.n)}
                         for r in sub.itertuples()}
        rec["vs_reference"] = {r.model: {"delta": r.delta, "delta_se": r.delta_se,
                                         "delta_ci": None if pd.isna(r.delta_ci_low) else [r.delta_ci_low,
                                                                                           r.delta_ci_high],
                                         "paired": bool(r.paired), "z": r.z, "p": r.p, "p_adj": r.p_adj,
                                         "p_equiv": r.p_equiv, "p_equiv_adj": r.p_equiv_adj, "mdc": r.mdc,
                                         "verdict": r.verdict, "note": r.note}
                               for r in sub.itertuples() if r.model != names[0]}
        out.append(clean_json(rec))
    return out


def compare_dirs(dirs: list[str | Path], names: list[str] | None = None, *, alpha: float = 0.05,
                 correction: str = "by", margin: float = DEFAULT_MARGIN, paired: bool = True) -> CompareResult:
    """``cxrdistill compare``: load each audit directory and compare them with the first."""
    if names is not None and len(names) != len(dirs):
        raise InputError(f"{len(names)} names for {len(dirs)} directories", hint="one name per directory")
    if names is None:  # directory names; parent/name when two are alike (runs/teacher/audit, runs/student/audit)
        paths = [Path(d).resolve() for d in dirs]
        names = [p.name for p in paths]
        if len(set(names)) != len(names):
            names = [f"{p.parent.name}/{p.name}" for p in paths]
    bundles = [load_audit_dir(d, names[i]) for i, d in enumerate(dirs)]
    return compare_bundles(bundles, alpha=alpha, correction=correction, margin=margin, paired=paired)
