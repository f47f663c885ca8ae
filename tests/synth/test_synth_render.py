"""The images: masks align with the anatomy, findings appear where they should, CTR follows cardiomegaly."""
from __future__ import annotations

import numpy as np
import pytest

from cxrdistill import synth
from cxrdistill.synth import ctr_from_masks, render


def test_masks_align_with_the_image():
    images, meta, masks = synth.render_batch(16, size=64, seed=1, masks=True)
    for img, (lung, heart) in zip(images, masks):
        lung, heart = lung.astype(bool), heart.astype(bool)
        assert 0.15 < lung.mean() < 0.5 and 0.03 < heart.mean() < 0.2
        assert not (lung & heart).any()
        body = img > 40
        assert img[lung].mean() + 25 < img[heart].mean()  # lungs dark, heart bright
        assert img[lung].mean() < img[body & ~lung].mean()
    # the masks are the ones written by generate: CTR in the table equals the CTR of the masks
    assert np.allclose(meta["synth_ctr"], [ctr_from_masks(m[0], m[1]) for m in masks], atol=1e-4)


def test_ctr_above_half_exactly_in_cardiomegaly_pa():
    ctr_cm = [render(64, seed=s, index=s, findings=["cardiomegaly"], view=v).ctr
              for s in range(10) for v in ("PA", "AP")]
    ctr_pa = [render(64, seed=s, index=s).ctr for s in range(10)]
    assert min(ctr_cm) > 0.5
    assert max(ctr_pa) < 0.52 and np.mean(ctr_pa) < 0.47
    # AP magnifies the heart
    ctr_ap = [render(64, seed=s, index=s, view="AP").ctr for s in range(10)]
    assert np.mean(ctr_ap) > np.mean(ctr_pa) + 0.02


def _pair(finding, size=64, **kw):
    base = render(size, seed=7, index=3, **kw)
    with_f = render(size, seed=7, index=3, findings=[finding], **kw)
    return base, with_f, with_f.image.astype(float) - base.image.astype(float)


def test_effusion_brightens_the_lung_base():
    base, eff, diff = _pair("pleural_effusion")
    lung = base.lung
    rows = np.flatnonzero(lung.any(axis=1))
    lower = lung.copy()
    lower[: rows[0] + int(0.6 * (rows[-1] - rows[0]))] = False
    upper = lung & ~lower
    assert diff[lower].mean() > 8 and diff[lower].mean() > 4 * abs(diff[upper].mean())


def test_pneumothorax_darkens_the_periphery_and_removes_markings():
    base, ptx, diff = _pair("pneumothorax", size=96)
    assert diff[base.lung].min() < -15
    assert (diff[base.lung] < -5).mean() > 0.05


def test_each_finding_changes_the_image_and_devices_are_bright():
    for f in ("cardiomegaly", "edema", "consolidation", "lung_opacity", "lung_lesion", "atelectasis",
              "enlarged_cardiomediastinum", "pleural_other", "fracture", "support_devices"):
        _, _, diff = _pair(f)
        assert np.abs(diff).max() > 20, f
    _, dev, diff = _pair("support_devices", size=96)
    assert dev.devices and (diff > 40).sum() > 10


@pytest.mark.parametrize("variant", ["laminar"])
def test_manifestation_variant_is_subtler(variant):
    _, _, d_default = _pair("pleural_effusion")
    _, _, d_variant = _pair("pleural_effusion", variants={"pleural_effusion": variant})
    assert 0 < np.abs(d_variant).sum() < 0.6 * np.abs(d_default).sum()


def test_acquisition_shift_is_visible_and_markers_are_drawn():
    from cxrdistill.synth.sample import sample_cohort

    images, meta = synth.render_batch(60, size=64, seed=4, scenario="acquisition")
    site_b = meta["synth_site"].to_numpy() == "B"
    assert site_b.any() and (~site_b).any()
    # site B: lower contrast (smaller spread of lung vs mediastinum), and its marker in the top-right corner
    std = images.reshape(60, -1).std(axis=1)
    assert std[site_b].mean() < std[~site_b].mean() - 5
    tr = images[:, 1:12, -14:-1].reshape(60, -1).max(axis=1)
    tl = images[:, 1:12, 1:14].reshape(60, -1).max(axis=1)
    assert np.median(tr[site_b]) > np.median(tr[~site_b]) + 30
    assert np.median(tl[~site_b]) > np.median(tl[site_b]) + 30
    assert len(sample_cohort(60, 4, synth.load_scenario("acquisition"))) == 60


def test_resolution_independent_anatomy():
    small, big = render(64, seed=2, index=9), render(128, seed=2, index=9)
    assert abs(small.lung.mean() - big.lung.mean()) < 0.01
    assert abs(small.ctr - big.ctr) < 0.03
