"""End to end through the CLI (in-process), and the round trip through ``cohort import chexpert``."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrdistill.cli import main
from cxrdistill.synth import CHEXPERT_COLUMNS


def _cli(args):
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code


def test_cli_writes_a_chexpert_layout_dataset(tmp_path, capsys):
    out = tmp_path / "ds"
    main(["synth", str(out), "--n", "30", "--size", "48", "--seed", "4", "--scenario", "underdiagnosis",
          "--preview", str(tmp_path / "preview.png"), "--workers", "1"])
    assert "wrote" in capsys.readouterr().out
    csv = pd.read_csv(out / "train.csv")
    assert list(csv.columns[:19]) == CHEXPERT_COLUMNS
    assert csv.columns[19] == "Race"
    assert [c for c in csv.columns if c.startswith("true_")] == ["true_" + c for c in (
        "no_finding enlarged_cardiomediastinum cardiomegaly lung_opacity lung_lesion edema consolidation pneumonia "
        "atelectasis pneumothorax pleural_effusion pleural_other fracture support_devices").split()]
    for c in ("synth_site", "synth_marker", "synth_contrast", "synth_noise", "synth_shortcut",
              "synth_shortcut_phase", "synth_underdiagnosed_edema", "synth_mask_lung", "synth_mask_heart",
              "synth_ctr"):
        assert c in csv.columns, c
    assert set(csv["Sex"]) <= {"Male", "Female"} and set(csv["Race"]) <= {"White", "Black", "Asian"}
    assert set(csv["Frontal/Lateral"]) == {"Frontal"} and set(csv["AP/PA"]) <= {"AP", "PA"}
    assert csv["Path"].str.fullmatch(r"synth/train/patient\d{5}/study\d+/view1_frontal\.png").all()
    assert csv["Path"].str.extract(r"(patient\d+)")[0].nunique() < len(csv)  # some patients have several studies
    for c in CHEXPERT_COLUMNS[5:]:
        assert set(csv[c].dropna().unique()) <= {1.0, 0.0, -1.0}
    raw = (out / "train.csv").read_text().splitlines()[1]
    assert ",," in raw or raw.endswith(",")  # blanks are written as empty fields, like CheXpert
    for _, r in csv.iterrows():
        img = np.asarray(Image.open(out / r["Path"]))
        assert img.dtype == np.uint8 and img.shape == (48, 48)
        lung = np.asarray(Image.open(out / r["synth_mask_lung"]))
        assert lung.shape == (48, 48) and set(np.unique(lung)) <= {0, 255}
    meta = json.loads((out / "scenario.json").read_text())
    assert meta["scenario"]["name"] == "underdiagnosis" and meta["generator"]["seed"] == 4
    assert meta["resolved"]["Female"]["underdiagnosis"]["edema"] == 0.6
    assert meta["summary"]["images"] == 30
    prev = Image.open(tmp_path / "preview.png")
    assert prev.size[0] == 6 * 128 and prev.size[1] >= 4 * 128
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directories left


def test_cli_refuses_non_empty_out_and_overwrites_on_request(tmp_path, capsys):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert _cli(["synth", str(out), "--n", "4", "--size", "32"]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").exists()
    main(["synth", str(out), "--n", "4", "--size", "32", "--overwrite"])
    assert (out / "train.csv").exists() and not (out / "keep.txt").exists()
    assert _cli(["synth", str(tmp_path / "x"), "--n", "0"]) == 2
    assert _cli(["synth", str(tmp_path / "x"), "--scenario", "nope"]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("attribute: sex\ngroups: {Male: {share: 1.0, oops: 1}}\n")
    assert _cli(["synth", str(tmp_path / "x"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "groups.Male.oops: unknown key" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    """A failure after the images are rendered (injected while writing the csv) leaves no partial output."""
    import importlib

    gen = importlib.import_module("cxrdistill.synth.generate")  # the module (the package exports the function)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(gen, "chexpert_csv", boom)
    with pytest.raises(RuntimeError):
        gen.generate(tmp_path / "ds", n=3, size=32)
    assert list(tmp_path.iterdir()) == []


def test_roundtrip_through_cohort_import_chexpert(mixed_dataset, tmp_path):
    from cxrdistill import synth

    out, csv = mixed_dataset
    cohort = tmp_path / "cohort.parquet"
    main(["cohort", "import", "chexpert", "--csv", str(out / "train.csv"), "--images-root", str(out),
          "--check-sample", "-1", "--out", str(cohort)])
    got = pd.read_parquet(cohort).sort_values("image_id").reset_index(drop=True)
    _, expect = synth.render_batch(40, size=48, seed=3, scenario="mixed")
    expect = expect.sort_values("image_id").reset_index(drop=True)
    assert len(got) == 40 and list(got["image_id"]) == list(expect["image_id"])
    for c in ("patient_id", "path", "view", "sex", "race", "study_id"):
        assert list(got[c]) == list(expect[c]), c
    assert np.allclose(got["age"], expect["age"])
    assert got["frontal"].all() and (got["dataset"] == "synthetic").all()
    from cxrdistill.synth.scenario import FINDINGS

    for f in FINDINGS:
        assert np.array_equal(got[f].to_numpy(float), expect[f].to_numpy(float), equal_nan=True), f
        assert (got[f"true_{f}"].astype(int).to_numpy() == expect[f"true_{f}"].to_numpy()).all(), f
    assert (got["synth_group"].astype(str) == expect["synth_group"].astype(str)).all()
    # the suggested split keeps the shortcut's phases apart: train phase → train/val, test phase → test
    split = tmp_path / "split.parquet"
    main(["cohort", "split", str(cohort), "--from-file", str(out / "split.csv"), "--out", str(split)])
    sp = pd.read_parquet(split)
    assert sp["split"].notna().all()
    assert ((sp["split"] == "test") == (sp["synth_shortcut_phase"] == "test")).all()
    assert (sp["split"] == sp["synth_split"]).all()
