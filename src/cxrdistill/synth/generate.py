"""Generate a synthetic cohort: a CheXpert-layout dataset on disk (``generate``) or images in memory
(``render_batch``). Deterministic: the same (n, size, seed, scenario) gives byte-identical files whatever the
number of workers, because each image is seeded from (seed, index) and the table from seed alone."""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from cxrdistill import __version__
from cxrdistill.errors import InputError
from cxrdistill.storage.io import atomic_open, clean_json, write_json
from cxrdistill.synth.preview import contact_sheet
from cxrdistill.synth.render import ImageSpec, render_spec
from cxrdistill.synth.sample import CHEXPERT_LABELS, manifestation_of, sample_cohort
from cxrdistill.synth.scenario import FINDINGS, PATHOLOGIES, Scenario, load_scenario

Progress = Callable[[int, int], None]
MAX_SIZE = 1024


def _check_args(n: int, size: int, seed: int, workers: int) -> None:
    if int(n) < 1:
        raise InputError(f"--n must be at least 1 (got {n})")
    check_render_args(size, seed, workers)


def check_render_args(size: int, seed: int, workers: int) -> None:
    """Refuse an image size outside 16..MAX_SIZE, a negative seed or fewer than one worker (the CLI's messages)."""
    if not 16 <= int(size) <= MAX_SIZE:
        raise InputError(f"--size must be between 16 and {MAX_SIZE} pixels (got {size})")
    if int(seed) < 0:
        raise InputError(f"--seed must be non-negative (got {seed})")
    if int(workers) < 1:
        raise InputError(f"--workers must be at least 1 (got {workers})")


def specs_from_table(df: pd.DataFrame, scenario: Scenario, seed: int) -> list[ImageSpec]:
    """One ``ImageSpec`` per row of the table made by ``sample_cohort``."""
    specs = []
    recs = df.to_dict("records")
    for r in recs:
        g = scenario.groups[r["synth_group"]]
        site = scenario.sites[r["synth_site"]]
        findings = tuple(f for f in PATHOLOGIES if r[f"true_{f}"])
        sc = (g.shortcut.shape, g.shortcut.corner) if (r["synth_shortcut"] and g.shortcut is not None) else None
        specs.append(ImageSpec(
            seed=int(seed), index=int(r["synth_index"]), patient_index=int(r["synth_patient_index"]), sex=r["sex"],
            age=float(r["age"]), race=r["race"], view=r["view"], findings=findings,
            variants=manifestation_of(r["synth_manifestation"]),
            visibility={f: g.rate(g.visibility, f, 1.0) for f in findings},
            contrast=float(r["synth_contrast"]), noise=float(r["synth_noise"]),
            brightness=float(r["synth_brightness"]), blur=float(r["synth_blur"]), habitus=float(r["synth_habitus"]),
            marker=site.marker, marker_corner=site.marker_corner, marker_shape=site.marker_shape, shortcut=sc,
            demographics=float(scenario.demographics)))
    return specs


def _mask_paths(path: str) -> tuple[str, str]:
    stem = path.removeprefix("synth/").removesuffix(".png")
    return f"masks/{stem}_lung.png", f"masks/{stem}_heart.png"


def _save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    # fixed settings and no metadata chunks, so the bytes depend on the pixels only
    Image.fromarray(arr).save(path, format="PNG", compress_level=6)


def _work(job: tuple[list[ImageSpec], int, str | None, list[str] | None, bool]) -> list[Any]:
    """Worker: render a chunk; either write PNGs under ``root`` or return the arrays."""
    specs, size, root, paths, masks = job
    out: list[Any] = []
    for i, spec in enumerate(specs):
        r = render_spec(spec, size)
        if root is None:
            out.append((spec.index, r.image, (np.stack([r.lung, r.heart]).astype(np.uint8) if masks else None),
                        r.ctr, ",".join(r.devices)))
            continue
        rel = paths[i]
        img_path = Path(root) / rel
        img_path.parent.mkdir(parents=True, exist_ok=True)
        _save_png(r.image, img_path)
        lung_rel, heart_rel = _mask_paths(rel)
        (Path(root) / lung_rel).parent.mkdir(parents=True, exist_ok=True)
        _save_png((r.lung * 255).astype(np.uint8), Path(root) / lung_rel)
        _save_png((r.heart * 255).astype(np.uint8), Path(root) / heart_rel)
        out.append((spec.index, None, None, r.ctr, ",".join(r.devices)))
    return out


def _run(specs: list[ImageSpec], size: int, workers: int, root: str | None, paths: list[str] | None, masks: bool,
         progress: Progress | None) -> list[Any]:
    n = len(specs)
    chunk = max(1, min(64, math.ceil(n / (workers * 8))))
    jobs = [(specs[i:i + chunk], size, root, paths[i:i + chunk] if paths else None, masks) for i in range(0, n, chunk)]
    results: list[Any] = []
    done = 0
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            results.extend(_work(job))
            done += len(job[0])
            if progress:
                progress(done, n)
    else:
        # fork where available: no re-import of the caller's __main__ (scripts need no main guard) and a fast start;
        # workers use only numpy/scipy/PIL, no thread pools inherited from the parent are touched
        import multiprocessing as mp

        ctx = get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
            for res in ex.map(_work, jobs):
                results.extend(res)
                done += len(res)
                if progress:
                    progress(done, n)
    results.sort(key=lambda t: t[0])
    return results


def cohort_table(df: pd.DataFrame) -> pd.DataFrame:
    """The sampled table in the project's cohort-table layout (as ``cohort import chexpert`` would produce it)."""
    out = pd.DataFrame({
        "image_id": df["path"].str.replace(r"\.png$", "", regex=True), "patient_id": df["patient_id"],
        "path": df["path"], "view": df["view"], "frontal": True, "sex": df["sex"].map({"Male": "M", "Female": "F"}),
        "age": df["age"].astype(float), "race": df["race"], "split": None,
        "study_id": df["patient_id"] + "/study" + df["study"].astype(str), "ethnicity": None,
        "dataset": "synthetic",
    })
    for f in FINDINGS:
        out[f] = df[f].astype(float)
    for c in df.columns:
        if c.startswith(("true_", "synth_")):
            out[c] = df[c]
    return out


def chexpert_csv(df: pd.DataFrame) -> pd.DataFrame:
    """The sampled table in CheXpert's ``train.csv`` layout, plus ``Race``, ``true_*`` and ``synth_*`` columns."""
    out = pd.DataFrame({"Path": df["path"], "Sex": df["sex"], "Age": df["age"].astype(int),
                        "Frontal/Lateral": "Frontal", "AP/PA": df["view"]})
    for f in FINDINGS:
        out[CHEXPERT_LABELS[f]] = df[f].astype(float)
    out["Race"] = df["race"]
    for f in FINDINGS:
        out[f"true_{f}"] = df[f"true_{f}"].astype(int)
    for c in df.columns:
        if c.startswith("synth_"):
            out[c] = df[c]
    return out


def render_batch(n: int, size: int = 64, seed: int = 0, scenario: "str | Scenario | dict | os.PathLike" = "none",
                 workers: int = 1, masks: bool = False):
    """Render ``n`` images in memory: ``(images uint8 (n, size, size), meta)``, and ``masks`` (n, 2, size, size)
    {0,1} (lung, heart) as a third item when ``masks=True``. ``meta`` is a cohort table (image_id, patient_id,
    path, view, sex F/M, age, race, labels 1/0/-1/NaN, ``true_*``, ``synth_*``): the rows ``generate`` would write."""
    _check_args(n, size, seed, workers)
    sc = load_scenario(scenario)
    df = sample_cohort(n, seed, sc)
    res = _run(specs_from_table(df, sc, seed), size, workers, None, None, masks, None)
    images = np.stack([r[1] for r in res])
    df["synth_ctr"] = np.round([r[3] for r in res], 4)
    df["synth_devices"] = [r[4] for r in res]
    meta = cohort_table(df)
    if masks:
        return images, meta, np.stack([r[2] for r in res])
    return images, meta


def _summary(df: pd.DataFrame, scenario: Scenario) -> dict[str, Any]:
    out: dict[str, Any] = {"images": int(len(df)), "patients": int(df["patient_id"].nunique()), "groups": {}}
    for g, d in df.groupby("synth_group", sort=False):
        tp = {f: int(d[f"true_{f}"].sum()) for f in FINDINGS}
        ud = {f: int(d[f"synth_underdiagnosed_{f}"].sum()) for f in PATHOLOGIES}
        sc = {}
        for ph, dd in d.groupby("synth_shortcut_phase"):
            sc[ph] = {"images": int(len(dd)), "marker_rate": float(dd["synth_shortcut"].mean())}
        out["groups"][str(g)] = {
            "images": int(len(d)), "patients": int(d["patient_id"].nunique()),
            "image_share": float(len(d) / len(df)),
            "ap_share": float((d["view"] == "AP").mean()),
            "female_share": float((d["sex"] == "Female").mean()),
            "mean_age": float(d["age"].mean()),
            "sites": {str(k): int(v) for k, v in d["synth_site"].value_counts().sort_index().items()},
            "true_prevalence": {f: tp[f] / len(d) for f in FINDINGS},
            "observed_positive_rate": {f: float((d[f] == 1).mean()) for f in FINDINGS},
            "observed_uncertain_rate": {f: float((d[f] == -1).mean()) for f in FINDINGS},
            "underdiagnosed": ud,
            "underdiagnosed_fraction_of_true_positives": {f: (ud[f] / tp[f] if tp[f] else None) for f in PATHOLOGIES},
            "shortcut_by_phase": sc,
            "mean_contrast": float(d["synth_contrast"].mean()), "mean_noise": float(d["synth_noise"].mean()),
            "mean_ctr": {"cardiomegaly": float(d.loc[d["true_cardiomegaly"] == 1, "synth_ctr"].mean()),
                         "no_cardiomegaly": float(d.loc[d["true_cardiomegaly"] == 0, "synth_ctr"].mean())},
        }
    return out


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists():
        if not out.is_dir():
            raise InputError("exists and is not a directory", path=out, hint="choose another output directory")
        if any(out.iterdir()) and not overwrite:
            raise InputError("exists and is not empty", path=out, hint="choose another directory or pass --overwrite")


def generate(out_dir: "str | os.PathLike", n: int, size: int = 128, seed: int = 0,
             scenario: "str | Scenario | dict | os.PathLike" = "none", workers: int = 1, *,
             preview: "str | os.PathLike | None" = None, overwrite: bool = False,
             progress: Progress | None = None) -> pd.DataFrame:
    """Write a CheXpert-layout synthetic dataset to ``out_dir`` and return its ``train.csv`` as a DataFrame.

    Layout: ``train.csv``, ``scenario.json``, ``split.csv`` (patient_id → train/val/test following
    ``synth_shortcut_phase``), ``synth/train/patientNNNNN/studyK/view1_frontal.png`` and masks under
    ``masks/train/…_lung.png`` / ``…_heart.png``. Written into a temporary sibling directory and moved into place,
    so ``out_dir`` is never left half-written.
    """
    _check_args(n, size, seed, workers)
    sc = load_scenario(scenario)
    out = Path(out_dir)
    _prepare_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    df = sample_cohort(n, seed, sc)
    lung_m, heart_m = zip(*[_mask_paths(p) for p in df["path"]])
    df["synth_mask_lung"] = list(lung_m)
    df["synth_mask_heart"] = list(heart_m)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the dataset should not be
    try:
        res = _run(specs_from_table(df, sc, seed), size, workers, str(tmp), list(df["path"]), False, progress)
        df["synth_ctr"] = np.round([r[3] for r in res], 4)
        df["synth_devices"] = [r[4] for r in res]
        csv = chexpert_csv(df)
        with atomic_open(tmp / "train.csv", "w", encoding="utf-8", newline="") as fh:
            csv.to_csv(fh, index=False, lineterminator="\n")
        split = df.drop_duplicates("patient_id")[["patient_id", "synth_split"]].rename(columns={"synth_split": "split"})
        with atomic_open(tmp / "split.csv", "w", encoding="utf-8", newline="") as fh:
            split.to_csv(fh, index=False, lineterminator="\n")

        write_json(clean_json({"scenario": sc.model_dump(mode="json"), "resolved": sc.resolved(),
                    "generator": {"n": int(n), "size": int(size), "seed": int(seed), "cxrdistill": __version__,
                                  "layout": "CheXpert train.csv; Path relative to this directory"},
                    "summary": _summary(df, sc)}), tmp / "scenario.json")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if preview is not None:
        contact_sheet(out, csv, preview)
    return csv


def _swap_into_place(tmp: Path, out: Path) -> None:
    trash = None
    if out.exists():
        trash = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, trash)
    try:
        os.replace(tmp, out)
    except BaseException:
        if trash is not None:
            os.replace(trash, out)
        raise
    if trash is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(trash)
