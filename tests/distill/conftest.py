"""Fixtures of the distillation tests (helpers live in distill_helpers.py: conftest modules share one name)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from distill_helpers import SIZE, TASKS, make_images  # noqa: F401


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory):
    """(root dir, cohort path, images root, store path) — 120 train / 40 val / 60 test images."""
    from PIL import Image

    from cxrdistill.teachers.local import timm_teacher
    from cxrdistill.storage.store import EmbeddingStore

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
