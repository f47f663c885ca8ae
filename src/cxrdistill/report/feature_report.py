"""Write the outputs of the feature-space audit, the attribute probes and the propagation comparison:
JSON, tidy Parquet, PNG plots and a self-contained HTML page (every string escaped), all atomically."""
from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd

from cxrdistill.storage.io import atomic_path, clean_json, write_json, write_parquet
from cxrdistill.report import feature_plots as fp
from cxrdistill.report.html import esc, page, paragraph, section, table

FEATURES_JSON = "features_audit.json"
FEATURES_TESTS = "features_tests.parquet"
FEATURES_HTML = "features_report.html"
PROBES_JSON = "probes.json"
PROBES_HTML = "probes_report.html"
COMPARE_JSON = "compare.json"
COMPARE_TABLE = "compare.parquet"
COMPARE_HTML = "report.html"


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", str(s)).strip("_")[:40] or "x"


def _write_png(data: bytes, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _img(data: bytes, caption: str) -> str:
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<figure><img src="{uri}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'


def _write_html(html: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")


def _fmt_p(p) -> str:
    if p is None or (isinstance(p, float) and not np.isfinite(p)):
        return ""
    return f"{p:.2e}" if p < 1e-3 else f"{p:.4f}"


def _ci_str(lo, hi) -> str:
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return ""
    return f"[{lo:.3f}, {hi:.3f}]"


# ---------------------------------------------------------------- feature audit


def write_feature_audit(result, out: str | Path, *, inputs: dict | None = None, seed: int = 0) -> dict[str, Path]:
    """features_audit.json, features_tests.parquet, PNG plots and features_report.html in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = dict(result.summary)
    if inputs:
        summary = {"inputs": inputs, **summary}
    figs: list[tuple[str, bytes, str]] = []
    s = summary
    if s.get("source") == "embeddings":
        Z = result.values
        evr = result.explained_variance_ratio
        figs.append(("features_pca_variance.png", fp.png_bytes(fp.scree_plot(evr)),
                     f"{len(evr)} PCA modes keep {float(np.sum(evr)):.1%} of the variance."))
        for attr, lab in result.labels.items():
            pairs = [(0, 1)] + ([(2, 3)] if Z.shape[1] >= 4 else [])
            for i, j in pairs:
                if Z.shape[1] <= j:
                    continue
                fig = fp.scatter_with_marginals(
                    Z[:, i], Z[:, j], lab, title=f"PCA modes {i + 1} and {j + 1} by {attr}",
                    xlabel=f"mode {i + 1} ({evr[i]:.1%})", ylabel=f"mode {j + 1} ({evr[j]:.1%})", seed=seed)
                figs.append((f"features_pca{i + 1}{j + 1}_{_slug(attr)}.png", fp.png_bytes(fig),
                             f"PCA modes {i + 1}/{j + 1} coloured by {attr}; marginals are per-group densities."))
            if result.tsne is not None:
                fig = fp.scatter_with_marginals(result.tsne[:, 0], result.tsne[:, 1],
                                                lab.iloc[result.tsne_rows].reset_index(drop=True),
                                                title=f"t-SNE by {attr}", xlabel="t-SNE 1", ylabel="t-SNE 2",
                                                seed=seed)
                figs.append((f"features_tsne_{_slug(attr)}.png", fp.png_bytes(fig),
                             f"t-SNE of {len(result.tsne_rows)} images coloured by {attr} (layout only; "
                             "distances between clusters are not meaningful)."))
    elif len(result.feature_names) >= 2:
        for attr, lab in result.labels.items():
            f0, f1 = result.feature_names[:2]
            fig = fp.scatter_with_marginals(result.values[:, 0], result.values[:, 1], lab,
                                            title=f"{f0} and {f1} by {attr}", xlabel=f0, ylabel=f1, seed=seed)
            figs.append((f"features_scatter_{_slug(attr)}.png", fp.png_bytes(fig),
                         f"{f0} vs {f1} coloured by {attr}; marginals are per-group densities."))
    if len(result.tests):
        figs.insert(0, ("features_ks_heatmap.png", fp.png_bytes(fp.ks_heatmap(result.tests, alpha=s["alpha"])),
                        "−log10 adjusted p of each KS test; stars: p_adj < 0.05 / 0.01 / 0.001."))
    paths = {}
    for name, data, _ in figs:
        _write_png(data, out / name)
        paths[name] = out / name
    summary["plots"] = [name for name, _, _ in figs]
    write_json(clean_json(summary), out / FEATURES_JSON)
    write_parquet(result.tests, out / FEATURES_TESTS)
    _write_html(feature_audit_html(summary, result.tests, figs), out / FEATURES_HTML)
    paths.update({FEATURES_JSON: out / FEATURES_JSON, FEATURES_TESTS: out / FEATURES_TESTS,
                  FEATURES_HTML: out / FEATURES_HTML})
    return paths


def feature_audit_html(summary: dict, tests: pd.DataFrame, figs: list[tuple[str, bytes, str]]) -> str:
    s = summary
    bs = s.get("bias_score") or {}
    overview = pd.DataFrame([
        ("images", s.get("n_images")),
        ("tests run", s.get("n_tests")),
        ("tests not run (group too small)", s.get("n_tests_not_run")),
        (f"significant (p_adj < {s.get('alpha')}, {s.get('correction')})", s.get("n_significant")),
        ("bias score", None if bs.get("value") is None else f"{bs['value']:.4f}"),
    ], columns=["quantity", "value"]).astype({"value": object})
    reading = (f"{s.get('n_significant')} of {s.get('n_tests')} KS tests show a significant difference between "
               f"groups after {s.get('correction')} correction.")
    parts = [section("Summary", [table(overview)], reading=reading)]
    ids = (s.get("inputs") or {}).get("ids")
    if ids:
        idt = pd.DataFrame([(k, ", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in ids.items()],
                           columns=["image ids", "value"]).astype({"value": object})
        parts.append(section("Matching embeddings and metadata", [table(idt)]))
    gs = s.get("group_sizes") or {}
    if gs:
        rows = [(a, g, n) for a, d in gs.items() for g, n in d.items()]
        parts.append(section("Groups", [table(pd.DataFrame(rows, columns=["attribute", "group", "n"]))]))
    if bs:
        ba = pd.DataFrame(list((bs.get("by_attribute") or {}).items()), columns=["attribute", "bias score"])
        bp = pd.DataFrame(bs.get("by_pair") or [])
        parts.append(section("Bias score", [table(ba, float_fmt="{:.4f}"),
                                            table(bp, float_fmt="{:.4f}") if len(bp) else "",
                                            paragraph(bs.get("definition", ""), "muted")]))
    if s.get("pca"):
        pc = s["pca"]
        parts.append(section("PCA", [paragraph(
            f"{pc['n_components']} modes kept ({pc['explained_variance_retained']:.1%} of the variance; "
            f"{pc['n_components_for_variance']} needed for {pc['variance_fraction']:.0%}"
            + (f", capped at {pc['modes_cap']}" if pc.get("modes_cap") else "") + ").")]))
    if figs:
        parts.append(section("Plots", [_img(data, cap) for _, data, cap in figs]))
    t = tests.copy()
    t["p"] = t["p"].map(_fmt_p)
    t["p_adj"] = t["p_adj"].map(_fmt_p)
    t = t.sort_values(["significant"], ascending=False, kind="stable")
    parts.append(section("All tests", [table(t, float_fmt="{:.4f}", max_rows=300)],
                         reading="Two-sample Kolmogorov–Smirnov tests (scipy.stats.ks_2samp), significant first."))
    return page("Feature-space bias audit", parts,
                subtitle="KS tests of features / PCA modes between protected groups (Glocker et al. 2023)")


# ---------------------------------------------------------------- probes


def write_probes(probes: dict, out: str | Path, *, inputs: dict | None = None) -> dict[str, Path]:
    """probes.json, probes_auc.png and probes_report.html in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = fp.png_bytes(fp.probe_bars(probes))
    _write_png(data, out / "probes_auc.png")
    write_json(clean_json(probes), out / PROBES_JSON)
    rows = []
    for a, d in probes.items():
        rows.append((a, "all", d["kind"], d["auc"], _ci_str(*(d.get("auc_ci") or (None, None))), d["n"]))
        for c, e in (d.get("per_class") or {}).items():
            rows.append((a, c, "one-vs-rest", e["auc"], _ci_str(*(e.get("auc_ci") or (None, None))), e["n"]))
    t = pd.DataFrame(rows, columns=["attribute", "class", "kind", "AUC", "95% CI", "n"])
    parts = [section("Probe AUCs", [table(t), _img(data, "Out-of-fold AUC per attribute and class; 0.5 = chance.")],
                     reading="An AUC well above 0.5 means the embeddings encode the attribute.")]
    reg = [(a, d["regression"]["mae"], d["regression"]["mae_baseline"], d["regression"]["r2"])
           for a, d in probes.items() if d.get("regression")]
    if reg:
        parts.append(section("Regression of numeric attributes", [table(pd.DataFrame(
            reg, columns=["attribute", "MAE", "MAE of the mean", "R²"]))]))
    if inputs:
        parts.append(section("Inputs", [table(pd.DataFrame([(k, str(v)) for k, v in inputs.items()],
                                                           columns=["input", "value"]))]))
    any_d = next(iter(probes.values()))
    parts.append(section("Method", [paragraph(
        f"Logistic regression on standardized embeddings, {any_d['folds']}-fold cross-validation "
        f"({'patient-grouped' if any_d['grouped_cv'] else 'stratified'}), AUC of the pooled out-of-fold scores, "
        f"95% CI from {any_d['n_boot']} {any_d['bootstrap']} bootstrap resamples.")]))
    _write_html(page("Attribute probes", parts), out / PROBES_HTML)
    return {PROBES_JSON: out / PROBES_JSON, "probes_auc.png": out / "probes_auc.png", PROBES_HTML: out / PROBES_HTML}


# ---------------------------------------------------------------- compare


def write_compare(result, out: str | Path) -> dict[str, Path]:
    """compare.json, compare.parquet, compare_gaps.png and report.html in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = result.summary
    write_json(clean_json(s), out / COMPARE_JSON)
    write_parquet(result.tidy, out / COMPARE_TABLE)
    paths = {COMPARE_JSON: out / COMPARE_JSON, COMPARE_TABLE: out / COMPARE_TABLE}
    fig = fp.compare_forest(result.tidy, s["models"])
    figs = []
    if fig is not None:
        data = fp.png_bytes(fig)
        _write_png(data, out / "compare_gaps.png")
        paths["compare_gaps.png"] = out / "compare_gaps.png"
        tested = result.tidy[result.tidy["test"] == "z"]
        n_all = len(tested.drop_duplicates(["metric", "task", "attribute", "group_a", "group_b"]))
        n_shown = len(fp.top_changes(result.tidy, s["models"]))
        rest = f"; all {n_all} are in the tables below" if 0 < n_shown < n_all else ""
        figs.append(_img(data, "The tested bias quantities that changed most between the models (95% CIs; further "
                               f"right = more bias){rest}."))
    _write_html(compare_html(result, "".join(figs)), out / COMPARE_HTML)
    paths[COMPARE_HTML] = out / COMPARE_HTML
    return paths


def compare_html(result, figures_html: str = "") -> str:
    """The comparison page; ``figures_html`` is already-escaped figure markup."""
    s = result.summary
    models, ref = s["models"], s["reference"]
    summ = pd.DataFrame([{"model": m, **{k.replace("_", " "): v for k, v in c.items()}}
                         for m, c in s["summary"].items()])
    parts = [section("Verdicts", [table(summ), figures_html], reading=verdict_rule(s, ref))]
    kinds = [("performance", "Performance gaps"), ("features", "Feature space"), ("probes", "Attribute probes")]
    for kind, title in kinds:
        wide = side_by_side(result.tidy, models, ref, kinds=[kind])
        if not wide.empty:
            parts.append(section(title, [table(wide, max_rows=400)]))
    parts.append(section("Method", [paragraph(s["method"])]))
    return page("Bias propagation", parts, subtitle="Audits compared: " + ", ".join(models))


def verdict_rule(s: dict, ref: str) -> str:
    """The verdict rule in one sentence, with the comparison's own alpha, correction and margin."""
    margin = s.get("margin", 0.02)
    return (f"Each model against the reference {ref}: 'reduced' / 'amplified' when the change is significant "
            f"(p_adj < {s['alpha']}, {s['correction']}); 'inherited' only when the change is shown to lie within "
            f"± {margin:g} (equivalence test, its 90% CI inside the margin); otherwise 'inconclusive': the data "
            f"cannot tell; the column 'detectable Δ' gives the smallest change they could have detected (80% "
            f"power).")


def side_by_side(tidy: pd.DataFrame, models: list[str], ref: str, kinds: list[str] | None = None,
                 metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per compared quantity: every model's value [CI] side by side, and for each non-reference model its
    Δ, adjusted p and verdict (from ``compare_bundles``' tidy table)."""
    t = tidy
    if kinds is not None:
        t = t[t["kind"].isin(kinds)]
    if metrics is not None:
        t = t[t["metric"].isin(metrics)]
    key = ["metric", "task", "attribute", "group_a", "group_b"]
    rows = []
    for k, g in t.groupby(key, dropna=False, sort=False):
        rec = {"metric": k[0], "task": _s(k[1]), "attribute": _s(k[2]),
               "groups": _s(k[3]) + (f" vs {_s(k[4])}" if _s(k[4]) else "")}
        for m in models:
            r = g[g["model"] == m]
            if r.empty:
                rec[m] = ""
                continue
            r = r.iloc[0]
            v = "" if pd.isna(r["value"]) else (f"{int(r['value'])}/{int(r['n'])}" if r["test"] == "proportion"
                                                 and not pd.isna(r["n"]) else f"{r['value']:.3f}")
            rec[m] = (v + " " + _ci_str(r["ci_low"], r["ci_high"])).strip()
            if m != ref:
                rec[f"Δ {m}"] = "" if pd.isna(r["delta"]) else (
                    f"{r['delta']:+.3f} " + _ci_str(r.get("delta_ci_low"), r.get("delta_ci_high"))).strip()
                rec[f"p_adj {m}"] = _fmt_p(r["p_adj"])
                rec[f"verdict {m}"] = _verdict_text(r)
                mdc = r.get("mdc")
                rec[f"detectable Δ {m}"] = "" if mdc is None or pd.isna(mdc) else f"≥ {mdc:.3f}"
        rows.append(rec)
    return pd.DataFrame(rows).fillna("")


def _verdict_text(r) -> str:
    v = r.get("verdict")
    if not v or (isinstance(v, float) and np.isnan(v)):
        note = r.get("note")
        return "" if note is None or (isinstance(note, float) and np.isnan(note)) else str(note)
    return str(v)


def _s(x) -> str:
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else str(x)
