"""The uint8 cache: build, reopen without decoding, bad files, and resume after a SIGKILLed build."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrdistill.errors import InputError
from cxrdistill.images.cache import ImageCache
from cxrdistill.images.decode import load_gray
from cxrdistill.images.preprocess import preprocess


def test_build_matches_direct_decoding_and_reopens(tiny_pngs, tmp_path):
    root, df = tiny_pngs
    cache = ImageCache.build(df, root, 32, tmp_path / "c", workers=1, progress=False)
    assert len(cache) == 40 and cache.array.shape == (40, 32, 32) and cache.array.dtype == np.uint8
    assert isinstance(cache.array, np.memmap)
    assert list(cache.ids) == df.image_id.tolist()
    for k in (0, 17, 39):
        assert np.array_equal(cache.array[k], preprocess(load_gray(root / df.path[k]), 32, "resize"))
    rows = cache.index_of(["id039", "id001"])
    assert rows.tolist() == [39, 1]
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["n"] == 40 and meta["size"] == 32 and meta["mode"] == "resize" and len(meta["source_hash"]) == 64
    assert not (tmp_path / "c.partial").exists()
    # Later runs never decode again: with the source images gone, build() returns the existing cache.
    os.rename(root, tmp_path / "gone")
    again = ImageCache.build(df, root, 32, tmp_path / "c", workers=1, progress=False)
    assert np.array_equal(np.asarray(again.array), np.asarray(cache.array))
    with pytest.raises(InputError, match="other images or settings"):
        ImageCache.build(df, root, 24, tmp_path / "c", workers=1, progress=False)
    with pytest.raises(InputError, match="not in the image cache"):
        cache.index_of(["nope"])


def test_pool_build_equals_inprocess_build(tiny_pngs, tmp_path):
    root, df = tiny_pngs
    a = ImageCache.build(df, root, 24, tmp_path / "a", mode="pad", workers=1, progress=False)
    b = ImageCache.build(df, root, 24, tmp_path / "b", mode="pad", workers=2, progress=True, chunk_size=7)
    assert (tmp_path / "a" / "images.u8").read_bytes() == (tmp_path / "b" / "images.u8").read_bytes()
    assert a.index.equals(b.index)


def test_bad_files_raise_or_skip(tiny_pngs, tmp_path):
    root, df = tiny_pngs
    (root / df.path[5]).write_bytes(b"")
    (root / df.path[9]).write_text("not an image")
    with pytest.raises(InputError, match=r"cannot cache image 'id005'.*img005\.png: image file is empty"):
        ImageCache.build(df, root, 16, tmp_path / "c", workers=1, progress=False)
    assert not (tmp_path / "c").exists()  # nothing published
    cache = ImageCache.build(df, root, 16, tmp_path / "c", workers=1, progress=False, on_error="skip")
    assert cache.ok.sum() == 38
    assert cache.skipped.image_id.tolist() == ["id005", "id009"]
    assert "not a readable image" in cache.skipped.error[1]
    assert cache.has(["id005", "id006", "zzz"]).tolist() == [False, True, False]
    with pytest.raises(InputError, match="could not be decoded"):
        cache.index_of(["id006", "id009"])
    assert cache.array[5].max() == 0


def test_cohort_validation(tmp_path):
    with pytest.raises(InputError, match="column 'path'"):
        ImageCache.build(pd.DataFrame({"image_id": ["a"]}), tmp_path, 8, tmp_path / "c", progress=False)
    with pytest.raises(InputError, match="duplicate image_id"):
        ImageCache.build(pd.DataFrame({"image_id": ["a", "a"], "path": ["x", "y"]}), tmp_path, 8, tmp_path / "c",
                         progress=False)
    with pytest.raises(InputError, match="cohort is empty"):
        ImageCache.build(pd.DataFrame({"image_id": [], "path": []}), tmp_path, 8, tmp_path / "c", progress=False)


def test_pickle_reopens_map(tiny_pngs, tmp_path):
    import pickle

    root, df = tiny_pngs
    cache = ImageCache.build(df, root, 16, tmp_path / "c", workers=1, progress=False)
    _ = cache.array[0]
    blob = pickle.dumps(cache)
    assert len(blob) < 16 * 16 * 40  # the pixels are not in the pickle
    c2 = pickle.loads(blob)
    assert np.array_equal(np.asarray(c2.array), np.asarray(cache.array))


_BUILD_SCRIPT = """
import sys, pandas as pd
from cxrdistill.images.cache import ImageCache
df = pd.read_parquet(sys.argv[1])
ImageCache.build(df, sys.argv[2], 64, sys.argv[3], workers=1, progress=False, chunk_size=8)
"""


def test_resume_after_sigkill_equals_clean_build(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "imgs"
    root.mkdir()
    yy, xx = np.mgrid[0:384, 0:384]
    rows = []
    for k in range(160):
        a = ((yy * (1 + k % 5) + xx * (k % 3)) % 256 + rng.integers(0, 30, (384, 384))).clip(0, 255).astype(np.uint8)
        Image.fromarray(a).save(root / f"{k:03d}.png", compress_level=1)
        rows.append({"image_id": f"i{k:03d}", "path": f"{k:03d}.png"})
    df = pd.DataFrame(rows)
    df.to_parquet(tmp_path / "cohort.parquet")
    script = tmp_path / "build.py"
    script.write_text(_BUILD_SCRIPT)
    out = tmp_path / "cache"
    bitmap = tmp_path / "cache.partial" / "done.bitmap"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "cohort.parquet"), str(root), str(out)],
                            env=env)
    done = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if bitmap.exists():
            with open(bitmap, "rb") as fh:
                done = int(np.unpackbits(np.frombuffer(fh.read(), np.uint8)).sum())
            if done >= 24:
                break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 24 <= done < 160, f"kill came too late or never ({done} rows done)"
    assert not out.exists() and (tmp_path / "cache.partial").exists()  # nothing half-published

    resumed = ImageCache.build(df, root, 64, out, workers=1, progress=False)
    clean = ImageCache.build(df, root, 64, tmp_path / "clean", workers=1, progress=False)
    assert (out / "images.u8").read_bytes() == (tmp_path / "clean" / "images.u8").read_bytes()
    assert resumed.index.equals(clean.index)
    m1, m2 = (json.loads(Path(d, "meta.json").read_text()) for d in (out, tmp_path / "clean"))
    m1.pop("created"), m2.pop("created")
    assert m1 == m2
    assert not (tmp_path / "cache.partial").exists()


def test_cli_images_cache(tiny_pngs, tmp_path):
    """``cxrdistill images cache`` (module commands/images.py; registered on a bare app until listed in MODULES)."""
    import typer
    from typer.testing import CliRunner

    from cxrdistill.commands import images as images_cmd

    root, df = tiny_pngs
    df.assign(split=["train"] * 30 + ["test"] * 10).to_parquet(tmp_path / "cohort.parquet")
    app = typer.Typer()
    images_cmd.register(app)
    r = CliRunner().invoke(app, ["images", "cache", "--cohort", str(tmp_path / "cohort.parquet"), "--images-root",
                                 str(root), "--out", str(tmp_path / "c"), "--size", "24", "--workers", "1",
                                 "--split", "train", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "30 images at 24×24 (resize), 0 skipped" in r.output
    assert len(ImageCache.open(tmp_path / "c")) == 30


def test_image_rows_index_the_cache_without_copying_it(tiny_pngs, tmp_path):
    """``ImageRows``: items are cache rows in any order; reads give the same pixels as fancy indexing of the
    array, a view narrows without reading, and a pickle carries row numbers and the cache's location only."""
    import pickle

    from cxrdistill.images.cache import ImageRows
    from cxrdistill.training.inputs import ImageBatches

    root, df = tiny_pngs
    cache = ImageCache.build(df, root, 32, tmp_path / "c", workers=1, progress=False)
    full = np.asarray(cache.array).copy()
    rows = np.array([39, 2, 17, 17, 0, 5])
    for base in (cache, cache.array, full):
        v = ImageRows(base, rows)
        assert len(v) == 6 and v.shape == (6, 32, 32) and v.dtype == np.uint8
        assert np.array_equal(v[3], full[17])
        assert np.array_equal(v[np.array([5, 0, 1])], full[[5, 39, 2]])
        assert np.array_equal(v[1:4], full[[2, 17, 17]])
        assert np.array_equal(np.asarray(v), full[rows])
        w = v.take(np.array([True, False, True, False, False, True]))
        assert np.array_equal(w.rows, [39, 17, 5]) and w.images is base
        assert np.array_equal(ImageRows(w, [2, 0]).rows, [5, 39])
        assert np.array_equal(ImageBatches(w, np.array([2, 1])).pixels([0, 1]),
                              ImageBatches(full, np.array([5, 17])).pixels([0, 1]))
    for base in (cache, cache.array):
        blob = pickle.dumps(ImageRows(base, rows))
        assert len(blob) < full.nbytes / 4
        back = pickle.loads(blob)
        assert np.array_equal(np.asarray(back), full[rows])
    assert isinstance(pickle.loads(pickle.dumps(ImageRows(cache.array, rows))).images, np.memmap)
    with pytest.raises(IndexError, match="out of range"):
        ImageRows(cache, [40])
