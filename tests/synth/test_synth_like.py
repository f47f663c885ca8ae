"""``synth --like``: a slice of CheXpert's real metadata (torchxrayvision's wheel) rendered as a dataset, read back
by ``cohort import chexpert`` with the same ids and values; determinism, resume, workers, non-CheXpert ids."""
from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrdistill.cli import main
from cxrdistill.errors import InputError
from cxrdistill.synth.like import generate_like, like_table
from cxrdistill.synth.scenario import FINDINGS

KEEP = ["image_id", "patient_id", "study_id", "view", "frontal", "sex", "age", "race", *FINDINGS]


def _xrv_chexpert() -> Path:
    spec = importlib.util.find_spec("torchxrayvision")  # source of real metadata only; not imported
    assert spec is not None and spec.origin, "torchxrayvision (dev dependency) must be installed for these tests"
    return Path(spec.origin).parent / "data" / "chexpert_train.csv.gz"


@pytest.fixture(scope="module")
def real_slice(tmp_path_factory) -> Path:
    """The first 120 rows of CheXpert's train.csv (frontal and lateral, 1/0/-1/blank labels, Unknown sex…),
    with a Race column added so race is carried too."""
    with gzip.open(_xrv_chexpert(), "rt", encoding="utf-8") as fh:
        df = pd.read_csv(fh, nrows=120, dtype=str, keep_default_na=False)
    df["Race"] = np.array(["White", "Black", "Asian", ""])[np.arange(len(df)) % 4]
    p = tmp_path_factory.mktemp("real") / "train_slice.csv"
    df.to_csv(p, index=False)
    return p


def _import(csv: Path, root: Path, out: Path, images: bool = True) -> pd.DataFrame:
    """``cohort import chexpert``; ``images=True`` also checks that every image file is there and readable."""
    check = ["--check-sample", "-1"] if images else ["--no-image-check"]
    main(["cohort", "import", "chexpert", "--csv", str(csv), "--images-root", str(root), *check, "--out", str(out)])
    return pd.read_parquet(out).sort_values("image_id").reset_index(drop=True)


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert len(a) == len(b)
    for c in KEEP:
        x, y = a[c], b[c]
        if c == "age" or c in FINDINGS:
            assert np.array_equal(x.to_numpy(float), y.to_numpy(float), equal_nan=True), c
        else:
            assert list(x.where(x.notna(), None)) == list(y.where(y.notna(), None)), c


def test_real_chexpert_slice_round_trips_through_cohort_import(real_slice, tmp_path, capsys):
    out = tmp_path / "like"
    main(["synth", str(out), "--like", str(real_slice), "--size", "32", "--seed", "5", "--workers", "2"])
    assert "120 images" in capsys.readouterr().out
    original = _import(real_slice, tmp_path, tmp_path / "original.parquet", images=False)
    again = _import(out / "train.csv", out, tmp_path / "again.parquet")
    _same(original, again)
    # the slice really exercises what must be kept
    assert (original["view"] == "LATERAL").any() and original["view"].isin(["AP", "PA"]).any()
    lab = original[FINDINGS].to_numpy(float)
    assert {1.0, 0.0, -1.0} <= set(np.unique(lab[~np.isnan(lab)])) and np.isnan(lab).any()
    assert original["race"].isna().any() and original["race"].notna().any()
    assert (again["dataset"] == "synthetic").all()
    # ground truth follows the labels: 1 → present, 0/blank → absent, -1 → either
    for f in FINDINGS[1:]:
        y, t = again[f].to_numpy(float), again[f"true_{f}"].to_numpy(int)
        assert (t[y == 1] == 1).all(), f
    assert (again.loc[again["pleural_effusion"] == 0, "true_pleural_effusion"] == 0).all()
    unc = again[[f for f in FINDINGS[1:]]].to_numpy(float) == -1
    truth = again[[f"true_{f}" for f in FINDINGS[1:]]].to_numpy(int)
    assert 0.3 < truth[unc].mean() < 0.7  # uncertain labels: about half drawn present
    # every image and mask is a real PNG of the asked size
    for rel in list(again["path"][:10]) + list(again["synth_mask_lung"][:3]):
        img = np.asarray(Image.open(out / rel))
        assert img.shape == (32, 32) and img.dtype == np.uint8
    meta = json.loads((out / "like.json").read_text())
    assert meta["complete"] and meta["images"] == 120 and meta["size"] == 32
    assert not [p for p in out.rglob(".*.tmp")]


def test_cohort_parquet_input_gives_the_same_dataset_as_the_csv(real_slice, tmp_path):
    cohort = tmp_path / "cohort.parquet"
    original = _import(real_slice, tmp_path, cohort, images=False)
    a = generate_like(tmp_path / "a", real_slice, size=24, seed=1, n=40)
    b = generate_like(tmp_path / "b", cohort, size=24, seed=1, n=40)
    pd.testing.assert_frame_equal(a, b)
    assert list(a["Path"].str.removesuffix(".png")) == list(original["image_id"][:40])
    for p in a["Path"]:
        assert (tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes()


def test_deterministic_whatever_the_workers_and_resumes_only_missing_images(real_slice, tmp_path):
    one = tmp_path / "one"
    two = tmp_path / "two"
    generate_like(one, real_slice, size=24, seed=2, n=30, workers=1)
    csv = generate_like(two, real_slice, size=24, seed=2, n=30, workers=2)
    assert (one / "train.csv").read_bytes() == (two / "train.csv").read_bytes()
    for p in csv["Path"]:
        assert (one / p).read_bytes() == (two / p).read_bytes()
    # an interrupted run: some images gone, train.csv not yet written
    gone = list(csv["Path"][[0, 7, 29]])
    for p in gone:
        (two / p).unlink()
    (two / "train.csv").unlink()
    before = {p: (two / p).stat().st_mtime_ns for p in csv["Path"] if p not in gone}
    seen = []
    generate_like(two, real_slice, size=24, seed=2, n=30, workers=2, progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (27, 30) and seen[-1] == (30, 30)
    assert all((two / p).stat().st_mtime_ns == t for p, t in before.items())  # finished images are not redone
    for p in csv["Path"]:
        assert (one / p).read_bytes() == (two / p).read_bytes()
    assert (one / "train.csv").read_bytes() == (two / "train.csv").read_bytes()
    # another seed is another dataset: refused in the same directory unless --overwrite
    with pytest.raises(InputError, match="not empty"):
        generate_like(two, real_slice, size=24, seed=3, n=30)
    generate_like(two, real_slice, size=24, seed=3, n=30, overwrite=True)
    assert (one / csv["Path"][0]).read_bytes() != (two / csv["Path"][0]).read_bytes()


def test_other_ids_get_chexpert_paths_and_are_kept_alongside(tmp_path):
    """A non-CheXpert cohort (MIMIC-like ids): CheXpert paths, the original ids in synth_source_* columns, and
    a patient's studies share one patient folder."""
    df = pd.DataFrame({
        "image_id": ["d1", "d2", "d3", "d4"], "patient_id": ["10000032", "10000032", "10000764", "10000898"],
        "study_id": ["s50414267", "s53189527", "s57375967", "s50771383"], "view": ["PA", "LATERAL", "AP", None],
        "frontal": [True, False, True, True], "sex": ["F", "F", "M", None], "age": [52.0, 52.0, float("nan"), 70.0],
        "race": [None, None, None, None], "split": ["train", "train", "test", "val"],
        "pleural_effusion": [1.0, -1.0, float("nan"), 0.0]})
    csv = generate_like(tmp_path / "m", df, size=24, seed=0)
    assert list(csv["Path"]) == ["like/train/patient000001/study1/view1_frontal.png",
                                 "like/train/patient000001/study2/view1_lateral.png",
                                 "like/train/patient000002/study1/view1_frontal.png",
                                 "like/train/patient000003/study1/view1_frontal.png"]
    assert list(csv["synth_source_image_id"]) == ["d1", "d2", "d3", "d4"]
    assert list(csv["synth_source_study_id"]) == list(df["study_id"])
    assert "Race" not in csv.columns  # no race known: none invented
    back = _import(tmp_path / "m" / "train.csv", tmp_path / "m", tmp_path / "m.parquet")
    back = back.set_index("synth_source_image_id").loc[df["image_id"]]
    assert list(back["synth_source_patient_id"].astype(str)) == list(df["patient_id"])  # read back as numbers
    assert list(back["view"].where(back["view"].notna(), None)) == list(df["view"])
    assert list(back["sex"].where(back["sex"].notna(), None)) == list(df["sex"])
    assert np.array_equal(back["age"].to_numpy(float), df["age"].to_numpy(float), equal_nan=True)
    assert np.array_equal(back["pleural_effusion"].to_numpy(float), df["pleural_effusion"].to_numpy(float),
                          equal_nan=True)
    split = pd.read_csv(tmp_path / "m" / "split.csv")
    assert list(split["split"]) == ["train", "test", "val"]


def test_bad_inputs_fail_with_a_message_that_says_what_to_do(tmp_path):
    with pytest.raises(InputError, match="unknown table type"):
        generate_like(tmp_path / "x", tmp_path / "cohort.json")
    with pytest.raises(InputError, match="between 16"):
        generate_like(tmp_path / "x", pd.DataFrame({"image_id": ["a"], "patient_id": ["p"]}), size=8)
    with pytest.raises(InputError, match="empty"):
        like_table(pd.DataFrame({"image_id": [], "patient_id": []}))
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"path": ["a.png"]}).to_parquet(bad)
    with pytest.raises(InputError, match="image_id"):
        generate_like(tmp_path / "x", bad)
