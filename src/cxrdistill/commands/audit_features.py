"""Commands ``audit-features``, ``probe-attributes`` and ``compare``: feature-space bias audit, attribute probes and
bias propagation between audits. Thin: parse options, call ``cxrdistill.evaluation`` / ``cxrdistill.report``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cxrdistill.commands import _common as C


def _bins(specs: list[str], age_bins: Optional[str] = None) -> dict:
    from cxrdistill.evaluation.attribute_groups import parse_bins

    out = dict(parse_bins(s) for s in specs)
    if age_bins:
        out["age"] = parse_bins(f"age={age_bins}")[1]
    return out


ID_COLUMN_HELP = ("Column that identifies each image in the tables being joined (embeddings, ids, metadata), "
                  "when it is not image_id, e.g. Path; each table uses it when present, else its image_id.")


def _load_aligned(embeddings: Path, embedding_ids: Optional[Path], metadata: Optional[Path], split: Optional[str],
                  one_per_patient: bool, seed: int, id_column: Optional[str] = None):
    from cxrdistill.evaluation import embedding_input as ei

    src = ei.open_embeddings(embeddings, embedding_ids, id_column)
    if metadata is None:
        if embeddings.is_dir() or embeddings.suffix.lower() in {".npy", ".npz"}:
            from cxrdistill.errors import InputError

            raise InputError("--metadata TABLE is needed to know each image's attributes", path=embeddings)
        metadata = embeddings  # a table holding both emb_* columns and the attributes
    meta = ei.read_metadata(metadata, split, id_column=id_column)
    if one_per_patient:
        meta = ei.one_image_per_patient(meta, seed, metadata)
    al = ei.align(src, meta, path=metadata)
    typer.echo(f"matched {al.ids['n_matched']} images (embeddings only: {al.ids['n_only_in_embeddings']}, "
               f"metadata only: {al.ids['n_only_in_metadata']})")
    return al, metadata


def audit_features(
    table: Optional[Path] = typer.Argument(None, help="Table with the feature columns (or the metadata for "
                                                      "--embeddings)."),
    features: list[str] = typer.Option([], "--features", "-f",
                                       help="Feature column (repeat; shell patterns like 'emb_*' work)."),
    embeddings: Optional[Path] = typer.Option(None, help="Embedding store dir, .npy/.npz, or emb_* table."),
    embedding_ids: Optional[Path] = typer.Option(None, help="Image ids of a .npy (one per line, or a table)."),
    metadata: Optional[Path] = typer.Option(None, help="Cohort or predictions table keyed by image_id."),
    id_column: Optional[str] = typer.Option(None, help=ID_COLUMN_HELP + " A single TABLE needs no id."),
    attribute: list[str] = typer.Option([], "--attribute", "-a", help="Compare all pairs of this attribute's values."),
    pair: list[str] = typer.Option([], "--pair", help='Single comparison "A=x,y" (quote values with spaces).'),
    correction: str = typer.Option("by", help="by | bh | bonferroni | none, over every test of the call."),
    alpha: float = typer.Option(0.05, help="Significance level for p_adj."),
    split: Optional[str] = typer.Option(None, help="Keep only rows of this split (train/val/test)."),
    pca_variance: float = typer.Option(0.99, help="Keep the PCA modes explaining this variance fraction."),
    modes: Optional[int] = typer.Option(None, help="Test at most this many leading modes."),
    standardize: bool = typer.Option(False, help="Standardize embedding dimensions before PCA."),
    tsne: bool = typer.Option(True, "--tsne/--no-tsne", help="Add t-SNE scatter plots."),
    tsne_points: int = typer.Option(2000, help="Images in the t-SNE (random subset)."),
    bins: list[str] = typer.Option([], "--bins", help='Bin a numeric attribute: "age=0,40,60,80,inf".'),
    age_bins: Optional[str] = C.age_bins_option(),
    min_group: int = typer.Option(5, help="Smaller groups are not tested (reported with a reason)."),
    one_per_patient: bool = typer.Option(False, help="Keep one random image per patient (needs patient_id)."),
    seed: int = C.seed_option(help="Seed for subsets and t-SNE."),
    out: Path = C.out_option(),
) -> None:
    """Feature-space audit: KS tests of feature columns or PCA modes between protected groups."""
    from cxrdistill.errors import InputError
    from cxrdistill.evaluation import embedding_input as ei
    from cxrdistill.evaluation.features import audit_embeddings, audit_feature_columns
    from cxrdistill.report.feature_report import FEATURES_HTML, FEATURES_JSON, write_feature_audit

    b = _bins(bins, age_bins)
    if embeddings is not None:
        if features:
            raise InputError("give either --features (columns of TABLE) or --embeddings, not both")
        al, meta_path = _load_aligned(embeddings, embedding_ids, metadata or table, split, one_per_patient, seed,
                                      id_column)
        res = audit_embeddings(al.X, al.meta, attributes=attribute, pairs=pair, variance=pca_variance, modes=modes,
                               standardize=standardize, correction=correction, alpha=alpha, bins=b,
                               min_n=min_group, tsne=tsne, tsne_points=tsne_points, seed=seed, path=meta_path)
        inputs = {"embeddings": str(embeddings), "metadata": str(meta_path), "split": split, "ids": al.ids}
    else:
        if table is None:
            raise InputError("nothing to audit", hint="give TABLE --features COL, or --embeddings E --metadata M")
        if not features:
            raise InputError("no --features given", path=table, hint="name the columns to test, e.g. -f 'emb_*'")
        if metadata is not None:
            raise InputError("--metadata is only used with --embeddings", hint="the TABLE holds the attributes")
        df = ei.read_metadata(table, split, id_column=id_column, require_id=False)
        if one_per_patient:
            df = ei.one_image_per_patient(df, seed, table)
        cols = ei.expand_columns(df, features, table)
        res = audit_feature_columns(df, cols, attributes=attribute, pairs=pair, correction=correction, alpha=alpha,
                                    bins=b, min_n=min_group, path=table)
        inputs = {"table": str(table), "split": split}
    write_feature_audit(res, out, inputs=inputs, seed=seed)
    s = res.summary
    typer.echo(f"{s['n_significant']} of {s['n_tests']} tests significant (p_adj < {alpha}, {correction}); "
               f"bias score {s['bias_score']['value']:.4f}")
    typer.echo(f"wrote {out / FEATURES_JSON} and {out / FEATURES_HTML}")
    C.summary("audit-features", out, n_tests=s["n_tests"], n_significant=s["n_significant"],
              bias_score=s["bias_score"]["value"])


def probe_attributes(
    embeddings: Path = typer.Option(..., help="Embedding store dir, .npy/.npz, or table with emb_* columns."),
    embedding_ids: Optional[Path] = typer.Option(None, help="Image ids of a .npy (one per line, or a table)."),
    metadata: Optional[Path] = typer.Option(None, help="Table with the attributes (default: the embeddings "
                                                       "table itself)."),
    id_column: Optional[str] = typer.Option(None, help=ID_COLUMN_HELP),
    attribute: list[str] = typer.Option(..., "--attribute", "-a", help="Attribute to probe (repeat)."),
    folds: int = typer.Option(5, help="Cross-validation folds."),
    seed: int = C.seed_option(help="Seed for folds and bootstrap."),
    n_boot: int = C.n_boot_option(),
    repeats: int = typer.Option(5, help="Repeat the CV with new folds; the spread joins the AUC's error."),
    groups: str = typer.Option("patient_id", help="Column keeping a patient's images in one fold "
                                                  "(used when present; 'none' to disable)."),
    split: Optional[str] = typer.Option(None, help="Keep only rows of this split."),
    bins: list[str] = typer.Option([], "--bins", help='Bins of a numeric attribute: "age=0,40,60,80,inf".'),
    age_bins: Optional[str] = C.age_bins_option(),
    c: float = typer.Option(1.0, "--C", help="Inverse L2 regularization of the logistic probe."),
    out: Path = C.out_option(),
) -> None:
    """Attribute probes: cross-validated AUC of predicting sex / race / age from frozen embeddings."""
    from cxrdistill.errors import InputError
    from cxrdistill.evaluation.probes import probe_attributes as run
    from cxrdistill.report.feature_report import PROBES_JSON, write_probes

    al, meta_path = _load_aligned(embeddings, embedding_ids, metadata, split, False, seed, id_column)
    g = None
    if groups.lower() != "none":
        if groups in al.meta.columns:
            g = al.meta[groups].astype(str).where(al.meta[groups].notna(), None)
        elif groups != "patient_id":
            raise InputError("group column not found", path=meta_path, column=groups)
    res = run(al.X, al.meta, attribute, folds=folds, seed=seed, groups=g, n_boot=n_boot, C=c, repeats=repeats,
              bins=_bins(bins, age_bins))
    write_probes(res, out, inputs={"embeddings": str(embeddings), "metadata": str(meta_path), "split": split,
                                   "grouped_by": groups if g is not None else None, **al.ids})
    for a, d in res.items():
        ci = d["auc_ci"] or [float("nan")] * 2
        typer.echo(f"{a}: AUC {d['auc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] (n={d['n']}, {d['kind']})")
    typer.echo(f"wrote {out / PROBES_JSON}")
    C.summary("probe-attributes", out, auc={a: d["auc"] for a, d in res.items()})


def compare(
    dirs: list[Path] = typer.Argument(..., help="Audit directories; the first is the reference (e.g. the teacher)."),
    names: Optional[str] = typer.Option(None, help="Comma-separated model names, e.g. teacher,student."),
    alpha: float = typer.Option(0.05, help="Significance level of the change tests."),
    correction: str = typer.Option("by", help="by | bh | bonferroni | none, per model-vs-reference family."),
    margin: float = typer.Option(0.02, help="Equivalence margin: 'inherited' needs the change's 90% CI within "
                                            "± this (AUC units for AUC gaps)."),
    paired: bool = typer.Option(True, "--paired/--unpaired", help="Pair AUC gaps by a joint bootstrap of the "
                                                                  "audits' predictions files when they can be read."),
    out: Path = C.out_option(),
) -> None:
    """Bias propagation: every gap side by side, and per model reduced / amplified / inherited / inconclusive."""
    from cxrdistill.evaluation.compare import compare_dirs
    from cxrdistill.report.feature_report import COMPARE_HTML, write_compare

    nm = [s.strip() for s in names.split(",")] if names else None
    res = compare_dirs(dirs, nm, alpha=alpha, correction=correction, margin=margin, paired=paired)
    write_compare(res, out)
    for m, cnt in res.summary["summary"].items():
        typer.echo(f"{m} vs {res.summary['reference']}: " + ", ".join(f"{k} {v}" for k, v in cnt.items()))
    typer.echo(f"wrote {out / COMPARE_HTML}")
    C.summary("compare", out, reference=res.summary["reference"], summary=res.summary["summary"])


def register(app: typer.Typer) -> None:
    app.command("audit-features")(audit_features)
    app.command("probe-attributes")(probe_attributes)
    app.command("compare")(compare)
