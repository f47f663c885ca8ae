"""CxrDataset and augmentations: item contract, determinism, picklability for DataLoader workers."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from cxrdistill.images.augment import AUGMENTS, build_augment
from cxrdistill.images.cache import ImageCache
from cxrdistill.images.dataset import CxrDataset


def _arrays(n=6, s=32):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (n, s, s), dtype=np.uint8)
    return imgs


def test_item_contract_and_normalisation():
    imgs = _arrays()
    rows = np.array([4, 1, 2])
    y = np.array([[1, np.nan], [0, 1], [np.nan, 0]], np.float32)
    t = np.arange(3 * 5, dtype=np.float16).reshape(3, 5)
    ds = CxrDataset(imgs, rows, targets=y, groups=[0, 1, 1], teacher=t, mean=0.5, std=0.25)
    assert len(ds) == 3
    it = ds[0]
    assert set(it) == {"x", "y", "g", "t", "idx"}
    assert it["x"].dtype == torch.float32 and it["x"].shape == (1, 32, 32)
    expect = (imgs[4].astype(np.float32) / 255 - 0.5) / 0.25
    assert np.allclose(it["x"][0].numpy(), expect, atol=1e-6)
    assert it["y"].dtype == torch.float32 and torch.isnan(it["y"][1]) and it["y"][0] == 1
    assert it["g"].dtype == torch.int64 and it["g"].item() == 0
    assert it["t"].dtype == torch.float32 and it["t"].tolist() == [0, 1, 2, 3, 4]
    assert it["idx"].item() == 0 and ds[-1]["idx"].item() == 2
    only_x = CxrDataset(imgs)[5]
    assert set(only_x) == {"x", "idx"}
    tokens = CxrDataset(imgs, teacher=np.zeros((6, 4, 3)))[0]["t"]
    assert tokens.shape == (4, 3)
    with pytest.raises(ValueError, match="align it with rows"):
        CxrDataset(imgs, rows, targets=np.zeros((5, 2)))
    with pytest.raises(IndexError):
        CxrDataset(imgs, [0, 6])


def test_augment_deterministic_per_seed_epoch_item():
    imgs = _arrays()
    ds = CxrDataset(imgs, augment="light", seed=3)
    a, b = ds[2]["x"], ds[2]["x"]
    assert torch.equal(a, b)  # same (seed, epoch, item) → same pixels, whichever worker computes it
    ds.set_epoch(1)
    assert not torch.equal(ds[2]["x"], a)
    other = CxrDataset(imgs, augment="light", seed=4)
    assert not torch.equal(other[2]["x"], a)
    plain = CxrDataset(imgs)[2]["x"]
    assert a.shape == plain.shape and not torch.equal(a, plain)
    assert (a - plain).abs().mean() < 1.5  # light: same image, slightly changed


def test_two_views_and_registry():
    imgs = _arrays()
    assert set(AUGMENTS.names()) >= {"none", "light", "ssl"}
    ds = CxrDataset(imgs, augment="ssl", two_views=True)
    it = ds[1]
    assert it["x"].shape == it["x2"].shape == (1, 32, 32) and not torch.equal(it["x"], it["x2"])
    with pytest.raises(ValueError, match="needs an augmentation"):
        CxrDataset(imgs, two_views=True)
    neutral = {"name": "light", "degrees": 0.0, "scale": (1.0, 1.0), "ratio": (1.0, 1.0), "brightness": 0.0,
               "contrast": 0.0, "gamma": (1.0, 1.0), "noise_p": 0.0}
    aug = build_augment(neutral)
    x = torch.rand(1, 16, 16)
    for seed in range(5):
        assert torch.allclose(aug(x, torch.Generator().manual_seed(seed)), x, atol=1e-5)  # all ops neutral → identity
    flip = build_augment({**neutral, "hflip": 1.0})
    assert torch.allclose(flip(x, torch.Generator()), x.flip(-1), atol=1e-5)


def test_pickle_and_dataloader_workers(tiny_pngs, tmp_path):
    root, df = tiny_pngs
    cache = ImageCache.build(df, root, 16, tmp_path / "c", workers=1, progress=False)
    rows = cache.index_of(df.image_id[:10])
    ds = CxrDataset(cache, rows, targets=np.ones((10, 2)), augment="light")
    blob = pickle.dumps(ds)
    assert len(blob) < cache.array.nbytes  # the cache's pixels are reopened, not pickled
    ds2 = pickle.loads(blob)
    assert torch.equal(ds2[3]["x"], ds[3]["x"])
    mm = np.memmap(tmp_path / "c" / "images.u8", dtype=np.uint8, mode="r", shape=(40, 16, 16))
    ds3 = CxrDataset(mm, rows)
    assert len(pickle.dumps(ds3)) < 4000 and torch.equal(pickle.loads(pickle.dumps(ds3))[0]["x"], ds3[0]["x"])
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1, multiprocessing_context="spawn")
    batches = list(loader)
    assert [b["x"].shape[0] for b in batches] == [4, 4, 2]
    assert torch.equal(batches[0]["x"][3], ds[3]["x"])  # worker output = main-process output
