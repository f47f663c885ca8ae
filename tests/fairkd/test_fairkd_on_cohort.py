"""Fair distillation of a given teacher on a given cohort (the study's stage): a real-style cohort (no ground truth,
some rows without the attribute) and fixed teacher embeddings → plain-KD and fair students, the teacher's own row
scored by the same probe, observed labels only, cached students, and clear errors for bad settings."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxrdistill.errors import CxrError, InputError
from cxrdistill.fairkd.on_cohort import cohort_from_table, make_cohort_config, run_on_cohort
from fairkd_helpers import make_images, teacher_embeddings

TASKS = ["pleural_effusion", "cardiomegaly"]


def real_style_cohort(n=120):
    imgs, y, g = make_images(n, seed=3)
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"image_id": [f"img{i:03d}" for i in range(n)], "patient_id": [f"p{i // 2}" for i in range(n)],
                       "race": np.where(g == 1, "Black", "White").astype(object),
                       "split": rng.choice(["train", "val", "test"], size=n, p=[0.6, 0.15, 0.25])})
    df.loc[::2, "split"] = df.loc[1::2, "split"].to_numpy()  # one split per patient
    df["pleural_effusion"], df["cardiomegaly"] = y[:, 0], y[:, 1]
    df.loc[[5, 17], "race"] = None  # unknown race: left out of the stage
    return df, imgs, teacher_embeddings(imgs)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    df, imgs, T = real_style_cohort()
    cfg = make_cohort_config({"methods": ["balanced", "mmd"], "seeds": [0], "student": {"epochs": 1}},
                             tasks=TASKS, label_policy="u-ignore", size=32, attribute="race",
                             student={"backbone": "lcnet_035", "loss": "mse_cosine", "epochs": 3}, ks_modes=4)
    keep = df["race"].notna().to_numpy()
    c = cohort_from_table(df, imgs, "race", TASKS, "u-ignore", "chexpert")
    out = tmp_path_factory.mktemp("on_cohort")
    tidy = run_on_cohort(c, T[keep], cfg, out, teacher_name="CXR <Foundation>")
    return df, T, keep, c, cfg, out, tidy


def test_rows_without_the_attribute_are_left_out_and_no_ground_truth_is_invented(run):
    df, _, keep, c, cfg, _, tidy = run
    assert len(c.images) == keep.sum() == len(df) - 2
    # each kept row's place in the table, so that the study aligns the teacher's embeddings of the whole table
    assert c.meta["table_row"].tolist() == np.flatnonzero(keep).tolist()
    assert (c.meta["image_id"].to_numpy() == df["image_id"].to_numpy()[c.meta["table_row"]]).all()
    assert set(c.y) == {"observed"}
    assert set(tidy.loc[tidy["eval"] != "embedding", "labels"]) == {"observed"}
    assert set(tidy["model"]) == {"teacher", "kd", "balanced", "mmd"}
    assert set(tidy["scenario"]) == {"chexpert"} and set(tidy["attribute"]) == {"race"}
    assert cfg.student.epochs == 1 and cfg.student.backbone == "lcnet_035"  # the user's options over the defaults


def test_teacher_is_scored_by_the_same_probe(run):
    """The teacher's overall AUC is a logistic probe on its own embeddings; recompute one task with scikit-learn."""
    from sklearn.linear_model import LogisticRegression

    _, T, keep, c, cfg, _, tidy = run
    Tk = T[keep]
    tr, te = c.idx["train"], c.idx["test"]
    y = c.y["observed"][:, 0]
    mu, sd = Tk[tr].mean(0), Tk[tr].std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    m = ~np.isnan(y[tr])
    # the probe minimises mean BCE + (l2 / 2)‖W‖²: scikit-learn's optimum with C = 1 / (l2 · n labelled)
    lr = LogisticRegression(C=1.0 / (cfg.probe_l2 * m.sum()), max_iter=5000, tol=1e-10).fit(((Tk[tr] - mu) / sd)[m],
                                                                                            y[tr][m])
    mt = ~np.isnan(y[te])
    ref = roc_auc_score(y[te][mt], lr.decision_function(((Tk[te] - mu) / sd)[mt]))
    got = tidy[(tidy["model"] == "teacher") & (tidy["eval"] == "probe") & (tidy["task"] == TASKS[0])
               & (tidy["group"] == "(overall)") & (tidy["metric"] == "auc")]["value"].iloc[0]
    assert got == pytest.approx(ref, abs=1e-3)


def test_outputs_are_written_and_escaped_and_students_cached(run):
    df, T, keep, c, cfg, out, tidy = run
    js = json.loads((out / "fairkd.json").read_text())
    assert "observed" in js["results"]["chexpert"] and "true" not in js["results"]["chexpert"]
    assert js["goal_lines"] and js["data_note"].startswith("The study's cohort (118 images with a known race")
    md = (out / "fairkd_table.md").read_text()
    assert "## Against the observed labels" in md and "true labels" not in md
    html = (out / "report.html").read_text()
    assert "CXR &lt;Foundation&gt;" in html and "CXR <Foundation>" not in html
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("embeddings.npy")}
    assert len(before) == 3  # kd, balanced, mmd
    tidy2 = run_on_cohort(c, T[keep], cfg, out)
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("embeddings.npy")} == before
    pd.testing.assert_frame_equal(tidy.reset_index(drop=True), tidy2.reset_index(drop=True))


def test_bad_settings_and_inputs_are_named():
    with pytest.raises(InputError, match=r"fair_distill\.options: n, scenarios are only for the synthetic measurement"):
        make_cohort_config({"scenarios": ["mixed"], "n": 100}, tasks=TASKS)
    with pytest.raises(InputError, match=r"invalid config: fair_distill\.options\.student\.epochs: "):
        make_cohort_config({"student": {"epochs": 0}}, tasks=TASKS)
    with pytest.raises(CxrError, match="unknown fair distillation objective .no_such_objective.; choose one of: adversarial"):
        make_cohort_config({"methods": ["no_such_objective"]}, tasks=TASKS)
    df, imgs, _ = real_style_cohort(40)
    with pytest.raises(InputError, match="'sex'"):
        cohort_from_table(df, imgs, "sex", TASKS, "u-ignore", "x")
    with pytest.raises(InputError, match="at least two"):
        cohort_from_table(df.assign(race="White"), imgs, "race", TASKS, "u-ignore", "x")
    with pytest.raises(InputError, match="39 images for 40 cohort rows"):
        cohort_from_table(df, imgs[:39], "race", TASKS, "u-ignore", "x")


def test_tradeoff_plot_shows_every_student_of_every_panel(run):
    from cxrdistill.fairkd.summary import tradeoff_plot

    *_, out, _ = run
    table = pd.read_parquet(out / "fairkd_summary.parquet")
    fig = tradeoff_plot(table)
    st = table[table["model"] != "teacher"]
    axes = fig.axes[:1]  # observed labels only: one panel
    assert len([a for a in fig.axes if a.get_title()]) == 1
    lo, hi = axes[0].get_ylim()
    assert lo <= st["retention_mean"].min() and hi >= max(st["retention_mean"].max(), 0.97)


def _cache_of(imgs: np.ndarray, ids: list[str], order: np.ndarray, root) -> "object":
    """A real uint8 image cache of ``imgs`` (PNG files decoded by ``ImageCache.build``), its rows in ``order``."""
    from PIL import Image

    from cxrdistill.images.cache import ImageCache

    for i in range(len(imgs)):
        Image.fromarray(imgs[i]).save(root / f"{ids[i]}.png")
    table = pd.DataFrame({"image_id": [ids[i] for i in order], "path": [f"{ids[i]}.png" for i in order]})
    return ImageCache.build(table, root, imgs.shape[1], root / "cache", workers=1, progress=False)


def test_streaming_from_the_memory_mapped_cache_gives_the_same_results(run, tmp_path):
    """The stage reads pixels through an index into the cache (rows in another order than the cohort's): the same
    cohort, the same students and the same table as with the images in memory, and no copy of the pixels."""
    import pickle

    from cxrdistill.images.cache import ImageRows

    df, T, keep, c, cfg, _, tidy = run
    imgs, _, _ = make_images(len(df), seed=3)
    cache = _cache_of(imgs, list(df["image_id"]), np.random.default_rng(1).permutation(len(df)), tmp_path)
    assert np.array_equal(cache.array[cache.index_of(df["image_id"])], imgs)  # lossless PNG → cache
    rows = cache.index_of(df["image_id"])
    assert not np.array_equal(rows, np.arange(len(df)))
    cm = cohort_from_table(df, cache, "race", TASKS, "u-ignore", "chexpert", rows=rows)
    assert isinstance(cm.images, ImageRows) and cm.images.images is cache  # an index, not an array of pixels
    assert len(pickle.dumps(cm.images)) < imgs.nbytes / 4  # the cache's location and row numbers, not pixels
    assert np.array_equal(np.asarray(cm.images), np.asarray(c.images))
    assert all(np.array_equal(cm.y[k], c.y[k]) for k in c.y) and all(
        np.array_equal(cm.idx[s], c.idx[s]) for s in c.idx)
    tidy2 = run_on_cohort(cm, T[keep], cfg, tmp_path / "streamed")
    pd.testing.assert_frame_equal(tidy.reset_index(drop=True), tidy2.reset_index(drop=True))


def test_building_the_cohort_reads_no_pixels(tmp_path):
    """Memory stays bounded: a cohort over a 20 MB memory-mapped image file allocates row numbers, not images
    (the stage used to copy every image of the cohort into RAM first)."""
    import tracemalloc

    from cxrdistill.images.cache import ImageRows

    n, size = 5000, 64
    mm = np.lib.format.open_memmap(tmp_path / "images.npy", mode="w+", dtype=np.uint8, shape=(n, size, size))
    mm[:] = np.random.default_rng(0).integers(0, 255, size=(n, size, size), dtype=np.uint8)
    mm.flush()
    mm = np.load(tmp_path / "images.npy", mmap_mode="r")
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "patient_id": [f"p{k}" for k in range(n)],
                       "race": rng.choice(["White", "Black", None], n), "split": rng.choice(["train", "val", "test"], n),
                       "pleural_effusion": rng.integers(0, 2, n).astype(float),
                       "cardiomegaly": rng.integers(0, 2, n).astype(float)})
    rows = rng.permutation(n)
    tracemalloc.start()
    c = cohort_from_table(df, mm, "race", TASKS, "u-ignore", "x", rows=rows)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert isinstance(c.images, ImageRows) and isinstance(c.images.images, np.memmap)
    assert peak < 0.1 * n * size * size  # < 2 MB for 20 MB of images (the row index and the table)
    k = c.idx["train"][:7]
    assert np.array_equal(c.images[k], np.asarray(mm)[rows[df["race"].notna().to_numpy()
                                                          & df["split"].notna().to_numpy()][k]])
