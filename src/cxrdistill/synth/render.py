"""Render one synthetic frontal chest radiograph (and its lung/heart masks) from an ``ImageSpec``.

Pipeline: anatomy (per-patient stream) → per-image positioning, inspiration and view (AP magnifies the heart,
projects the clavicles higher and the scapulae over the lungs) → findings prepare the anatomy → shapes on the grid →
density layers → ``1 - exp(-k·density)`` → exposure, contrast, processing, blur and noise → uint8.
Every random draw comes from ``SeedSequence([seed, stream, index])``, so an image never depends on which worker
renders it or on the other images.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from cxrdistill.synth import bones
from cxrdistill.synth.anatomy import F32, build_chest, sample_anatomy, smoothstep
from cxrdistill.synth.devices import Raster, draw_devices
from cxrdistill.synth.findings import PAINTERS, Canvas, image_field
from cxrdistill.synth.scenario import FINDINGS, MANIFESTATIONS

PATIENT_STREAM, IMAGE_STREAM, FINDING_STREAM = 1, 2, 3
K_ATTEN = 1.0  # density → brightness: 1 - exp(-K·D)


@dataclass
class ImageSpec:
    """Everything that decides one image. Built from a cohort row by ``spec_from_row``."""

    seed: int = 0
    index: int = 0
    patient_index: int = 0
    sex: str = "Male"
    age: float = 60.0
    race: str = "White"
    view: str = "PA"
    findings: tuple[str, ...] = ()
    variants: dict[str, str] = field(default_factory=dict)
    visibility: dict[str, float] = field(default_factory=dict)
    contrast: float = 1.0
    noise: float = 0.025
    brightness: float = 0.0
    blur: float = 0.0
    habitus: float = 1.0
    marker: str = ""
    marker_corner: str = "top_left"
    marker_shape: str = "none"
    shortcut: tuple[str, str] | None = None  # (shape, corner)
    demographics: float = 1.0  # how visible sex, race and age are in the anatomy (0 = barely)


@dataclass
class Rendered:
    image: np.ndarray  # uint8 (S, S)
    lung: np.ndarray  # bool (S, S): both lung fields, heart excluded
    heart: np.ndarray  # bool (S, S)
    ctr: float  # cardiothoracic ratio measured on the masks
    devices: list[str]


def _rng(seed: int, stream: int, *idx: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream, *map(int, idx)]))


def ctr_from_masks(lung: np.ndarray, heart: np.ndarray) -> float:
    """Cardiothoracic ratio: widest horizontal heart extent / widest extent of the lung fields."""
    hc = np.flatnonzero(heart.any(axis=0))
    lc = np.flatnonzero(lung.any(axis=0))
    if hc.size == 0 or lc.size == 0:
        return float("nan")
    return float((hc[-1] - hc[0] + 1) / (lc[-1] - lc[0] + 1))


def _vessel_tree(a, rng: np.random.Generator, depth: int = 4) -> np.ndarray:
    """Pulmonary vessels as a random binary tree per lung, from the hilum towards the periphery.

    Returns segments (x0, y0, x1, y1, width) in body units; built level by level with array operations."""
    trunks = np.array([-1.15, -0.55, 0.0, 0.55, 1.0, 1.35])
    sign = np.repeat([-1.0, 1.0], trunks.size)
    th = np.tile(trunks, 2) + rng.normal(0, 0.12, 2 * trunks.size)
    x = sign * 0.15
    y = a.hilum_y + 0.1 * np.tile(trunks, 2)
    L = rng.uniform(0.12, 0.18, th.size)
    w = np.full(th.size, 0.02)
    segs = []
    for d in range(depth + 1):
        x1, y1 = x + sign * L * np.cos(th), y + L * np.sin(th)
        segs.append(np.stack([x, y, x1, y1, w], axis=1))
        if d == depth:
            break
        k = th.size
        turn = np.concatenate([-1 * rng.uniform(0.2, 0.5, k), rng.uniform(0.2, 0.5, k)]) + rng.normal(0, 0.08, 2 * k)
        th = np.tile(th, 2) + turn
        x, y, sign = np.tile(x1, 2), np.tile(y1, 2), np.tile(sign, 2)
        L = np.tile(L, 2) * rng.uniform(0.62, 0.82, 2 * k)
        w = np.tile(w, 2) * 0.72
    return np.concatenate(segs)


def render_spec(spec: ImageSpec, size: int) -> Rendered:
    """Render the image and masks described by ``spec`` at ``size``×``size`` pixels."""
    S = int(size)
    rng_p = _rng(spec.seed, PATIENT_STREAM, spec.patient_index)
    rng_i = _rng(spec.seed, IMAGE_STREAM, spec.index)
    a = sample_anatomy(rng_p, spec.sex, spec.age, spec.race, spec.habitus, spec.demographics)
    ap = spec.view == "AP"
    insp = float(rng_i.normal(0, 0.025)) - (0.06 if ap else 0.0)
    a.base_R += insp
    a.base_L += insp
    if ap:
        a.scapula = float(rng_i.uniform(0.75, 1.0))
        a.clav_y -= float(rng_i.uniform(0.05, 0.09))
        a.clav_slope *= 0.3
        a.extra["rib_curve"] = 0.17
    else:
        a.scapula = float(rng_i.uniform(0.1, 0.35))
    findings = [f for f in FINDINGS if f in spec.findings]
    rngs = {f: _rng(spec.seed, FINDING_STREAM, spec.index, FINDINGS.index(f)) for f in findings}
    variants = {f: spec.variants.get(f, MANIFESTATIONS[f][0] if f in MANIFESTATIONS else "") for f in findings}
    if "pneumonia" in findings and "consolidation" not in findings:
        variants["pneumonia"] = "no_consolidation"
    for f in findings:
        p = PAINTERS.get(f)
        if p.prepare is not None:
            p.prepare(a, rngs[f], variants[f])
    if ap:  # AP projection magnifies the heart (it is farther from the detector)
        a.ctr *= float(rng_i.uniform(1.08, 1.16))

    # ---- positioning: shift, rotation, scale
    rot = float(rng_i.normal(0, 0.05 if ap else 0.03))
    sc = float(rng_i.normal(1.0, 0.035)) * (1.03 if ap else 1.0)
    tx, ty = float(rng_i.normal(0, 0.03)), float(rng_i.normal(0.0, 0.03))
    c, s_ = np.cos(rot), np.sin(rot)
    g = ((np.arange(S, dtype=F32) + 0.5) * (2.0 / S) - 1.0)
    U, V = np.meshgrid(g - tx, g - ty)
    X = ((c * U + s_ * V) / sc).astype(F32)
    Y = ((-s_ * U + c * V) / sc).astype(F32)
    px = 2.0 / S / sc

    def to_px(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = tx + sc * (c * x - s_ * y)
        v = ty + sc * (s_ * x + c * y)
        return (u + 1) * S / 2 - 0.5, (v + 1) * S / 2 - 0.5

    ch = build_chest(a, X, Y, px)
    sig = max(0.5, 0.006 / px)
    lung_soft = ndimage.gaussian_filter((ch.lung_R | ch.lung_L).astype(F32), sig)
    heart_soft = ndimage.gaussian_filter(ch.heart.astype(F32), sig)
    x, y = ch.x, ch.y

    # ---- density layers (roughly: soft tissue ~0.5-0.8, mediastinum/heart +0.7, lungs -0.45, bone +0.1-0.3)
    bw = a.body_w * (0.93 + 0.07 * np.clip((y + 0.6) / 0.9, 0, 1))
    prof = np.sqrt(np.clip(1 - (x / (bw + 0.02)) ** 2, 0, 1))
    D = a.soft * (0.25 + 0.75 * prof) * ch.torso
    for right in (True, False):  # arms and shoulders (deltoid around the humeral head) at the image edges
        s = ch.s(right)
        ca = a.body_w + 0.17 + 0.06 * (y + 0.8)
        arm = np.sqrt(np.clip(1 - ((s - ca) / 0.12) ** 2, 0, 1)) * smoothstep(y + 0.9, 0.06)
        cap = np.sqrt(np.clip(1 - ((s - a.body_w - 0.12) / 0.24) ** 2 - ((y + 0.8) / 0.16) ** 2, 0, 1))
        D += 0.6 * a.soft * np.maximum(arm, cap) * (1 - ch.torso)
    if a.breast > 0:
        for sx in (-1, 1):
            cx, cy = sx * 0.58 * a.W / 0.7, a.breast_y
            r2 = ((x - cx) / (a.breast * 1.3)) ** 2 + ((y - cy) / a.breast) ** 2
            D += a.breast_density * np.clip(1 - r2, 0, 1) ** 0.3 * smoothstep(y - (cy - 0.5 * a.breast), 0.14)
    else:
        D += a.pectoral * ch.torso * smoothstep(-0.3 - y, 0.2) * smoothstep(np.abs(x) - 0.3, 0.1)  # pectorals
    above = 1 - ch.below_dome
    central = np.maximum(ch.med * above * smoothstep(y + 0.95, 0.1), heart_soft * (0.72 + 0.28 * ch.heart_prof))
    gas = image_field(rng_i, S, 32, 1.2)
    abd = ch.below_dome * np.sqrt(prof) * (1.0 - 0.12 * smoothstep(y - 0.7, 0.2))
    abd *= 1 - 0.12 * np.clip(gas, 0, None) * smoothstep(x - 0.1, 0.1) * smoothstep(y - 0.5, 0.1)
    central = np.maximum(central, 0.9 * abd)
    D += 0.58 * central * ch.torso
    carina = a.hilum_y - 0.22
    trachea = smoothstep(0.026 - np.abs(x - 0.005), 0.01) * smoothstep(carina - y, 0.03)
    D -= 0.22 * trachea
    bub = ((x - 0.3) / 0.10) ** 2 + ((y - (a.base_L - a.dome_L + 0.08)) / 0.05) ** 2
    D -= 0.3 * smoothstep(1 - bub + 0.4 * gas, 0.4) * ch.below_dome
    tl = np.zeros_like(x)
    for right in (True, False):
        s = ch.s(right)
        tl += np.sqrt(np.clip(1 - ((s - 0.45) / 0.42) ** 2, 0, 1)) * ch.side(right)
    tl = ndimage.gaussian_filter(tl, sig)
    grad = 1 - 0.12 * np.clip((y - a.apex) / (a.base_R - a.apex), 0, 1) ** 2  # bases overlap more soft tissue
    D -= (0.34 + 0.12 * a.soft) * lung_soft * (0.6 + 0.4 * tl) * grad
    D += a.bone * (0.10 * bones.ribs(ch) + 0.24 * bones.clavicles(ch) + 0.16 * bones.spine(ch) * ch.torso
                   + 0.06 * bones.scapulae(ch) + 0.3 * bones.humeri(ch))
    cv = Canvas(ch=ch, add=np.zeros_like(x), mark=np.ones_like(x))
    for f in findings:
        PAINTERS.get(f).paint(cv, rngs[f], float(spec.visibility.get(f, 1.0)), variants[f])
    vt = Raster(S, to_px)
    vt.segments(_vessel_tree(a, rng_i))
    vessels = ndimage.gaussian_filter(vt.array(), max(0.5, 0.007 / px))
    hila = np.exp(-(((np.abs(x) - 0.15) / 0.04) ** 2 + ((y - a.hilum_y) / 0.08) ** 2))
    D += (0.16 * vessels + 0.12 * hila) * lung_soft * cv.mark
    D += 0.025 * image_field(rng_i, S, 48, 1.0) * ch.torso
    D += 0.6 * cv.add

    mc = Raster(S, to_px)
    devices = draw_devices(mc, a, rngs["support_devices"]) if "support_devices" in findings else []
    jit = (float(rng_i.uniform(0, 0.015)), float(rng_i.uniform(-0.01, 0.01)))
    if spec.marker or spec.marker_shape != "none":
        mc.text_marker(spec.marker, spec.marker_corner, spec.marker_shape, jit)
    if spec.shortcut is not None:
        mc.shape_marker(spec.shortcut[0], spec.shortcut[1], jit)
    if mc.used:
        D += 2.0 * mc.array()

    # ---- image formation and processing
    img = 1 - np.exp(-K_ATTEN * np.maximum(D, 0))
    lo, hi = float(rng_i.normal(0.02, 0.02)), float(rng_i.normal(0.88, 0.03))
    img = (img - lo) / (hi - lo)
    if ap:  # portable exposure: flatter, brighter lungs
        img = 0.06 + 0.9 * img
    img = 0.5 + spec.contrast * (img - 0.5) + spec.brightness
    img = np.clip(img, 0, 1) ** float(np.exp(rng_i.normal(0, 0.08)))
    k = S / 128.0
    img = img + 0.45 * (img - ndimage.gaussian_filter(img, 2.0 * k))  # unsharp masking, as CXR processing does
    if spec.blur > 0:
        img = ndimage.gaussian_filter(img, spec.blur * k)
    noise = rng_i.standard_normal((S, S)).astype(F32)
    img = img + spec.noise * (0.6 + 0.6 * np.sqrt(np.clip(img, 0, 1))) * noise
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    lung = ch.lung_R | ch.lung_L
    return Rendered(image=out, lung=lung, heart=ch.heart, ctr=ctr_from_masks(lung, ch.heart), devices=devices)


def render(size: int = 128, seed: int = 0, *, index: int = 0, sex: str = "Male", age: float = 60, race: str = "White",
           view: str = "PA", findings: tuple[str, ...] | list[str] = (), variants: dict[str, str] | None = None,
           contrast: float = 1.0, noise: float = 0.025, habitus: float = 1.0, marker: str = "R",
           demographics: float = 1.0) -> Rendered:
    """Render one image directly (for tests, figures and experiments), without a cohort or scenario."""
    bad = [f for f in findings if f not in FINDINGS]
    if bad:
        raise ValueError(f"unknown finding {bad[0]!r}")
    spec = ImageSpec(seed=seed, index=index, patient_index=index, sex=sex, age=age, race=race, view=view,
                     findings=tuple(findings), variants=dict(variants or {}), contrast=contrast, noise=noise,
                     habitus=habitus, marker=marker, demographics=demographics)
    return render_spec(spec, size)
