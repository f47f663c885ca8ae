"""Radiopaque things drawn as 'metal': support devices (tubes, lines, pacemaker, ECG leads) in body coordinates,
and detector markers (site lead marker, shortcut marker) in image coordinates. Rasterised with PIL at 2× and
averaged down, which gives anti-aliased thin lines cheaply."""
from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from cxrdistill.synth.anatomy import Anatomy
from cxrdistill.synth.glyphs import text_bitmap

SS = 2  # supersampling factor


class Raster:
    def __init__(self, size: int, to_px: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]):
        self.size = size
        self.img = Image.new("L", (size * SS, size * SS), 0)
        self.draw = ImageDraw.Draw(self.img)
        self.to_px = to_px  # body (x, y) → pixel (col, row) at 1×
        self.used = False

    def _pts(self, xs: np.ndarray, ys: np.ndarray) -> list[tuple[float, float]]:
        c, r = self.to_px(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
        return list(zip(((c + 0.5) * SS).tolist(), ((r + 0.5) * SS).tolist()))

    def width(self, body_w: float) -> int:
        return max(1, int(round(body_w * self.size / 2 * SS)))

    def segments(self, segs: np.ndarray) -> None:
        """Straight segments, rows (x0, y0, x1, y1, width) in body units; sub-pixel widths are drawn fainter."""
        if len(segs) == 0:
            return
        arr = np.asarray(segs, dtype=np.float64)
        c0, r0 = self.to_px(arr[:, 0], arr[:, 1])
        c1, r1 = self.to_px(arr[:, 2], arr[:, 3])
        wpx = arr[:, 4] * self.size / 2 * SS
        width = np.maximum(1, np.round(wpx)).astype(int).tolist()
        val = (255 * np.minimum(1.0, wpx)).astype(int).tolist()
        pts = np.stack([(c0 + 0.5) * SS, (r0 + 0.5) * SS, (c1 + 0.5) * SS, (r1 + 0.5) * SS], axis=1).tolist()
        line = self.draw.line
        for p, v, w in zip(pts, val, width):
            line(p, fill=v, width=w)
        self.used = True

    def curve(self, pts: list[tuple[float, float]], w: float, value: int = 255) -> None:
        xs, ys = _spline(np.array(pts, dtype=np.float64))
        self.draw.line(self._pts(xs, ys), fill=value, width=self.width(w), joint="curve")
        self.used = True

    def box(self, x: float, y: float, hw: float, hh: float, value: int = 255) -> None:
        (c0, r0), (c1, r1) = self._pts(np.array([x - hw, x + hw]), np.array([y - hh, y + hh]))
        self.draw.rounded_rectangle([min(c0, c1), min(r0, r1), max(c0, c1), max(r0, r1)], radius=self.width(0.02),
                                    fill=value)
        self.used = True

    def ring(self, x: float, y: float, r: float, value: int = 255) -> None:
        (c, rr), = self._pts(np.array([x]), np.array([y]))
        R = r * self.size / 2 * SS
        self.draw.ellipse([c - R, rr - R, c + R, rr + R], outline=value, width=max(1, int(R / 3)))
        self.used = True

    # --- detector markers (image coordinates, in fractions of the image size)
    def corner_xy(self, corner: str, w: float, h: float, margin: float) -> tuple[float, float]:
        S = self.size * SS
        x = margin * S if "left" in corner else S - margin * S - w
        y = margin * S if "top" in corner else S - margin * S - h
        return x, y

    def text_marker(self, text: str, corner: str, shape: str, jitter: tuple[float, float]) -> None:
        S = self.size * SS
        bmp = text_bitmap(text) if text else np.zeros((7, 0), dtype=bool)
        cell = max(1, int(round(0.085 * S / 7)))
        h = 7 * cell
        w = bmp.shape[1] * cell
        pad = cell * 2 if shape != "none" else 0
        x, y = self.corner_xy(corner, w + 2 * pad, h + 2 * pad, 0.035 + jitter[0])
        y += jitter[1] * S
        if shape == "box":
            self.draw.rectangle([x, y, x + w + 2 * pad - 1, y + h + 2 * pad - 1], outline=255, width=cell)
        elif shape == "circle":
            self.draw.ellipse([x, y, x + w + 2 * pad - 1, y + h + 2 * pad - 1], outline=255, width=cell)
        if w:
            glyph = Image.fromarray((bmp * 255).astype(np.uint8)).resize((w, h), Image.NEAREST)
            self.img.paste(255, (int(x + pad), int(y + pad)), glyph)
        self.used = True

    def shape_marker(self, shape: str, corner: str, jitter: tuple[float, float]) -> None:
        S = self.size * SS
        d = 0.08 * S
        x, y = self.corner_xy(corner, d, d, 0.05 + jitter[0])
        y += jitter[1] * S
        if shape == "disc":
            self.draw.ellipse([x, y, x + d, y + d], fill=255)
        elif shape == "square":
            self.draw.rectangle([x, y, x + d, y + d], fill=255)
        else:
            self.draw.polygon([(x + d / 2, y), (x + d, y + d), (x, y + d)], fill=255)
        self.used = True

    def array(self) -> np.ndarray:
        a = np.asarray(self.img, dtype=np.float32).reshape(self.size, SS, self.size, SS).mean(axis=(1, 3))
        return a / 255.0


def _spline(p: np.ndarray, n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Catmull-Rom through the control points."""
    if len(p) < 3:
        return p[:, 0], p[:, 1]
    q = np.vstack([p[0], p, p[-1]])
    t = np.linspace(0, 1, n, endpoint=False)[:, None]
    segs = []
    for i in range(1, len(q) - 2):
        p0, p1, p2, p3 = q[i - 1], q[i], q[i + 1], q[i + 2]
        segs.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                           + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    segs.append(p[-1][None])
    out = np.vstack(segs)
    return out[:, 0], out[:, 1]


def draw_devices(mc: Raster, a: Anatomy, rng: np.random.Generator) -> list[str]:
    """Draw a random set of support devices (at least one); returns their names."""
    chosen = [name for name, p in (("ett", 0.45), ("ng", 0.35), ("cvc", 0.5), ("pacemaker", 0.22), ("ecg", 0.3))
              if rng.random() < p] or ["cvc"]
    carina = a.hilum_y - 0.22
    base_l = a.base_L - a.dome_L
    j = lambda s=0.01: float(rng.normal(0, s))  # noqa: E731
    v = lambda: int(255 * rng.uniform(0.3, 1.0))  # noqa: E731  (radiopacity varies by device and exposure)
    if "ett" in chosen:
        tip = carina - rng.uniform(0.05, 0.14)
        mc.curve([(0.01 + j(), -1.1), (j(0.005), -0.75), (j(0.004), tip)], 0.012, v())
    if "ng" in chosen:
        mc.curve([(0.03, -1.1), (0.02 + j(), -0.6), (0.04 + j(), -0.1), (0.08 + j(), base_l + 0.05),
                  (0.28 + j(0.03), base_l + 0.18), (0.36 + j(0.03), base_l + 0.12)], 0.007, v())
    if "cvc" in chosen:
        if rng.random() < 0.6:  # right internal jugular
            mc.curve([(-0.24 + j(), -1.05), (-0.14 + j(), -0.72), (-0.06 + j(), -0.45), (-0.055, -0.2 + j(0.03))],
                     0.006, v())
        else:  # left subclavian
            mc.curve([(0.62 + j(), -0.68), (0.3 + j(), -0.6), (0.08 + j(), -0.5), (-0.04, -0.38),
                      (-0.05, -0.18 + j(0.03))], 0.006, v())
    if "pacemaker" in chosen:
        gx, gy = 0.48 + j(0.03), -0.64 + j(0.02)
        mc.curve([(gx, gy), (0.25, -0.62), (0.0, -0.45), (-0.07, -0.2), (-0.05, 0.0), (0.1, 0.18),
                  (0.22 + j(0.02), 0.26)], 0.009)
        mc.curve([(gx, gy), (0.2, -0.55), (-0.04, -0.35), (-0.09, -0.12 + j(0.02))], 0.009)
        mc.box(gx, gy, 0.075, 0.055)
    if "ecg" in chosen:
        for _ in range(int(rng.integers(3, 6))):
            x, y = float(rng.uniform(-0.7, 0.7)), float(rng.uniform(-0.75, 0.35))
            mc.ring(x, y, 0.028)
            mc.curve([(x, y), (x + rng.uniform(-0.3, 0.3), y + rng.uniform(0.1, 0.3)),
                      (x + rng.uniform(-0.4, 0.4), 1.2)], 0.004, value=150)
    return chosen
