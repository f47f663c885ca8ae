"""Shared fixtures of the pretraining tests: a tiny synthetic cohort (in memory) and one pretrained checkpoint."""
from __future__ import annotations

import numpy as np
import pytest

from pretraining_helpers import BACKBONE, TINY_TRAIN


@pytest.fixture(scope="session")
def tiny_cohort():
    """96 synthetic 32-px radiographs, split 60 / 12 / 24 by row."""
    from cxrdistill.synth import render_batch

    images, df = render_batch(96, 32, seed=11)
    k = np.arange(len(df))
    df["split"] = np.where(k < 60, "train", np.where(k < 72, "val", "test"))
    return df, images


@pytest.fixture(scope="session")
def pretrained_ckpt(tiny_cohort, tmp_path_factory):
    """A backbone written by the supervised pretraining stage."""
    from cxrdistill.pretraining.pretrain import pretrain

    df, images = tiny_cohort
    out = tmp_path_factory.mktemp("pretrain") / "supervised.safetensors"
    pretrain({"method": "supervised", "backbone": BACKBONE, "train": TINY_TRAIN}, df, images, out)
    return out


@pytest.fixture(scope="session")
def timm_file(tmp_path_factory):
    """A tiny timm-named 'ImageNet' file: an RGB, 1000-class model's state dict with recognisable weights."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(123)
    m = timm.create_model(BACKBONE, pretrained=False, num_classes=1000, in_chans=3)
    sd = {k: (v if not v.is_floating_point() else torch.rand_like(v) + 0.5 if k.endswith("running_var")
              else 0.1 * torch.randn_like(v)) for k, v in m.state_dict().items()}
    path = tmp_path_factory.mktemp("imagenet") / f"{BACKBONE}.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path, sd
