"""The distillation pool's stage reads a directory of images or a cohort table into ``pool/pool.parquet``: ids
prefixed ``pool/``, absolute paths, split ``pool``, no label columns; bad tables are refused by name."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrdistill.errors import CxrError
from cxrdistill.study.config import load_config
from cxrdistill.study.engine import StudyContext
from cxrdistill.study.stages import stage_pool


def _png(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)


def _ctx(tmp_path, **pool):
    cfg = load_config(None, {f"distill_pool.{k}": v for k, v in pool.items()})
    return StudyContext(out=tmp_path / "run", cfg=cfg, log=lambda m: None)


def test_a_directory_becomes_unlabelled_pool_rows(tmp_path):
    for rel in ("a/x1.png", "a/b/x2.PNG", "c/x3.jpg"):
        _png(tmp_path / "imgs" / rel)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    res = stage_pool(_ctx(tmp_path, source="dir", dir=str(tmp_path / "imgs")))
    df = pd.read_parquet(res["table"])
    assert res["n"] == 3 and sorted(df["image_id"]) == ["pool/a/b/x2", "pool/a/x1", "pool/c/x3"]
    assert (df["split"] == "pool").all() and df["frontal"].all()
    assert all(p.startswith("/") and (tmp_path / "imgs").as_posix() in p for p in df["path"])


def test_a_table_keeps_its_ids_and_demographics_but_never_its_labels(tmp_path):
    for k in range(4):
        _png(tmp_path / "root" / f"p{k}.png", k)
    pd.DataFrame({"image_id": [f"img{k}" for k in range(4)], "patient_id": ["p0", "p0", "p1", "p2"],
                  "path": [f"p{k}.png" for k in range(4)], "sex": ["F", "M", "F", "M"],
                  "pleural_effusion": [1.0, 0.0, -1.0, np.nan]}).to_csv(tmp_path / "pool.csv", index=False)
    res = stage_pool(_ctx(tmp_path, source="table", table=str(tmp_path / "pool.csv"),
                          images_root=str(tmp_path / "root"), max_images=3))
    df = pd.read_parquet(res["table"])
    assert len(df) == 3 and df["image_id"].str.startswith("pool/img").all()
    assert df["patient_id"].str.startswith("pool/p").all() and "sex" in df.columns
    assert "pleural_effusion" not in df.columns
    assert all(p.startswith(str((tmp_path / "root").resolve())) for p in df["path"])


@pytest.mark.parametrize("table, match", [({"image_id": ["a"]}, "no 'path' column"),
                                          ({"image_id": ["a", "a"], "path": ["x.png", "y.png"]}, "appears twice")])
def test_a_bad_table_is_refused_by_name(tmp_path, table, match):
    pd.DataFrame(table).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(CxrError, match=match):
        stage_pool(_ctx(tmp_path, source="table", table=str(tmp_path / "t.csv")))


def test_an_empty_directory_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CxrError, match="no image files"):
        stage_pool(_ctx(tmp_path, source="dir", dir=str(tmp_path / "empty")))


def test_a_synthetic_pool_is_rendered_in_chunks_with_unique_ids(tmp_path):
    from cxrdistill.study.stages import _render_pool

    ctx = _ctx(tmp_path, source="synth", n=5)
    meta = _render_pool(ctx, tmp_path / "imgs", chunk=2)  # 3 chunks: each its own sample of the population
    assert len(meta) == 5 and meta["image_id"].is_unique and meta["patient_id"].str.startswith(("0/", "1/", "2/")).all()
    assert all(Image.open(p).size == (64, 64) for p in meta["path"])
