"""Fixtures of the fairness tests (helpers live in fairness_helpers.py)."""
import numpy as np
import pytest
from fairness_helpers import make_data


@pytest.fixture(scope="module")
def tiny():
    return make_data(160, 0), make_data(96, 1)


@pytest.fixture(scope="module")
def synth_files(tmp_path_factory):
    """A tiny synthetic cohort on disk (manifestation scenario, 32 px): PNG images and lung/heart masks, a cohort
    table with a patient-level split. Returns (cohort path, images root)."""
    import pandas as pd
    from PIL import Image

    from cxrdistill.synth import render_batch

    root = tmp_path_factory.mktemp("synth")
    imgs, meta, masks = render_batch(72, size=32, seed=3, scenario="manifestation", masks=True)
    meta = meta.copy()
    for i, p in enumerate(meta["path"]):
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(imgs[i]).save(root / p)
    for c, name in enumerate(("lung", "heart")):
        paths = [f"masks/{i}_{name}.png" for i in range(len(meta))]
        (root / "masks").mkdir(exist_ok=True)
        for i, p in enumerate(paths):
            Image.fromarray((masks[i, c] * 255).astype(np.uint8)).save(root / p)
        meta[f"synth_mask_{name}"] = paths
    pats = sorted(meta["patient_id"].unique())
    split = {p: ("train" if i % 4 < 2 else "val" if i % 4 == 2 else "test") for i, p in enumerate(pats)}
    meta["split"] = meta["patient_id"].map(split)
    cohort = root / "cohort.parquet"
    pd.DataFrame(meta).to_parquet(cohort)
    return cohort, root
