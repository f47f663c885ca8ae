"""``synth --like``: a synthetic dataset with the size and structure of an existing cohort — one rendered image per
row of its table, with the row's labels (1/0/-1/blank as they are), sex, age, view, race and ids kept.

A real dataset's metadata (e.g. CheXpert's ``train.csv``) thus becomes a runnable dataset: a whole study can be
dry-run on its structure before the images (or a GPU) are there, and the toolkit can be measured at real size.
The output is in the CheXpert layout that ``synth`` writes, so ``cohort import chexpert --csv OUT/train.csv
--images-root OUT`` reads it back with the same ids and values.

Built for large tables: every image (and its two masks) is written atomically, so a killed run leaves only
finished files and a rerun with the same table, size and seed renders only what is missing; ``train.csv`` is
written last. Deterministic: each row's image depends only on (seed, row position, patient), never on the workers.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from cxrdistill import __version__
from cxrdistill.cohorts.readers import READERS
from cxrdistill.cohorts.validate import load_cohort
from cxrdistill.errors import InputError
from cxrdistill.storage.io import atomic_open, write_json
from cxrdistill.synth.generate import check_render_args
from cxrdistill.synth.render import ImageSpec, render_spec
from cxrdistill.synth.sample import CHEXPERT_LABELS
from cxrdistill.synth.scenario import DISEASES, FINDINGS, PATHOLOGIES

Progress = Callable[[int, int], None]
LIKE_STREAM = 0x11CE  # random streams of --like, apart from the generator's own
LIKE_VERSION = 1
CHEXPERT_ID = r"^(?:[^/]+/)*patient\d+/study\d+/[^/]+$"  # an id that a CheXpert path can carry unchanged


# ------------------------------------------------------------------------------------------------------- input
def read_like(path: str | os.PathLike) -> pd.DataFrame:
    """The cohort table to imitate: a cohort Parquet (``cohort import …``) or a CheXpert-style CSV (read with the
    CheXpert reader, so it gets the same ids as ``cohort import chexpert``)."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith((".parquet", ".pq")):
        df = load_cohort(p, check="ids")
        if "patient_id" not in df.columns:
            raise InputError("not a cohort table: no such column", path=p, column="patient_id",
                             hint="give a cohort Parquet from `cxrdistill cohort import`, or a CheXpert csv")
        return df
    if name.endswith((".csv", ".csv.gz")):
        return READERS.get("chexpert")(p)
    raise InputError("unknown table type", path=p,
                     hint="give a cohort .parquet (from `cxrdistill cohort import`) or a CheXpert-style .csv[.gz]")


# ------------------------------------------------------------------------------------------------------- table
def _rng(seed: int, *idx: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), LIKE_STREAM, *map(int, idx)]))


def _labels(df: pd.DataFrame) -> dict[str, np.ndarray]:
    out = {}
    for f in FINDINGS:
        out[f] = pd.to_numeric(df[f], errors="coerce").to_numpy(float) if f in df.columns else np.full(len(df), np.nan)
    return out


def _paths(df: pd.DataFrame, patient_index: np.ndarray) -> tuple[np.ndarray, bool]:
    """Image paths (relative to OUT). CheXpert ids are kept as the path (``<image_id>.png``); other ids get a
    CheXpert-style path and are kept in ``synth_source_*`` columns. Returns (paths, ids_kept)."""
    ids = df["image_id"].astype(str)
    pid = df["patient_id"].astype(str)
    own = ids.str.match(CHEXPERT_ID) & (ids.str.extract(r"(patient\d+)", expand=False) == pid)
    if "study_id" in df.columns:
        own &= ids.str.extract(r"(patient\d+/study\d+)", expand=False) == df["study_id"].astype(str)
    if bool(own.all()) and not ids.str.match(r"^CheXpert-v").any():
        return (ids + ".png").to_numpy(object), True
    study = df["study_id"].astype(str) if "study_id" in df.columns else pid
    s_idx = study.groupby(pid, sort=False).transform(lambda s: pd.factorize(s)[0] + 1).to_numpy()
    v_idx = df.groupby([pid, study], sort=False).cumcount().to_numpy() + 1
    lateral = (df["view"].astype(str) == "LATERAL").to_numpy() if "view" in df.columns else np.zeros(len(df), bool)
    kind = np.where(lateral, "lateral", "frontal")
    paths = [f"like/train/patient{p + 1:06d}/study{s}/view{v}_{k}.png"
             for p, s, v, k in zip(patient_index, s_idx, v_idx, kind)]
    return np.array(paths, dtype=object), False


def like_table(df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The ``train.csv`` of ``synth --like`` for cohort table ``df`` (CheXpert columns, ``Race`` when the cohort has
    race, ``true_*`` and ``synth_*``): the rows' own labels and attributes, plus what the images are rendered from.

    Ground truth (``true_*``): a finding labelled 1 is present, -1 is present with probability 1/2 (drawn per row),
    0 or blank is absent; lung opacity follows consolidation and enlarged cardiomediastinum follows cardiomegaly,
    as in ``synth``."""
    n = len(df)
    if n == 0:
        raise InputError("the cohort table is empty: nothing to imitate")
    if "image_id" not in df.columns or "patient_id" not in df.columns:
        raise InputError("the cohort table needs image_id and patient_id columns", column="image_id")
    pid = df["patient_id"].astype(str)
    patient_index = pd.factorize(pid)[0].astype(np.int64)
    paths, ids_kept = _paths(df, patient_index)
    lab = _labels(df)
    # per-row and per-patient draws; each from its own stream, so a row never depends on the others
    n_pat = int(patient_index.max()) + 1
    pat_draw = np.array([_rng(seed, 1, p).random(3) for p in range(n_pat)]) if n_pat else np.zeros((0, 3))
    row_draw = np.array([_rng(seed, 2, i).random(len(PATHOLOGIES) + 4) for i in range(n)])
    true: dict[str, np.ndarray] = {}
    for j, f in enumerate(PATHOLOGIES):
        y = lab[f]
        true[f] = (y == 1) | ((y == -1) & (row_draw[:, j] < 0.5))
    true["lung_opacity"] |= true["consolidation"]
    true["enlarged_cardiomediastinum"] |= true["cardiomegaly"]
    true["no_finding"] = ~np.any([true[f] for f in DISEASES], axis=0)

    def col(name: str) -> pd.Series:
        return df[name] if name in df.columns else pd.Series([None] * n, index=df.index, dtype=object)

    sex = col("sex").map({"F": "Female", "M": "Male"})
    age = pd.to_numeric(col("age"), errors="coerce")
    view = col("view")
    frontal = col("frontal") if "frontal" in df.columns else view.isin(["AP", "PA"])
    fl = np.where(view.astype(str) == "LATERAL", "Lateral", np.where(frontal.fillna(True).astype(bool),
                                                                      "Frontal", "Lateral"))
    appa = view.where(view.isin(["AP", "PA"]), None)
    age_out = age.astype("Int64") if bool((age.dropna() % 1 == 0).all()) else age
    out = pd.DataFrame({"Path": paths, "Sex": sex.to_numpy(object), "Age": age_out.to_numpy(),
                        "Frontal/Lateral": fl, "AP/PA": appa.to_numpy(object)})
    for f in FINDINGS:
        out[CHEXPERT_LABELS[f]] = lab[f]
    if col("race").notna().any():
        out["Race"] = col("race").to_numpy(object)
    if col("ethnicity").notna().any():
        out["Ethnicity"] = col("ethnicity").to_numpy(object)
    for f in FINDINGS:
        out[f"true_{f}"] = true[f].astype(int)
    # what the renderer gets: unknown sex or age drawn per patient; race only when known (no shift otherwise)
    habitus = np.clip(np.exp(0.12 * _norm(pat_draw[:, 0])), 0.75, 1.45)[patient_index]
    r_sex = np.where(pat_draw[:, 1] < 0.5, "Female", "Male")[patient_index]
    r_age = np.clip(np.round(58 + 17 * _norm(pat_draw[:, 2])), 18, 90)[patient_index]
    out["synth_index"] = np.arange(n)
    out["synth_patient_index"] = patient_index
    out["synth_sex"] = np.where(sex.notna(), sex.to_numpy(object), r_sex)
    out["synth_age"] = np.where(age.notna(), age.to_numpy(float), r_age)
    out["synth_view"] = np.where(view.astype(str) == "AP", "AP", "PA")
    out["synth_habitus"] = np.round(habitus, 4)
    out["synth_contrast"] = np.round(np.exp(0.06 * _norm(row_draw[:, -1])), 4)
    out["synth_noise"] = np.round(0.025 * np.exp(0.15 * _norm(row_draw[:, -2])) * (0.85 + 0.3 * (habitus - 0.85)), 4)
    out["synth_brightness"] = np.round(0.025 * _norm(row_draw[:, -3]), 4)
    stem = pd.Series(paths).str.replace(r"\.png$", "", regex=True)
    out["synth_mask_lung"] = ("masks/" + stem + "_lung.png").to_numpy(object)
    out["synth_mask_heart"] = ("masks/" + stem + "_heart.png").to_numpy(object)
    if not ids_kept:
        out["synth_source_image_id"] = df["image_id"].astype(str).to_numpy(object)
        out["synth_source_patient_id"] = pid.to_numpy(object)
        if "study_id" in df.columns:
            out["synth_source_study_id"] = df["study_id"].astype(str).to_numpy(object)
    if "split" in df.columns and df["split"].notna().any():
        out["synth_split"] = df["split"].to_numpy(object)
    return out


def _norm(u: np.ndarray) -> np.ndarray:
    """Uniform draws → standard normal ones (inverse CDF), so each row needs one uniform stream only."""
    from scipy.special import ndtri

    return ndtri(np.clip(u, 1e-12, 1 - 1e-12))


# ------------------------------------------------------------------------------------------------------ render
def _specs(csv: pd.DataFrame, seed: int, rows: np.ndarray) -> Iterator[tuple[ImageSpec, str]]:
    race = csv["Race"] if "Race" in csv.columns else pd.Series([None] * len(csv))
    true = csv[[f"true_{f}" for f in PATHOLOGIES]].to_numpy(bool)
    for i in rows:
        findings = tuple(f for j, f in enumerate(PATHOLOGIES) if true[i, j])
        r = race.iat[i]
        yield ImageSpec(seed=int(seed), index=int(i), patient_index=int(csv["synth_patient_index"].iat[i]),
                        sex=str(csv["synth_sex"].iat[i]), age=float(csv["synth_age"].iat[i]),
                        race=str(r) if isinstance(r, str) else "", view=str(csv["synth_view"].iat[i]),
                        findings=findings, visibility=dict.fromkeys(findings, 1.0),
                        contrast=float(csv["synth_contrast"].iat[i]), noise=float(csv["synth_noise"].iat[i]),
                        brightness=float(csv["synth_brightness"].iat[i]), habitus=float(csv["synth_habitus"].iat[i])
                        ), str(csv["Path"].iat[i])


def _save_png(arr: np.ndarray, path: Path) -> None:
    """Write a PNG under a temporary name and rename it: a killed run never leaves a half-written image. (No fsync
    per file: at hundreds of thousands of files it would cost more than the rendering.)"""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(arr).save(tmp, format="PNG", compress_level=6)  # no metadata: bytes depend on pixels only
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _work(job: tuple[list[tuple[ImageSpec, str]], int, str]) -> int:
    """Worker: render a chunk; masks first, the image last (its presence marks the row finished)."""
    items, size, root = job
    for spec, rel in items:
        r = render_spec(spec, size)
        stem = rel.removesuffix(".png")
        _save_png((r.lung * 255).astype(np.uint8), Path(root) / "masks" / f"{stem}_lung.png")
        _save_png((r.heart * 255).astype(np.uint8), Path(root) / "masks" / f"{stem}_heart.png")
        _save_png(r.image, Path(root) / rel)
    return len(items)


def _done(out: Path, csv: pd.DataFrame) -> np.ndarray:
    return np.array([(out / p).exists() and (out / m).exists() and (out / h).exists()
                     for p, m, h in zip(csv["Path"], csv["synth_mask_lung"], csv["synth_mask_heart"])], dtype=bool)


def _key(csv: pd.DataFrame, size: int, seed: int) -> str:
    h = hashlib.sha256(json.dumps([LIKE_VERSION, int(size), int(seed)]).encode())
    h.update(pd.util.hash_pandas_object(csv.astype(str), index=True).to_numpy().tobytes())
    return h.hexdigest()[:20]


def generate_like(out_dir: str | os.PathLike, like: str | os.PathLike | pd.DataFrame, size: int = 64, seed: int = 0,
                  workers: int = 1, *, n: int | None = None, overwrite: bool = False,
                  progress: Progress | None = None) -> pd.DataFrame:
    """Render one image per row of the cohort ``like`` (a path or a cohort DataFrame; ``n``: its first ``n`` rows)
    into ``out_dir`` in the CheXpert layout of ``synth``; return the ``train.csv`` written there.

    A rerun with the same table, size and seed renders only the images that are missing (an unfinished run
    resumes); anything else in a non-empty ``out_dir`` is refused unless ``overwrite``."""
    check_render_args(size, seed, workers)
    if n is not None and int(n) < 1:
        raise InputError(f"--n must be at least 1 (got {n})")
    source = "(a DataFrame)" if isinstance(like, pd.DataFrame) else str(like)
    df = like if isinstance(like, pd.DataFrame) else read_like(like)
    if n is not None:
        df = df.iloc[:int(n)]
    csv = like_table(df.reset_index(drop=True), seed)
    key = _key(csv, size, seed)
    out = Path(out_dir)
    marker = out / "like.json"
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a directory", path=out, hint="choose another output directory")
    if out.exists() and any(out.iterdir()):
        same = False
        if marker.exists():
            try:
                same = json.loads(marker.read_text(encoding="utf-8")).get("key") == key
            except (OSError, ValueError):
                same = False
        if not same:
            if not overwrite:
                raise InputError("exists and is not empty (nor an unfinished `synth --like` run of this table, size "
                                 "and seed)", path=out, hint="choose another directory or pass --overwrite")
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    info = {"key": key, "like": source, "images": int(len(csv)), "size": int(size), "seed": int(seed),
            "cxrdistill": __version__, "layout": "CheXpert train.csv; Path relative to this directory",
            "complete": False}
    write_json(info, marker)
    todo = np.flatnonzero(~_done(out, csv))
    total, done = len(csv), len(csv) - len(todo)
    if progress:
        progress(done, total)
    if len(todo):
        chunk = max(1, min(64, math.ceil(len(todo) / (workers * 8))))
        specs = _specs(csv, seed, todo)
        jobs = ((list(itertools.islice(specs, chunk)), int(size), str(out)) for _ in range(0, len(todo), chunk))
        if workers <= 1:
            results: Any = map(_work, jobs)
            for k in results:
                done += k
                if progress:
                    progress(done, total)
        else:
            import multiprocessing as mp

            # fork where available (fast start, no re-import of the caller's __main__); workers use numpy/scipy/PIL
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
                pending: set = set()
                for job in jobs:  # a bounded number of chunks in flight: memory stays flat for any table size
                    pending.add(ex.submit(_work, job))
                    if len(pending) >= 4 * workers:
                        done += _drain(pending, progress, done, total)
                while pending:
                    done += _drain(pending, progress, done, total)
    with atomic_open(out / "train.csv", "w", encoding="utf-8", newline="") as fh:
        csv.to_csv(fh, index=False, lineterminator="\n")
    if "synth_split" in csv.columns:
        sp = pd.DataFrame({"patient_id": csv["Path"].str.extract(r"(patient\d+)", expand=False),
                           "split": csv["synth_split"]}).dropna().drop_duplicates("patient_id")
        with atomic_open(out / "split.csv", "w", encoding="utf-8", newline="") as fh:
            sp.to_csv(fh, index=False, lineterminator="\n")
    write_json({**info, "complete": True}, marker)
    return csv


def _drain(pending: set, progress: Progress | None, done: int, total: int) -> int:
    from concurrent.futures import FIRST_COMPLETED, wait

    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
    k = 0
    for f in finished:
        pending.discard(f)
        k += f.result()
        if progress:
            progress(done + k, total)
    return k
