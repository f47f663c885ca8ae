"""Inputs of fair training: a cohort table → train/val/test datasets with targets and group indices, either on frozen
embeddings (an EmbeddingStore; the fast path) or on images (an ImageCache + CxrDataset).

Rows whose sensitive attribute is unknown are left out (every method, including ERM, sees the same rows, so the
comparison is fair); the number left out is reported. Splits come from the cohort's ``split`` column; a cohort
without one is split by patient (70/10/20, seeded) and the note says so.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from cxrdistill.cohorts.policies import build_targets
from cxrdistill.cohorts.schema import label_columns
from cxrdistill.cohorts.splits import SPLITS, hashed_splits
from cxrdistill.errors import InputError
from cxrdistill.evaluation.attribute_groups import group_labels
from cxrdistill.images.dataset import CxrDataset
from cxrdistill.storage.store import EmbeddingStore
from cxrdistill.training.data import ArrayDataset
from cxrdistill.training.inputs import image_cache

LABEL_SOURCES = ("observed", "true")


@dataclass
class FairData:
    """Everything a fairness run needs; ``y_eval`` maps a label source (``observed``/``true``) to test targets."""

    train: Any
    val: Any
    test: Any
    tasks: list[str]
    attribute: str
    group_names: list[str]
    test_meta: pd.DataFrame
    y_eval: dict[str, np.ndarray]
    label_source: str
    kind: str  # "embeddings" | "images"
    input_shape: tuple[int, ...]
    fingerprint: str
    notes: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)


def patient_split(df: pd.DataFrame, seed: int) -> pd.Series:
    """The split of a cohort that has none: patients (or images, without ``patient_id``) hashed 70/10/20, seeded."""
    key = df["patient_id"] if "patient_id" in df.columns else df["image_id"]
    return pd.Series(hashed_splits(key.astype(str).to_numpy(), (0.7, 0.1, 0.2), seed), index=df.index)


def prepare_frame(df: pd.DataFrame, tasks: Sequence[str], attribute: str, *, label_policy: str = "u-ignore",
                  label_source: str = "observed", age_bins: Sequence[float] | None = None, split_seed: int = 0,
                  path: object = None) -> tuple[pd.DataFrame, dict[str, np.ndarray], list[str], list[str]]:
    """Filter and annotate the cohort: returns (rows kept with ``_split``, ``_group``, ``_g``), targets by label
    source (aligned with the rows), group names, notes."""
    notes: list[str] = []
    tasks = list(tasks)
    if not tasks:
        raise InputError("no tasks given", hint="e.g. --tasks pleural_effusion,cardiomegaly")
    if label_source not in LABEL_SOURCES:
        raise InputError(f"unknown label source {label_source!r}", hint="use observed or true")
    if attribute not in df.columns:
        raise InputError("attribute column not found", path=path, column=attribute,
                         hint=f"columns: {', '.join(map(str, df.columns[:20]))}")
    for t in tasks:
        if t not in df.columns:
            raise InputError("no such label column in the cohort", path=path, column=t,
                             hint=f"labels here: {', '.join(label_columns(df)) or '(none)'}")
    df = df.reset_index(drop=True)
    labels = group_labels(df[attribute], attribute, bins=tuple(age_bins) if age_bins else None, path=path)
    keep = labels.notna().to_numpy().copy()
    if (~keep).any():
        notes.append(f"{int((~keep).sum())} row(s) with unknown {attribute} left out")
    split = df["split"] if "split" in df.columns else pd.Series([None] * len(df))
    if split.isna().all():
        split = patient_split(df, split_seed)
        notes.append("the cohort has no split: patients split 70/10/20 (seeded by --split-seed)")
    else:
        bad = ~split.isin(SPLITS) & split.notna()
        if bad.any():
            raise InputError(f"split value {split[bad].iloc[0]!r} is not train/val/test", path=path, column="split")
        if split.isna().any():
            notes.append(f"{int(split.isna().sum())} row(s) without a split left out")
    keep = keep & split.notna().to_numpy()
    out = df.loc[keep].copy()
    out["_split"] = split[keep].to_numpy()
    out["_group"] = labels[keep].to_numpy()
    names = sorted(out["_group"].unique())
    out["_g"] = out["_group"].map({n: i for i, n in enumerate(names)}).astype(np.int64)
    out = out.reset_index(drop=True)
    for s in SPLITS:
        if not (out["_split"] == s).any():
            raise InputError(f"no {s} rows", path=path, column="split",
                             hint="split the cohort with `cxrdistill cohort split` (train, val and test are needed)")
    tr_groups = set(out.loc[out["_split"] == "train", "_group"])
    if len(tr_groups) < 2:
        raise InputError(f"the training rows have {len(tr_groups)} group(s) of {attribute}; fair training needs ≥ 2",
                         path=path, column=attribute)
    targets: dict[str, np.ndarray] = {"observed": build_targets(out, tasks, label_policy)}
    true_cols = [f"true_{t}" for t in tasks]
    if all(c in out.columns for c in true_cols):
        targets["true"] = out[true_cols].to_numpy(dtype=np.float32)
    elif label_source == "true":
        missing = [c for c in true_cols if c not in out.columns]
        raise InputError("ground-truth label column not found", path=path, column=missing[0],
                         hint="--label-source true needs true_<task> columns (synthetic cohorts have them)")
    return out, targets, names, notes


def _fingerprint(parts: dict[str, Any], ids: Sequence[str]) -> str:
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for i in ids:
        h.update(i.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def _assemble(frame, targets, names, notes, tasks, attribute, label_source, kind, make_ds, input_shape,
              fp_parts) -> FairData:
    y = targets[label_source]
    idx = {s: np.flatnonzero(frame["_split"].to_numpy() == s) for s in SPLITS}
    ds = {s: make_ds(idx[s], y[idx[s]], frame["_g"].to_numpy()[idx[s]]) for s in SPLITS}
    meta_cols = [c for c in ("image_id", "sex", "race", "age") if c in frame.columns]
    test_meta = frame.loc[idx["test"], meta_cols].reset_index(drop=True)
    test_meta["_group"] = frame.loc[idx["test"], "_group"].to_numpy()
    counts = {s: {n: int((frame.loc[idx[s], "_group"] == n).sum()) for n in names} for s in SPLITS}
    fp = _fingerprint({**fp_parts, "tasks": tasks, "attribute": attribute, "label_source": label_source,
                       "split": frame["_split"].tolist(), "groups": frame["_g"].tolist(),
                       "y": np.nan_to_num(y, nan=-9).round(4).tolist()}, frame["image_id"].tolist())
    return FairData(train=ds["train"], val=ds["val"], test=ds["test"], tasks=list(tasks), attribute=attribute,
                    group_names=list(names), test_meta=test_meta,
                    y_eval={k: v[idx["test"]] for k, v in targets.items()}, label_source=label_source, kind=kind,
                    input_shape=tuple(input_shape), fingerprint=fp, notes=notes, counts=counts)


def from_embeddings(df: pd.DataFrame, store_path: str | Path, tasks: Sequence[str], attribute: str, *,
                    standardize: bool = True, cohort_path: object = None, **kw) -> FairData:
    """Frozen embeddings from an EmbeddingStore (token outputs mean-pooled), standardised with train statistics."""
    df = df.reset_index(drop=True)
    frame, _, _, notes = prepare_frame(df.assign(_row=np.arange(len(df))), tasks, attribute, path=cohort_path, **kw)
    used = df.iloc[frame["_row"].to_numpy()]  # only the rows that take part need an embedding
    store = EmbeddingStore.open(store_path)
    ids = used["image_id"].astype(str).tolist()
    missing = store.missing(ids)
    if missing:
        raise InputError(f"{len(missing)} cohort image(s) have no embedding, e.g. {missing[:3]}", path=store_path,
                         hint="embed the whole cohort first (`cxrdistill embed …`), or filter the cohort")
    x = np.asarray(store.get(ids), dtype=np.float32)
    data = from_arrays(used, x, tasks, attribute, standardize=standardize, cohort_path=cohort_path,
                       source={"store": str(Path(store_path).resolve())}, **kw)
    data.notes = list(dict.fromkeys(notes + data.notes))
    return data


def from_arrays(df: pd.DataFrame, x: np.ndarray, tasks: Sequence[str], attribute: str, *, standardize: bool = True,
                cohort_path: object = None, source: dict | None = None, **kw) -> FairData:
    """Frozen embeddings given as an array aligned with the rows of ``df`` ((N, D), or (N, …, D) mean-pooled)."""
    import torch

    if len(x) != len(df):
        raise InputError(f"{len(x)} embeddings for {len(df)} cohort rows", hint="align the embeddings with the cohort")
    df = df.reset_index(drop=True)
    x = np.asarray(x, dtype=np.float32)
    frame, targets, names, notes = prepare_frame(df.assign(_row=np.arange(len(df))), tasks, attribute,
                                                 path=cohort_path, **kw)
    x = x[frame["_row"].to_numpy()]
    if x.ndim > 2:
        notes.append(f"embeddings of shape {x.shape[1:]} mean-pooled over all but the last axis")
        x = x.reshape(len(x), -1, x.shape[-1]).mean(1)
    if standardize:
        tr = frame["_split"].to_numpy() == "train"
        mu, sd = x[tr].mean(0), x[tr].std(0)
        x = (x - mu) / np.where(sd > 1e-8, sd, 1.0)
    xt = torch.from_numpy(np.ascontiguousarray(x))

    def make(idx, y, g):
        return ArrayDataset(x=xt[idx], y=y, g=g)

    fp_source = source or {"x_digest": hashlib.sha256(np.ascontiguousarray(x[:64]).tobytes()).hexdigest()[:16],
                           "x_shape": list(x.shape)}
    return _assemble(frame, targets, names, notes, list(tasks), attribute, kw.get("label_source", "observed"),
                     "embeddings", make, (x.shape[1],), {**fp_source, "standardize": standardize, **_kw_fp(kw)})


def from_images(df: pd.DataFrame, images_root: str | Path, size: int, tasks: Sequence[str], attribute: str, *,
                cache_dir: str | Path | None = None, workers: int = 2, augment: str | None = None,
                cohort_path: object = None, **kw) -> FairData:
    """Images: decoded once into the shared uint8 cache (under ``cache_dir``, default $CXRDISTILL_CACHE), served
    by CxrDataset."""
    frame, targets, names, notes = prepare_frame(df, tasks, attribute, path=cohort_path, **kw)
    if "path" not in frame.columns:
        raise InputError("cohort has no such column", path=cohort_path, column="path",
                         hint="training on images needs the image paths (relative to --images-root)")
    cache = image_cache(frame[["image_id", "path"]], images_root, int(size), cache_dir, workers=workers,
                        progress=False)
    rows = cache.index_of(frame["image_id"].tolist())

    def make(idx, y, g):
        return CxrDataset(cache, rows=rows[idx], targets=y, groups=g, augment=augment)

    return _assemble(frame, targets, names, notes, list(tasks), attribute, kw.get("label_source", "observed"),
                     "images", make, (1, int(size), int(size)),
                     {"images_root": str(Path(images_root).resolve()), "size": int(size), "augment": augment,
                      **_kw_fp(kw)})


def _kw_fp(kw: dict) -> dict:
    return {k: kw.get(k) for k in ("label_policy", "age_bins", "split_seed")}
