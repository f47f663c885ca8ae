"""Drop-in: a fair objective runs through the real ``cxrdistill distill`` stage (cohort on disk, embedding store,
image cache, run directory) by its training-method name, and the saved student needs only the image."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
from PIL import Image

import cxrdistill.fairkd  # noqa: F401  (registers fairkd_<name> in the training METHODS)
from cxrdistill.cli import main
from cxrdistill.models.network import load_model

from fairkd_helpers import make_images, teacher_embeddings


def test_distill_command_with_a_fair_objective(tmp_path):
    from cxrdistill.teachers.local import TeacherInfo
    from cxrdistill.storage.store import EmbeddingStore

    imgs, y, g = make_images(80, seed=4)
    t = teacher_embeddings(imgs)
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(len(imgs)):
        p = f"img{i:03d}.png"
        Image.fromarray(imgs[i]).save(tmp_path / "img" / p)
        rows.append({"image_id": f"i{i:03d}", "patient_id": f"p{i:03d}", "path": p, "view": "PA", "frontal": True,
                     "sex": "F" if g[i] else "M", "age": 50.0, "race": None, "split": "train" if i < 60 else "val",
                     "cardiomegaly": y[i, 0], "pleural_effusion": y[i, 1]})
    df = pd.DataFrame(rows)
    df.to_parquet(tmp_path / "cohort.parquet", index=False)
    info = TeacherInfo(name="toy", version="1", embedding_shape=(t.shape[1],), image_size=32)
    store = EmbeddingStore.create(tmp_path / "store", (t.shape[1],), "float32", info.to_dict())
    store.append(df["image_id"].tolist(), t)
    out = tmp_path / "run"
    main(["distill", "--cohort", str(tmp_path / "cohort.parquet"), "--images-root", str(tmp_path / "img"),
          "--embeddings", str(tmp_path / "store"), "--out", str(out), "--student", "lcnet_035", "--size", "32",
          "--epochs", "1", "--batch-size", "30", "--method", "fairkd_mmd", "--attribute", "sex",
          "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    summary = json.loads((out / "distill.json").read_text())
    assert summary["method"] == "fairkd_mmd" and summary["groups"] == ["F", "M"]
    st, meta = load_model(out / "student.safetensors")
    assert st.config["num_classes"] == 2 and st.config["head_on"] == "embedding"
    x = torch.from_numpy(imgs[:8]).unsqueeze(1).float().div(255).sub(0.5).div(0.25)
    with torch.no_grad():
        o = st.eval()(x)  # the image alone: no group, no teacher
    assert o["logits"].shape == (8, 2) and o["embedding"].shape == (8, t.shape[1])
    assert np.isfinite(o["logits"].numpy()).all()
