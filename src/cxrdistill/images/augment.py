"""Light radiograph augmentations, by name: small crops, rotations and exposure changes; no flips by default.

Horizontal flips are off by default because chest anatomy is lateralised (heart on the left, a right-sided
pneumothorax is not a left-sided one). Every op takes an explicit ``torch.Generator``, so that the dataset can make the
augmentation of item ``i`` in epoch ``e`` deterministic whatever the number of DataLoader workers (kill/resume gives
the same batches). Ops work on float tensors (1, H, W) in [0, 1], before normalisation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from cxrdistill.registry import Registry

AUGMENTS: Registry = Registry("augmentation")


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


class _RandomOp:
    """An op applied with probability ``p``: one draw from the generator decides (none when ``p`` ≥ 1, so the
    stream of the ops after it does not move); subclasses implement :meth:`apply`."""

    p: float

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.p < 1 and float(torch.rand((), generator=g)) >= self.p:
            return x
        return self.apply(x, g)

    def apply(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


@dataclass
class RandomResizedCrop(_RandomOp):
    """Crop a random box covering ``scale`` of the area with aspect in ``ratio``, resized back to the input size."""
    scale: tuple[float, float] = (0.85, 1.0)
    ratio: tuple[float, float] = (0.9, 1.1)
    p: float = 1.0

    def apply(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        _, H, W = x.shape
        area = H * W * _u(g, *self.scale)
        ar = math.exp(_u(g, math.log(self.ratio[0]), math.log(self.ratio[1])))
        w = int(round(min(W, math.sqrt(area * ar))))
        h = int(round(min(H, math.sqrt(area / ar))))
        top = int(torch.randint(0, H - h + 1, (), generator=g))
        left = int(torch.randint(0, W - w + 1, (), generator=g))
        return F.resized_crop(x, top, left, h, w, [H, W], antialias=True)


@dataclass
class Rotate(_RandomOp):
    """Rotate by a uniform angle in ±``degrees`` (patient positioning), black fill."""
    degrees: float = 7.0
    p: float = 1.0

    def apply(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        return F.rotate(x, _u(g, -self.degrees, self.degrees), interpolation=InterpolationMode.BILINEAR, fill=0.0)


@dataclass
class Exposure(_RandomOp):
    """Brightness (×), contrast (around the mean) and gamma changes, like exposure and processing differences."""
    brightness: float = 0.1
    contrast: float = 0.1
    gamma: tuple[float, float] = (0.85, 1.18)
    p: float = 1.0

    def apply(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        if self.brightness:
            x = F.adjust_brightness(x, _u(g, 1 - self.brightness, 1 + self.brightness))
        if self.contrast:
            x = F.adjust_contrast(x, _u(g, 1 - self.contrast, 1 + self.contrast))
        if self.gamma != (1.0, 1.0):
            x = F.adjust_gamma(x.clamp(0, 1), math.exp(_u(g, math.log(self.gamma[0]), math.log(self.gamma[1]))))
        return x


@dataclass
class GaussianNoise(_RandomOp):
    """Additive Gaussian noise with σ uniform in ``sigma`` (quantum noise at low dose)."""
    sigma: tuple[float, float] = (0.0, 0.02)
    p: float = 0.5

    def apply(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        s = _u(g, *self.sigma)
        return (x + s * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp(0, 1)


@dataclass
class GaussianBlur(_RandomOp):
    """Gaussian blur with σ uniform in ``sigma`` (pixels) — resolution / detector-sharpness differences; Barlow
    Twins (Zbontar et al. 2021) blurs its views too."""
    sigma: tuple[float, float] = (0.1, 1.0)
    p: float = 0.5

    def apply(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        s = _u(g, *self.sigma)
        k = max(3, 2 * int(math.ceil(2.5 * s)) + 1)
        return F.gaussian_blur(x, [k, k], [s, s])


@dataclass
class HorizontalFlip:
    """Mirror left-right with probability ``p`` (0 by default: anatomy is lateralised)."""
    p: float = 0.0

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.p > 0 and float(torch.rand((), generator=g)) < self.p:
            return torch.flip(x, dims=[-1])
        return x


@dataclass
class Compose:
    """Apply ops in order; the result is clamped to [0, 1]."""
    ops: list[Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = field(default_factory=list)

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        for op in self.ops:
            x = op(x, g)
        return x.clamp(0, 1)


@AUGMENTS.register("none")
def none(**_: Any) -> Compose:
    """No augmentation."""
    return Compose([])


@AUGMENTS.register("light")
def light(scale=(0.85, 1.0), ratio=(0.9, 1.1), degrees: float = 7.0, brightness: float = 0.1,
          contrast: float = 0.1, gamma=(0.85, 1.18), noise=(0.0, 0.02), noise_p: float = 0.5,
          hflip: float = 0.0) -> Compose:
    """The default for supervised and distillation training: small, anatomy-preserving changes."""
    return Compose([RandomResizedCrop(tuple(scale), tuple(ratio)), Rotate(degrees),
                    Exposure(brightness, contrast, tuple(gamma)),
                    GaussianNoise(tuple(noise), noise_p), HorizontalFlip(hflip)])


@AUGMENTS.register("ssl")
def ssl(scale=(0.6, 1.0), ratio=(0.8, 1.25), degrees: float = 10.0, brightness: float = 0.25,
        contrast: float = 0.25, gamma=(0.7, 1.4), noise=(0.0, 0.04), noise_p: float = 0.8,
        hflip: float = 0.0) -> Compose:
    """Stronger views for self-supervised pretraining (Barlow Twins, ``two_views=True``), still no flips."""
    return Compose([RandomResizedCrop(tuple(scale), tuple(ratio)), Rotate(degrees),
                    Exposure(brightness, contrast, tuple(gamma)), GaussianNoise(tuple(noise), noise_p),
                    HorizontalFlip(hflip)])


def build_augment(spec: Any) -> Callable | None:
    """``None`` / name / ``{"name": ..., **params}`` / a callable ``(x, generator) -> x`` → an augmentation."""
    if spec is None or spec is False:
        return None
    if callable(spec):
        return spec
    if isinstance(spec, str):
        return AUGMENTS.create(spec)
    if isinstance(spec, dict):
        spec = dict(spec)
        return AUGMENTS.create(spec.pop("name", "light"), **spec)
    raise TypeError(f"cannot build an augmentation from {type(spec).__name__}")


@AUGMENTS.register("barlow")
def barlow(scale=(0.5, 1.0), ratio=(0.8, 1.25), degrees: float = 10.0, brightness: float = 0.3,
           contrast: float = 0.3, gamma=(0.7, 1.4), blur=(0.1, 1.0), blur_p: float = 0.5, noise=(0.0, 0.04),
           noise_p: float = 0.5, hflip: float = 0.0) -> Compose:
    """Barlow Twins views for radiographs: the paper's crop / colour jitter / blur pipeline made grayscale (exposure
    and gamma instead of hue and saturation, no solarisation), quantum noise, small rotations, no flips by default."""
    return Compose([RandomResizedCrop(tuple(scale), tuple(ratio)), Rotate(degrees),
                    Exposure(brightness, contrast, tuple(gamma)), GaussianBlur(tuple(blur), blur_p),
                    GaussianNoise(tuple(noise), noise_p), HorizontalFlip(hflip)])
