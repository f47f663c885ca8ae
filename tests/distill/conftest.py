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


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory):
    """(root dir, cohort path, images root, store path) — 120 train / 40 val / 60 test images."""
    from PIL import Image

    from cxrdistill.teachers.local import timm_teacher
    from cxrdistill.teachers.store import EmbeddingStore

    root = tmp_path_factory.mktemp("distill")
    imgs, y = make_images(220, seed=0)
    (root / "images").mkdir()
    rows = []
    splits = ["train"] * 120 + ["val"] * 40 + ["test"] * 60
    for i in range(len(imgs)):
        p = f"p{i // 2:04d}/img{i:04d}.png"
        (root / "images" / p).parent.mkdir(exist_ok=True)
        Image.fromarray(imgs[i]).save(root / "images" / p)
        rows.append({"image_id": f"img{i:04d}", "patient_id": f"p{i // 2:04d}", "path": p, "view": "PA",
                     "frontal": True, "sex": "F" if i % 3 else "M", "age": 40.0 + i % 30, "race": "White",
                     "split": splits[i], "study_id": f"s{i // 2:04d}",
                     # observed labels: one uncertain and one blank, to exercise the policies
                     "cardiomegaly": -1.0 if i == 5 else float(y[i, 0]),
                     "pleural_effusion": np.nan if i == 7 else float(y[i, 1]),
                     "true_cardiomegaly": float(y[i, 0]), "true_pleural_effusion": float(y[i, 1])})
    df = pd.DataFrame(rows)
    cohort = root / "cohort.parquet"
    df.to_parquet(cohort, index=False)
    teacher = timm_teacher("resnet10t", image_size=SIZE)
    store = EmbeddingStore.create(root / "teacher_store", teacher.info.embedding_shape, "float32",
                                  teacher.info.to_dict())
    store.append(df["image_id"].tolist(), teacher.embed(imgs))
    return {"root": root, "cohort": cohort, "images": root / "images", "store": root / "teacher_store",
            "cache": root / "cache", "df": df, "y": y}
