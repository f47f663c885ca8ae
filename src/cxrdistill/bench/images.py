"""Image benchmark: decode + resize throughput when building the cache (PNG with 1 and 2 worker processes, JPEG with
and without DCT-domain draft decoding), against reading the built cache (what every later epoch does)."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _radiograph_like(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth body-like field with rib-like stripes and noise: compresses like a real radiograph, not like noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    body = np.exp(-((xx - 0.5) ** 2 / 0.08 + (yy - 0.55) ** 2 / 0.15))
    lungs = np.exp(-((np.abs(xx - 0.5) - 0.18) ** 2 / 0.01 + (yy - 0.45) ** 2 / 0.05))
    ribs = 0.08 * np.sin(yy * 60 + 10 * np.abs(xx - 0.5)) * lungs
    img = 0.2 + 0.7 * body - 0.45 * lungs + ribs + rng.normal(0, 0.02, (size, size))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def run(quick: bool = False) -> list[dict]:
    import pandas as pd
    from PIL import Image

    from cxrdistill.images.cache import ImageCache

    n, src, dst = (40, 1024, 256) if quick else (100, 2048, 256)
    d = Path(tempfile.mkdtemp(prefix="cxrd-bench-images-"))
    try:
        rng = np.random.default_rng(0)
        base = [_radiograph_like(rng, src) for _ in range(4)]
        rows = []
        for k in range(n):
            a = np.roll(base[k % 4], k, axis=1)
            Image.fromarray(a).save(d / f"{k:04d}.png", compress_level=3)
            Image.fromarray(a).save(d / f"{k:04d}.jpg", quality=90)
            rows.append({"image_id": f"i{k:04d}", "path": f"{k:04d}.png", "jpg": f"{k:04d}.jpg"})
        df = pd.DataFrame(rows)
        res = {}
        for label, cohort, workers in (("png_w1", df, 1), ("png_w2", df, 2),
                                       ("jpg_w1", df.assign(path=df["jpg"]), 1)):
            t0 = time.perf_counter()
            ImageCache.build(cohort, d, dst, d / f"cache_{label}", workers=workers, progress=False)
            res[label] = n / (time.perf_counter() - t0)
        # JPEG without draft (full-resolution decode), for the gain of draft decoding
        from cxrdistill.images.decode import load_gray
        from cxrdistill.images.preprocess import preprocess

        t0 = time.perf_counter()
        for p in df["jpg"]:
            preprocess(load_gray(d / p), dst)
        res["jpg_nodraft"] = n / (time.perf_counter() - t0)
        cache = ImageCache.open(d / "cache_png_w1")
        t0 = time.perf_counter()
        reps = 20
        for _ in range(reps):
            for k in rng.permutation(n):
                np.asarray(cache.array[k], dtype=np.float32)
        res["cache_read"] = reps * n / (time.perf_counter() - t0)
        note = f"{n} images {src}² → {dst}²"
        return [
            {"name": "decode+resize PNG, 1 worker", "value": res["png_w1"], "unit": "img/s", "goal": "", "note": note},
            {"name": "decode+resize PNG, 2 workers", "value": res["png_w2"], "unit": "img/s",
             "goal": "", "note": f"speed-up ×{res['png_w2'] / res['png_w1']:.2f} (2 cores, incl. pool start-up)"},
            {"name": "decode+resize JPEG (draft), 1 worker", "value": res["jpg_w1"], "unit": "img/s", "goal": "",
             "note": f"×{res['jpg_w1'] / res['jpg_nodraft']:.1f} vs full-resolution JPEG decode "
                     f"({res['jpg_nodraft']:.0f} img/s)"},
            {"name": "later epochs: read from uint8 cache", "value": res["cache_read"], "unit": "img/s",
             "goal": "≫ decode", "note": f"×{res['cache_read'] / res['png_w1']:.0f} vs decoding PNGs (1 worker)"},
        ]
    finally:
        shutil.rmtree(d, ignore_errors=True)
