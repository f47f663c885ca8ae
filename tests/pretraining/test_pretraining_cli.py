"""The commands, in process: pretrain → pretrain-finetune from it → pretrain-grid; a bad option is one line."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from cxrdistill.cli import main

from pretraining_helpers import BACKBONE


@pytest.fixture(scope="module")
def disk_cohort(tiny_cohort, tmp_path_factory):
    """The tiny cohort as PNG files plus a cohort table, as `cohort import` would leave them."""
    df, images = tiny_cohort
    root = tmp_path_factory.mktemp("images")
    for path, img in zip(df["path"], images):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / path)
    table = root / "cohort.parquet"
    df.drop(columns=[c for c in df.columns if c.startswith("synth_")]).to_parquet(table)
    return table, root


def run(args, capsys):
    main(args)
    return capsys.readouterr()


def test_pretrain_then_finetune_then_grid(disk_cohort, tmp_path, capsys):
    table, root = disk_cohort
    common = ["--cohort", str(table), "--images-root", str(root), "--size", "32", "--workers", "1",
              "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    ck = tmp_path / "barlow.safetensors"
    out = run(["pretrain", "--method", "barlow", *common, "--backbone", BACKBONE, "--epochs", "1",
               "--batch-size", "32", "--projector", "32,16", "--multi-instance", "patient", "--out", str(ck)], capsys)
    res = json.loads(out.out)
    assert res["method"] == "barlow" and res["epochs"] == 1 and ck.exists()
    meta = json.loads((tmp_path / "barlow.safetensors.run" / "pretrain.json").read_text())
    assert meta["projector"] == [32, 16] and meta["multi_instance"] == "patient" and meta["lambda"] == 0.0051
    out = run(["pretrain-finetune", *common, "--init", f"checkpoint:{ck}", "--tasks", "pleural_effusion,edema",
               "--label-policy", "u-zeros", "--aux", "--epochs", "1", "--n-boot", "20",
               "--out", str(tmp_path / "ft")], capsys)
    res = json.loads(out.out)
    assert res["epochs"] == 1 and (tmp_path / "ft" / "history.json").exists()
    fj = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert fj["init_kind"] == "checkpoint" and fj["aux"] is True and fj["label_policy"].startswith("u-zeros")
    # the distillation area's `cxrdistill finetune --init CHECKPOINT` starts from the same file
    run(["finetune", "--cohort", str(table), "--images-root", str(root), "--size", "32", "--cache-dir",
         str(tmp_path / "cache"), "--init", str(ck), "--tasks", "pleural_effusion", "--epochs", "1", "--n-boot", "10",
         "--set", "augment=null", "--set", "train.batch_size=32", "--quiet", "--out", str(tmp_path / "ft2")], capsys)
    assert json.loads((tmp_path / "ft2" / "finetune.json").read_text())["init"] == str(ck)
    out = run(["pretrain-grid", *common, "--out", str(tmp_path / "grid"), "--inits", "random",
               "--inits", f"checkpoint:{ck}", "--policies", "u-ignore", "--aux", "off", "--seeds", "0",
               "--backbone", BACKBONE, "--tasks", "pleural_effusion,edema", "--finetune-epochs", "1",
               "--n-boot", "50", "--set", "finetune.n_boot=10"], capsys)
    assert "| random | u-ignore | off | 1 |" in out.out
    assert (tmp_path / "grid" / "table.parquet").exists()


def test_bad_input_is_one_line(disk_cohort, tmp_path, capsys):
    table, root = disk_cohort
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--method", "simclr", "--cohort", str(table), "--images-root", str(root), "--size", "32",
              "--workers", "1", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "x.safetensors")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown pretraining method 'simclr'" in err and "barlow" in err
    with pytest.raises(SystemExit) as e:
        main(["pretrain-grid", "--out", str(tmp_path / "g"), "--set", "inits_typo=[random]"])
    assert e.value.code == 2
    assert "unknown key" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
