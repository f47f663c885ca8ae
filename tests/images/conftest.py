"""Fixtures for the images tests."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def tiny_pngs(tmp_path):
    """A cohort of 40 small grayscale PNGs (varied sizes) and its table."""
    import pandas as pd
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    rows = []
    for k in range(40):
        h, w = 40 + (k % 7) * 6, 48 + (k % 5) * 5
        a = (rng.random((h, w)) * 255).astype(np.uint8)
        rel = f"p{k // 4}/img{k:03d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(root / rel)
        rows.append({"image_id": f"id{k:03d}", "path": rel})
    return root, pd.DataFrame(rows)
