"""Bones of a frontal chest radiograph: posterior and anterior ribs, clavicles, spine, scapulae, humeral heads.

All ribs of a side are drawn at once: the posterior ribs are one curve shifted by a constant gap, so the distance to
the nearest rib is a phase computation rather than a loop over ribs.
"""
from __future__ import annotations

import numpy as np

from cxrdistill.synth.anatomy import Anatomy, Chest, smoothstep

N_RIBS = 11


def _post_shape(a: Anatomy, s: np.ndarray) -> np.ndarray:
    """Posterior rib centerline offset: rises slightly from the spine, then curves down at the lateral wall."""
    u = np.clip(s / a.W, 0, 1.2)
    return -0.10 * u + a.extra.get("rib_curve", 0.40) * u ** 3


def rib_center(a: Anatomy, s: np.ndarray, i: int) -> np.ndarray:
    return a.apex - 0.05 + a.rib_phase * a.rib_gap + i * a.rib_gap + _post_shape(a, s)


def _band(d: np.ndarray, w: float, edge: float) -> np.ndarray:
    """Rib cross-section: a band of half-width w with brighter cortical margins."""
    inside = smoothstep(w - d, edge)
    return inside * (0.7 + 0.3 * (d / w) ** 2)


def ribs(ch: Chest) -> np.ndarray:
    a, y = ch.a, ch.y
    edge = max(ch.px * 0.6, 0.004)
    out = np.zeros_like(y)
    for right in (True, False):
        s = ch.s(right)
        side = smoothstep(s - 0.04, 0.01) * smoothstep(a.W + 0.06 - s, 0.02)
        y0 = a.apex - 0.05 + a.rib_phase * a.rib_gap
        # posterior ribs
        f = _post_shape(a, s)
        phi = (y - f - y0) / a.rib_gap
        idx = np.clip(np.round(phi), 0, N_RIBS - 1)
        off = np.asarray(a.extra.get("rib_offsets", np.zeros(N_RIBS)), dtype=np.float32)
        phi = phi - off[idx.astype(np.int64)] / a.rib_gap
        idx = np.clip(np.round(phi), 0, N_RIBS - 1)
        u = np.clip(s / a.W, 0, 1.2)
        slope = np.sqrt(1 + ((-0.10 + 3 * a.extra.get("rib_curve", 0.40) * u ** 2) / a.W) ** 2)
        d = np.abs(phi - idx) * a.rib_gap / slope
        valid = (phi > -0.5) & (phi < N_RIBS - 0.5)
        out += side * valid * _band(d, a.rib_w, edge)
        # anterior ribs: from the lateral wall obliquely down towards the sternum, fainter and broader
        fw = _post_shape(a, np.float32(a.W))
        g = fw + 0.42 * (1 - s / a.W) + 0.02
        phi = (y - g - y0) / a.rib_gap
        idx = np.clip(np.round(phi), 0, N_RIBS - 3)
        d = np.abs(phi - idx) * a.rib_gap / 1.08
        valid = (phi > -0.5) & (phi < N_RIBS - 2.5)
        ant = smoothstep(s - 0.3 * a.W, 0.06) * smoothstep(a.W + 0.02 - s, 0.02)
        out += 0.15 * ant * valid * smoothstep(a.rib_w * 1.25 - d, edge * 2)
    return out


def clavicles(ch: Chest) -> np.ndarray:
    a, y = ch.a, ch.y
    out = np.zeros_like(y)
    edge = max(ch.px * 0.6, 0.004)
    for right in (True, False):
        s = ch.s(right)
        L = 0.62
        u = np.clip((s - 0.05) / L, 0, 1)
        yc = a.clav_y + a.clav_slope * u + 0.025 * np.sin(2 * np.pi * u)
        w = 0.024 + 0.008 * (1 - u) + 0.008 * u ** 4
        d = np.abs(y - yc)
        along = smoothstep(s - 0.05, 0.012) * smoothstep(0.05 + L - s, 0.02)
        out += along * _band(d, w, edge)
    return out


def spine(ch: Chest) -> np.ndarray:
    x, y = ch.x, ch.y
    period = 0.088
    ph = (y + 0.01) / period
    frac = ph - np.floor(ph)
    body = smoothstep(0.052 - np.abs(x), 0.008)
    discs = 0.72 + 0.28 * smoothstep(0.42 - np.abs(frac - 0.5), 0.06)
    ped = np.exp(-(((np.abs(x) - 0.042) / 0.012) ** 2 + ((frac - 0.3) / 0.13) ** 2))
    spinous = np.exp(-((x / 0.010) ** 2 + ((frac - 0.75) / 0.18) ** 2))
    return body * discs * 0.8 + 0.35 * ped + 0.25 * spinous


def scapulae(ch: Chest) -> np.ndarray:
    a, y = ch.a, ch.y
    out = np.zeros_like(y)
    for right in (True, False):
        s = ch.s(right)
        border = a.W * (1.08 - 0.4 * a.scapula) + 0.12 * (y + 0.7)
        vert = smoothstep(y + 0.82, 0.03) * smoothstep(-0.12 - y, 0.08)
        out += smoothstep(s - border, 0.012) * vert * smoothstep(a.body_w + 0.05 - s, 0.03)
    return out


def humeri(ch: Chest) -> np.ndarray:
    a, y = ch.a, ch.y
    out = np.zeros_like(y)
    for right in (True, False):
        s = ch.s(right)
        cx, cy, r = a.body_w + 0.16, -0.80, 0.17
        d = np.hypot(s - cx, y - cy) / r
        head = np.sqrt(np.clip(1 - d * d, 0, 1)) * 0.7 + 0.3 * smoothstep(1 - d, 0.1)
        out += head
    return out
