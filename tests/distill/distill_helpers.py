"""Tiny synthetic cohort for the distillation tests: 32 px PNGs with planted findings (a bright disc for
``cardiomegaly``, a bright lower band for ``pleural_effusion``), a random-init teacher run in-process through the real
teacher interface, and its embedding store."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

SIZE = 32
TASKS = ["cardiomegaly", "pleural_effusion"]


def make_images(n: int, seed: int, size: int = SIZE):
    """uint8 (n, size, size) images and their 0/1 labels (n, 2): each finding is a visible bright shape."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    y = (rng.random((n, 2)) < 0.4).astype(np.float32)
    imgs = rng.normal(80, 20, size=(n, size, size))
    for i in range(n):
        if y[i, 0]:
            cx, cy = rng.integers(10, 22, size=2)
            imgs[i][(xx - cx) ** 2 + (yy - cy) ** 2 < 30] += 110
        if y[i, 1]:
            imgs[i][int(size * 0.72):, :] += 90
    return np.clip(imgs, 0, 255).astype(np.uint8), y


