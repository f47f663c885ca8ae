"""Fair distillation of *a given* black-box teacher on *a given* cohort — the study's question "can the student be
fairer than its teacher?" asked of the study's own teacher (its embeddings, as returned by the API) and the study's
own cohort, split and labels, real or synthetic.

The synthetic measurement (:mod:`cxrdistill.fairkd.experiment`, ``cxrdistill fair distill-study``) builds a cohort
and trains a teacher per scenario; here both are given, and everything after that — a plain-KD student and one student
per fairness-aware objective, identical but for the objective, scored by one protocol (a linear probe on each
model's embeddings, teacher included), the paired test against plain KD, the tables and the plot — is the same code.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from cxrdistill.cohorts.policies import build_targets
from cxrdistill.errors import InputError
from cxrdistill.fairkd.experiment import Cohort, FairKDStudyConfig, TIDY_COLUMNS, cohort_rows, make_config
from cxrdistill.fairkd.summary import GOAL, TEST_NAME, write_outputs
from cxrdistill.images.cache import ImageRows

# Settings of the synthetic measurement that mean nothing when the cohort and the teacher are given.
SYNTHETIC_ONLY = ("scenarios", "n", "size", "data_seed", "val_fraction", "distill_extra", "teacher", "workers",
                  "jobs")


def make_cohort_config(options: dict[str, Any] | None, **defaults: Any) -> FairKDStudyConfig:
    """The settings for a given cohort: ``defaults`` (the study's tasks, label policy, size, student …), then the
    user's ``options``; a synthetic-only key is an error that says where it belongs."""
    options = dict(options or {})
    bad = sorted(set(options) & set(SYNTHETIC_ONLY))
    if bad:
        raise InputError(f"fair_distill.options: {', '.join(bad)} {'is' if len(bad) == 1 else 'are'} only for the "
                         "synthetic measurement "
                         "(`cxrdistill fair distill-study`); a study distils its own teacher on its own cohort",
                         hint=f"remove {', '.join(bad)}; set student: {{epochs: …}}, methods, seeds instead")
    return make_config(defaults, what="fair_distill.options", synthetic=False, **options)


def cohort_from_table(df: pd.DataFrame, images: Any, attribute: str, tasks: list[str], label_policy: str,
                      name: str, *, rows: np.ndarray | None = None) -> Cohort:
    """A study cohort (one row per image, ``split`` set) as a :class:`Cohort`. Row ``i``'s image is
    ``images[rows[i]]`` (``rows`` default: aligned); ``images`` is the image cache (an ``ImageCache`` or its
    memory map) or any uint8 array. The cohort keeps an index into it (:class:`~cxrdistill.images.cache.ImageRows`),
    never a copy: pixels are read batch by batch while training, so memory does not grow with the cohort's images.
    Rows without the attribute are left out (the objectives need every training image's group): ``meta["table_row"]``
    holds each kept row's position in ``df``, to align anything row-aligned with ``df`` (the teacher's embeddings:
    ``T[c.meta["table_row"]]``). Ground-truth labels are used where the cohort has them (``true_<task>``, synthetic
    cohorts)."""
    for col in ("split", "patient_id", attribute, *tasks):
        if col not in df.columns:
            raise InputError(f"the cohort has no {col!r} column", column=col,
                             hint="fair distillation needs a split cohort with the attribute and every task")
    view = ImageRows(images, rows)
    if len(view) != len(df):
        raise InputError(f"{len(view)} images for {len(df)} cohort rows")
    keep = df[attribute].notna().to_numpy() & df["split"].isin(["train", "val", "test"]).to_numpy()
    meta = df[keep].reset_index(drop=True).assign(table_row=np.flatnonzero(keep))
    images = view.take(keep)
    names = sorted(map(str, meta[attribute].unique()))
    if len(names) < 2:
        raise InputError(f"attribute {attribute!r} has {len(names)} group(s) in the cohort; fair distillation needs "
                         "at least two", column=attribute)
    g = meta[attribute].astype(str).map({v: i for i, v in enumerate(names)}).to_numpy(np.int64)
    y = {"observed": build_targets(meta, tasks, label_policy)}
    if all(f"true_{t}" in meta.columns for t in tasks):
        y["true"] = meta[[f"true_{t}" for t in tasks]].to_numpy(np.float32)
    idx = {s: np.flatnonzero(meta["split"].to_numpy() == s) for s in ("train", "val", "test")}
    for s, ix in idx.items():
        if len(ix) == 0:
            raise InputError(f"the {s} split has no image with a known {attribute}", column="split")
    return Cohort(name, images, meta, attribute, names, g, y["observed"], list(tasks), y, list(tasks), idx)


def teacher_key(T: np.ndarray, c: Cohort) -> str:
    """Names the teacher's embeddings of this cohort (students are cached under it)."""
    h = hashlib.sha256(np.ascontiguousarray(T, dtype=np.float32).tobytes())
    h.update("\0".join(c.meta["image_id"].astype(str)).encode())
    h.update("\0".join(c.meta["split"].astype(str)).encode())
    return h.hexdigest()[:16]


def run_on_cohort(c: Cohort, T: np.ndarray, cfg: FairKDStudyConfig, out: str | Path, *, teacher_name: str = "teacher",
                  log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Distil ``T`` (the teacher's embeddings of ``c``'s images, row-aligned) into a plain-KD student and one student
    per objective of ``cfg.methods``, for every seed; write the outputs of :func:`~cxrdistill.fairkd.summary.
    write_outputs` to ``out`` and return the tidy rows. Students are cached (and resumable) under ``out/runs``."""
    log = log or (lambda s: None)
    T = np.asarray(T, dtype=np.float32)
    if T.ndim != 2 or len(T) != len(c.images):
        raise InputError(f"teacher embeddings of shape {T.shape} for {len(c.images)} images; need (images, dim)")
    cfg = cfg.model_copy(update={"scenarios": [c.scenario]})
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows, students = cohort_rows(c, T, {"key": teacher_key(T, c)}, cfg, root, log)
    sc = cfg.student
    note = (f"The study's cohort ({len(c.images)} images with a known {c.attribute}: "
            + ", ".join(f"{s} {len(ix)}" for s, ix in c.idx.items())
            + f") at {cfg.size} px; tasks {', '.join(cfg.tasks)}, label policy {cfg.label_policy}. Teacher: "
            f"{teacher_name}, seen only through its {T.shape[1]}-d embeddings (the same ones every other stage "
            "uses).")
    meta = {"config": cfg.model_dump(), "data_note": note, "test": TEST_NAME, "goal": GOAL,
            "scenarios": {c.scenario: {"attribute": c.attribute, "groups": c.group_names, "counts": c.counts(),
                                       "teacher": {"name": teacher_name, "embedding_dim": int(T.shape[1])},
                                       "students": students}},
            "student": {"backbone": sc.backbone, "epochs": sc.epochs, "loss": sc.loss}}
    tidy = pd.DataFrame(rows, columns=TIDY_COLUMNS)
    meta["seconds"] = round(time.perf_counter() - t0, 1)
    write_outputs(tidy, meta, root)
    return tidy
