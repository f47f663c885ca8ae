"""Scores and embeddings from trained models, written as the predictions table that every evaluator reads:
``image_id``, attribute columns, and per task ``y_T`` (0/1, blank = unknown), ``p_T`` (probability) and, for
synthetic cohorts, ``ytrue_T`` (ground truth). Optionally one row per study (max over its views)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from cxrdistill.errors import InputError
from cxrdistill.evaluation.metrics import metrics_table

#: cohort columns copied into predictions tables when present (attributes for audits, ids for resampling)
PASS_COLUMNS = ["patient_id", "study_id", "sex", "race", "age", "ethnicity", "view", "frontal", "dataset", "split"]


def run_batches(fn: Callable, data, batch_size: int = 256) -> np.ndarray:
    """``fn(batch) -> tensor`` over ``data`` (``ImageBatches`` / ``ArrayDataset``) in order, no grad, numpy out."""
    import torch

    outs = []
    with torch.inference_mode():
        for s in range(0, len(data), batch_size):
            b = data.get_batch(torch.arange(s, min(s + batch_size, len(data))))
            outs.append(fn(b).float().cpu())
    return torch.cat(outs).numpy() if outs else np.zeros((0,), dtype=np.float32)


def model_outputs(model, data, key: str = "embedding", batch_size: int = 256, device=None) -> np.ndarray:
    """``model(x)[key]`` (a CxrNet's ``embedding``, ``features`` or ``logits``) for every item of ``data``, on
    ``device`` (default: where the model is)."""
    model.eval()
    if device is not None:
        model.to(device)

    def fn(b):
        out = model(b["x"].to(device) if device is not None else b["x"])
        if isinstance(out, dict):
            if key not in out:
                raise InputError(f"the model has no {key!r} output (it gives {', '.join(out)})",
                                 hint="a classifier needs a head: use a fine-tuned model or --head")
            return out[key]
        return out

    return run_batches(fn, data, batch_size)


def head_scores(head, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Probabilities σ(head(X)) for frozen embeddings X."""
    import torch

    head.eval()
    outs = []
    with torch.inference_mode():
        for s in range(0, len(X), batch_size):
            outs.append(torch.sigmoid(head(torch.as_tensor(np.asarray(X[s:s + batch_size], dtype=np.float32)))))
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0), dtype=np.float32)


def predictions_table(rows, tasks: Sequence[str], scores: np.ndarray, y: np.ndarray | None = None,
                      aggregate: str = "image"):
    """The predictions table for cohort ``rows`` (a DataFrame, in the order of ``scores``).

    ``y``: targets (N, K) with NaN = unknown (from the label policy); ``ytrue_T`` comes from ``true_T`` columns.
    ``aggregate="study"``: one row per ``study_id`` — p = max over the study's images (views), y = max of known labels;
    ``image_id`` then holds the study id.
    """
    import pandas as pd

    scores = np.asarray(scores, dtype=np.float64).reshape(len(rows), -1)
    tasks = list(tasks)
    if scores.shape[1] != len(tasks):
        raise ValueError(f"{scores.shape[1]} score columns for {len(tasks)} tasks")
    rows = rows.reset_index(drop=True)
    out = pd.DataFrame({"image_id": rows["image_id"].astype(str)})
    for c in PASS_COLUMNS + sorted(c for c in rows.columns if str(c).startswith("synth_")):
        if c in rows.columns:
            out[c] = rows[c].to_numpy()
    for k, t in enumerate(tasks):
        if y is not None:
            out[f"y_{t}"] = np.asarray(y, dtype=np.float64)[:, k]
        out[f"p_{t}"] = scores[:, k]
        if f"true_{t}" in rows.columns:
            out[f"ytrue_{t}"] = pd.to_numeric(rows[f"true_{t}"], errors="coerce").to_numpy(dtype=np.float64)
    if aggregate == "image":
        return out
    if aggregate != "study":
        raise InputError(f"unknown aggregation {aggregate!r}; use image or study")
    if "study_id" not in out.columns or out["study_id"].isna().all():
        raise InputError("per-study aggregation needs a study_id column in the cohort", column="study_id",
                         hint="use --aggregate image, or a cohort with study ids (CheXpert, MIMIC)")
    return aggregate_studies(out, tasks)


def aggregate_studies(df, tasks: Sequence[str]):
    """One row per study: max score over its images (views), max of the known labels, first attribute values."""
    score_cols = [c for t in tasks for c in (f"p_{t}", f"y_{t}", f"ytrue_{t}") if c in df.columns]
    keep = df[df["study_id"].notna()].copy()
    keep["study_id"] = keep["study_id"].astype(str)
    g = keep.groupby("study_id", sort=False)
    agg = g[score_cols].max()  # NaN-skipping: a label known in any view counts
    first_cols = [c for c in df.columns if c not in score_cols and c not in ("image_id", "study_id")]
    firsts = g[first_cols].first() if first_cols else None
    out = agg if firsts is None else firsts.join(agg)
    out["n_images"] = g.size()
    out = out.reset_index()
    out.insert(0, "image_id", out["study_id"])
    return out.reset_index(drop=True)


def attach_metrics(pred, tasks: Sequence[str], n_boot: int = 1000, seed: int = 0, target_fpr: float = 0.2):
    """The tidy metrics table (task, metric, value, ci_low, ci_high, n, n_pos, reason) of a predictions table,
    observed labels, plus a ``labels`` column; with ``ytrue_T`` columns the ground-truth rows are added."""
    import pandas as pd

    parts = []
    for kind, prefix in (("observed", "y_"), ("true", "ytrue_")):
        ts = [t for t in tasks if f"{prefix}{t}" in pred.columns]
        if not ts:
            continue
        m = metrics_table(pred, ts, labels=kind, target_fpr=target_fpr, n_boot=n_boot, seed=seed)
        m.insert(0, "labels", kind)
        parts.append(m)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def mean_auc_of(metrics, labels: str = "observed") -> float | None:
    m = metrics[(metrics["labels"] == labels) & (metrics["metric"] == "auc")]["value"].dropna()
    return float(m.mean()) if len(m) else None


def auc_summary(metrics, labels: str = "observed") -> dict[str, Any]:
    """``{task: {auc, ci}}`` and the mean, for JSON summaries (results.json)."""
    m = metrics[(metrics["labels"] == labels) & (metrics["metric"] == "auc")]
    per = {r.task: {"auc": _f(r.value), "ci": [_f(r.ci_low), _f(r.ci_high)]} for r in m.itertuples()}
    return {"per_task": per, "mean_auc": mean_auc_of(metrics, labels)}


def _f(v) -> float | None:
    return None if v is None or (isinstance(v, float) and not np.isfinite(v)) else float(v)
