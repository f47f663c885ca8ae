"""How each finding looks: a painter per finding (registry), with named manifestation variants.

A painter may ``prepare`` the anatomy before the shapes are built (cardiomegaly enlarges the heart, atelectasis
raises a hemidiaphragm) and then ``paint`` density onto the canvas (``add``) or suppress lung markings (``mark``).
``strength`` is the group's visibility factor (1 = default look).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

from cxrdistill.registry import Registry
from cxrdistill.synth.anatomy import Anatomy, Chest, heart_shape, lung_lateral, lung_shape, smoothstep
from cxrdistill.synth.bones import rib_center
from cxrdistill.synth.scenario import MANIFESTATIONS


@dataclass
class Canvas:
    ch: Chest
    add: np.ndarray  # extra density
    mark: np.ndarray  # multiplier of lung markings (0 = none, e.g. beyond a pneumothorax's pleural line)


@dataclass
class Painter:
    paint: Callable[[Canvas, np.random.Generator, float, str], None]
    prepare: Callable[[Anatomy, np.random.Generator, str], None] | None = None


PAINTERS: Registry[Painter] = Registry("finding painter")


def smooth_field(rng: np.random.Generator, n: int = 16, sigma: float = 1.5) -> np.ndarray:
    """A smooth random field on an n×n grid over body coordinates [-1.2, 1.2]², zero mean, unit std."""
    f = ndimage.gaussian_filter(rng.standard_normal((n, n)), sigma, mode="wrap")
    return ((f - f.mean()) / (f.std() + 1e-8)).astype(np.float32)


def image_field(rng: np.random.Generator, size: int, n: int = 16, sigma: float = 1.5) -> np.ndarray:
    """A smooth random field over the image (size×size), the same content at any size."""
    return ndimage.zoom(smooth_field(rng, n, sigma), size / n, order=1, mode="nearest", grid_mode=True)


def point_in_lung(a: Anatomy, rng: np.random.Generator, right: bool, y_range: tuple[float, float] = (0.0, 1.0),
                  margin: float = 0.04) -> tuple[float, float]:
    """A random point (x, y) inside one lung field, away from its edges and the heart."""
    base = a.base_R if right else a.base_L
    for _ in range(200):
        t = rng.uniform(*y_range)
        y = a.apex + t * (base - a.apex)
        s = rng.uniform(0.05, a.W)
        x = -s if right else s
        pts_s = np.array([s, s - margin, s + margin, s, s], dtype=np.float32)
        pts_y = np.array([y, y, y, y - margin, y + margin], dtype=np.float32)
        pts_x = -pts_s if right else pts_s
        inside = lung_shape(a, pts_s, pts_y, right)
        heart, _ = heart_shape(a, pts_x, pts_y)
        if inside.all() and not heart.any():
            return float(x), float(y)
    return (-0.4 if right else 0.4), float(a.apex + 0.5 * (base - a.apex))


def _side(rng: np.random.Generator, p_both: float = 0.3) -> list[bool]:
    r = rng.random()
    if r < p_both:
        return [True, False]
    return [bool(rng.random() < 0.5)]


def _one_side(ch: Chest, rng: np.random.Generator) -> tuple[bool, np.ndarray, float]:
    """One lung at random: whether it is the right one, its mirrored x (``ch.s``) and its diaphragm height."""
    right = bool(rng.random() < 0.5)
    return right, ch.s(right), ch.a.base_R if right else ch.a.base_L


def _blob(ch: Chest, cx: float, cy: float, r: float, rng: np.random.Generator, rough: float = 0.5,
          edge: float = 0.25) -> np.ndarray:
    """An irregular blob of radius ~r with an ill-defined margin (``edge`` ~ 0.3 fairly sharp, ~1 very soft)."""
    dx, dy = ch.x - cx, ch.y - cy
    k = np.arange(1, 6)
    amp = rough * 0.25 * rng.standard_normal(5) / k ** 0.7
    ph = rng.uniform(0, 2 * np.pi, 5)
    d2 = (dx * dx + dy * dy) / (r * r)
    near = d2 < 9.0  # only evaluate the irregular margin where the blob is not negligible
    th = np.arctan2(dy[near], dx[near])
    rad = 1 + sum(amp[i] * np.sin(k[i] * th + ph[i]) for i in range(5))
    out = np.zeros_like(d2)
    out[near] = np.exp(-((d2[near] / (rad * rad)) ** (1.0 / edge)) * 0.7)
    return out


def _mottle(ch: Chest, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative texture in [0.6, 1.1] so that opacities look patchy rather than uniform."""
    return np.clip(0.85 + 0.18 * image_field(rng, ch.x.shape[0], 40, 0.9), 0.6, 1.1)


def _seg(ch: Chest, x0: float, y0: float, x1: float, y1: float, half: float) -> np.ndarray:
    """Soft line segment of half-thickness ``half``."""
    dx, dy = x1 - x0, y1 - y0
    L2 = dx * dx + dy * dy + 1e-9
    t = np.clip(((ch.x - x0) * dx + (ch.y - y0) * dy) / L2, 0, 1)
    d = np.hypot(ch.x - (x0 + t * dx), ch.y - (y0 + t * dy))
    return smoothstep(half - d, max(ch.px * 0.7, half * 0.4))


# ------------------------------------------------------------------------------------------------------ painters
def _cm_prepare(a: Anatomy, rng: np.random.Generator, variant: str) -> None:
    a.ctr = float(rng.uniform(0.52, 0.55) if variant == "subtle" else rng.uniform(0.525, 0.64))
    a.heart_shift += float(rng.uniform(0.0, 0.03))  # mostly left-ventricular enlargement


PAINTERS.register("cardiomegaly")(Painter(paint=lambda cv, rng, k, v: None, prepare=_cm_prepare))


def _ecm_prepare(a: Anatomy, rng: np.random.Generator, variant: str) -> None:
    a.extra["ecm"] = float(rng.uniform(0.045, 0.08))
    a.knob *= 1.4


PAINTERS.register("enlarged_cardiomediastinum")(Painter(paint=lambda cv, rng, k, v: None, prepare=_ecm_prepare))


def _effusion(cv: Canvas, rng: np.random.Generator, k: float, variant: str) -> None:
    ch, a = cv.ch, cv.ch.a
    for right in _side(rng, 0.35):
        s = ch.s(right)
        base = a.base_R if right else a.base_L
        H = base - a.apex
        lung = ch.soft_lung(right)
        if variant == "laminar":  # a thin band along the lateral chest wall, no meniscus (subtle)
            t = (ch.y - a.apex) / H
            lat = lung_lateral(a, t)
            w = rng.uniform(0.035, 0.055)
            band = smoothstep(s - (lat - w), 0.015) * smoothstep(t - rng.uniform(0.35, 0.55), 0.1)
            haze = smoothstep(ch.y - (base - 0.06), 0.05)
            cv.add += k * lung * (0.30 * band + 0.12 * haze)
        else:  # basal opacity with a meniscus rising laterally; costophrenic angle blunted
            level = base - rng.uniform(0.03, 0.28) * H
            men = rng.uniform(0.10, 0.20)
            m = a.med_w
            top = level - men * np.clip((s - m) / (a.W - m), 0, 1) ** 2.5
            fluid = smoothstep(ch.y - top, 0.04) * (0.7 + 0.3 * smoothstep(ch.y - top - 0.1, 0.1))
            cv.add += k * rng.uniform(0.55, 1.0) * fluid * lung
            cv.mark *= 1 - 0.8 * fluid * lung


PAINTERS.register("pleural_effusion")(Painter(paint=_effusion))


def _pneumothorax(cv: Canvas, rng: np.random.Generator, k: float, variant: str) -> None:
    ch, a = cv.ch, cv.ch.a
    right, s, base = _one_side(ch, rng)
    frac = rng.uniform(0.06, 0.12) if variant == "subtle" else rng.uniform(0.08, 0.32)
    sh, yh = a.med_w, base - 0.05
    sc, yc = 1 - frac, 1 - 0.9 * frac
    lung = ch.soft_lung(right)
    soft = max(ch.px, 0.008)
    collapsed = lung_shape(a, sh + (s - sh) / sc, yh + (ch.y - yh) / yc, right, soft=soft)
    gap = lung * (1 - collapsed)
    line = 4 * collapsed * (1 - collapsed) * lung
    sev = rng.uniform(0.5, 1.0)
    lucency, edge = (0.08, 0.12) if variant == "subtle" else (0.24 * sev, 0.26 * sev)
    cv.mark *= 1 - gap
    cv.add += k * (edge * line - lucency * gap)


PAINTERS.register("pneumothorax")(Painter(paint=_pneumothorax))


def _consolidation(cv: Canvas, rng: np.random.Generator, k: float, variant: str) -> None:
    ch, a = cv.ch, cv.ch.a
    lungs = ch.soft_lungs()
    if variant == "diffuse":  # faint scattered patches in both lungs
        acc = np.zeros_like(ch.x)
        for _ in range(int(rng.integers(4, 8))):
            x, y = point_in_lung(a, rng, bool(rng.random() < 0.5))
            acc = np.maximum(acc, _blob(ch, x, y, rng.uniform(0.05, 0.09), rng, 0.6, 0.9))
        cv.add += k * 0.3 * acc * lungs * _mottle(ch, rng)
        return
    right = bool(rng.random() < 0.55)
    x, y = point_in_lung(a, rng, right, (0.3, 0.95), margin=0.06)
    blob = _blob(ch, x, y, rng.uniform(0.09, 0.2), rng, 0.6, 0.4) * _mottle(ch, rng) * rng.uniform(0.45, 1.0)
    lung = ch.soft_lung(right) * ~ch.heart
    # air bronchograms: thin dark branches inside the opacity
    th = np.arctan2(ch.y - a.hilum_y, ch.s(right) - 0.15)
    ang = np.interp(th, np.linspace(-np.pi, np.pi, 48), rng.standard_normal(48))
    bron = smoothstep(ang - 1.2, 0.25) * smoothstep(np.hypot(ch.x - x, ch.y - y) - 0.03, 0.02)
    cv.add += k * blob * lung * (0.85 - 0.25 * bron)
    cv.mark *= 1 - 0.5 * blob * lung


PAINTERS.register("consolidation")(Painter(paint=_consolidation))


def _opacity(cv: Canvas, rng: np.random.Generator, k: float, variant: str) -> None:
    ch, a = cv.ch, cv.ch.a
    acc = np.zeros_like(ch.x)
    for _ in range(int(rng.integers(2, 5))):
        right = bool(rng.random() < 0.5)
        x, y = point_in_lung(a, rng, right, (0.2, 0.95))
        acc = np.maximum(acc, _blob(ch, x, y, rng.uniform(0.08, 0.14), rng, 0.7, 0.8))
    lungs = ch.soft_lungs() * ~ch.heart
    sev = rng.uniform(0.5, 1.0)
    cv.add += k * (0.22 if variant == "faint" else 0.4 * sev) * acc * lungs * _mottle(ch, rng)


PAINTERS.register("lung_opacity")(Painter(paint=_opacity))


def _pneumonia(cv: Canvas, rng: np.random.Generator, k: float, variant: str) -> None:
    # pneumonia is drawn through its consolidation; without one, only a faint ill-defined patch
    if not variant == "no_consolidation":
        return
    ch, a = cv.ch, cv.ch.a
    right = bool(rng.random() < 0.5)
    x, y = point_in_lung(a, rng, right, (0.4, 0.95))
    cv.add += k * 0.2 * _blob(ch, x, y, rng.uniform(0.08, 0.12), rng, 0.7, 0.9) * ch.side(right)


PAINTERS.register("pneumonia")(Painter(paint=_pneumonia))


def _atel_prepare(a: Anatomy, rng: np.random.Generator, variant: str) -> None:
    right = bool(rng.random() < 0.5)
    a.extra["atel_right"] = right
    if variant != "faint":
        a.extra["dome_raise_R" if right else "dome_raise_L"] = float(rng.uniform(0.05, 0.11))


def _atelectasis(cv: Canvas, rng: np.random.Generator, k: float, variant: str) -> None:
    ch, a = cv.ch, cv.ch.a
    right = a.extra.get("atel_right", True)
    base = a.base_R if right else a.base_L
    y0 = base - a.extra.get("dome_raise_R" if right else "dome_raise_L", 0.0) - rng.uniform(0.2, 0.3)
    sx = rng.uniform(0.25, 0.45)
    L, tilt = rng.uniform(0.14, 0.22), rng.uniform(-0.25, 0.1)
    x0, x1 = sx - L / 2, sx + L / 2
    y1 = y0 + tilt * L
    if right:
        x0, x1 = -x0, -x1
    plate = _seg(ch, x0, y0, x1, y1, rng.uniform(0.015, 0.028))
    side = ch.soft_lung(right)
    cv.add += k * (0.35 if variant == "faint" else 0.8) * plate * side
    # basal crowding: a slight density increase above the raised dome
    cv.add += k * 0.12 * side * smoothstep(ch.y - (y0 + 0.05), 0.06)


PAINTERS.register("atelectasis")(Painter(paint=_atelectasis, prepare=_atel_prepare))


def _lesion(cv: Canvas, rng: np.random.Generator, k: float, variant: str) -> None:
    ch, a = cv.ch, cv.ch.a
    for _ in range(1 if rng.random() < 0.8 else 2):
        right = bool(rng.random() < 0.5)
        x, y = point_in_lung(a, rng, right, (0.1, 0.85))
        r = rng.uniform(0.025, 0.04) if variant == "faint" else rng.uniform(0.04, 0.08)
        th = np.arctan2(ch.y - y, ch.x - x)
        lob = 1 + 0.12 * np.sin(3 * th + rng.uniform(0, 6.3)) + 0.07 * np.sin(5 * th + rng.uniform(0, 6.3))
        d = np.hypot(ch.x - x, ch.y - y) / (r * lob)
        prof = np.sqrt(np.clip(1 - d * d, 0, 1)) * 0.6 + 0.4 * smoothstep(1 - d, 0.12)
        cv.add += k * (0.3 if variant == "faint" else 0.8) * prof


PAINTERS.register("lung_lesion")(Painter(paint=_lesion))


def _edema(cv: Canvas, rng: np.random.Generator, k: float, variant: str) -> None:
    ch, a = cv.ch, cv.ch.a
    lungs = ch.soft_lungs()
    hy = a.hilum_y + 0.05
    r2 = ((np.abs(ch.x) - 0.16) / 0.33) ** 2 + ((ch.y - hy) / 0.38) ** 2
    haze = np.exp(-r2)
    tex = image_field(rng, ch.x.shape[0], 40, 0.8)
    strength = 0.16 if variant == "interstitial" else 0.55 * rng.uniform(0.25, 1.0)
    cv.add += k * lungs * (strength * haze * (1 + 0.25 * tex) + 0.05 * np.clip(tex, 0, None))
    cv.mark *= 1 + 0.5 * haze * lungs  # engorged, indistinct vessels
    # Kerley B lines: short horizontal lines at the lateral lung bases
    for right in (True, False):
        base = a.base_R if right else a.base_L
        for _ in range(int(rng.integers(3, 7))):
            yy = base - rng.uniform(0.05, 0.25)
            s1 = a.W - rng.uniform(0.0, 0.02)
            s0 = s1 - rng.uniform(0.04, 0.07)
            x0, x1 = (-s0, -s1) if right else (s0, s1)
            cv.add += k * 0.28 * _seg(ch, x0, yy, x1, yy, 0.005) * lungs


PAINTERS.register("edema")(Painter(paint=_edema))


def _pleural_other(cv: Canvas, rng: np.random.Generator, k: float, variant: str) -> None:
    ch, a = cv.ch, cv.ch.a
    right, s, base = _one_side(ch, rng)
    t = (ch.y - a.apex) / (base - a.apex)
    lat = lung_lateral(a, t)
    t0 = rng.uniform(0.3, 0.7)
    along = smoothstep(0.12 - np.abs(t - t0), 0.04)
    band = smoothstep(s - (lat - rng.uniform(0.018, 0.03)), 0.008) * smoothstep(lat + 0.02 - s, 0.01)
    calcified = rng.random() < 0.4
    cv.add += k * (0.75 if calcified else 0.45) * band * along


PAINTERS.register("pleural_other")(Painter(paint=_pleural_other))


def _fracture(cv: Canvas, rng: np.random.Generator, k: float, variant: str) -> None:
    ch, a = cv.ch, cv.ch.a
    right = bool(rng.random() < 0.5)
    i = int(rng.integers(3, 8))
    s0 = float(rng.uniform(0.55, 0.9) * a.W)
    y0 = float(rib_center(a, np.array([s0]), i)[0])
    x0 = -s0 if right else s0
    # healing callus around the rib plus a lucent fracture line across it
    d2 = ((ch.x - x0) / 0.045) ** 2 + ((ch.y - y0) / 0.03) ** 2
    cv.add += k * 0.35 * a.bone * smoothstep(1 - d2, 0.4)
    cv.add -= k * 0.25 * _seg(ch, x0 - 0.004, y0 - 0.04, x0 + 0.004, y0 + 0.04, 0.006)


PAINTERS.register("fracture")(Painter(paint=_fracture))


def _devices(cv: Canvas, rng: np.random.Generator, k: float, variant: str) -> None:
    pass  # drawn as metal by devices.py (needs the image transform)


PAINTERS.register("support_devices")(Painter(paint=_devices))

assert set(MANIFESTATIONS) <= set(PAINTERS.names())
