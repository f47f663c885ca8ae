"""The teacher interface (images in, embeddings out) and the local teachers behind it.

A teacher is anything with ``.info`` and ``.embed(uint8 (B, H, W)) -> (B, *shape)``: a model in this process
(``torch:CHECKPOINT``, ``timm:NAME[:WEIGHTS]``) or, through :mod:`cxrdistill.teachers.client`, a server reachable
only as an API. :func:`resolve_teacher` turns a spec string into a local teacher via the :data:`TEACHERS` registry.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from cxrdistill.errors import CxrError, InputError
from cxrdistill.images.preprocess import MEAN, STD, preprocess
from cxrdistill.models.device import resolve_device
from cxrdistill.registry import Registry

TEACHERS: Registry = Registry("teacher kind")


@dataclass(frozen=True)
class TeacherInfo:
    """What a client may know about a teacher: never its weights."""

    name: str
    version: str
    embedding_shape: tuple[int, ...]
    dtype: str = "float32"
    image_size: int = 224
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["embedding_shape"] = list(self.embedding_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TeacherInfo":
        try:
            return cls(name=str(d["name"]), version=str(d["version"]),
                       embedding_shape=tuple(int(s) for s in d["embedding_shape"]), dtype=str(d.get("dtype", "float32")),
                       image_size=int(d.get("image_size", 224)), extra=dict(d.get("extra") or {}))
        except (KeyError, TypeError, ValueError) as e:
            raise CxrError(f"teacher info is malformed ({type(e).__name__}: {e}); expected name, version, "
                           "embedding_shape, dtype, image_size") from None


@runtime_checkable
class Teacher(Protocol):
    """Images in, embeddings out. ``embed`` takes uint8 (B, H, W) grayscale, any H×W (resized to ``image_size``)."""

    info: TeacherInfo

    def embed(self, images: np.ndarray) -> np.ndarray: ...


class TorchTeacher:
    """A torch module whose output (or its ``embedding`` entry) is the embedding; evaluated without gradients.

    Pixels become ``(u8 / 255 - mean) / std`` at ``image_size`` (resized with the images module when they differ).
    ``chunk`` bounds the forward batch, so a large request never needs more memory than ``chunk`` images.
    """

    def __init__(self, model, info: TeacherInfo, mean: float = MEAN, std: float = STD,
                 chunk: int = 64, device: str = "cpu"):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.info = info
        self.mean, self.std = float(mean), float(std)
        self.chunk = int(chunk)

    def _prepare(self, images: np.ndarray) -> np.ndarray:
        a = np.asarray(images)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3 or a.dtype != np.uint8:
            raise InputError(f"teacher input must be uint8 (B, H, W), got {a.dtype} {a.shape}")
        s = self.info.image_size
        if a.shape[1:] != (s, s):
            a = np.stack([preprocess(im, s, "resize") for im in a]) if len(a) else np.zeros((0, s, s), np.uint8)
        return a

    def embed(self, images: np.ndarray) -> np.ndarray:
        import torch

        a = self._prepare(images)
        out = np.empty((len(a), *self.info.embedding_shape), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, len(a), self.chunk):
                x = torch.from_numpy(a[s:s + self.chunk]).to(self.device).float().div_(255.0)
                x = x.sub_(self.mean).div_(self.std).unsqueeze(1)
                y = self.model(x)
                if isinstance(y, dict):
                    y = y["embedding"]
                out[s:s + len(x)] = y.float().cpu().numpy().reshape(len(x), *self.info.embedding_shape)
        return out.astype(self.info.dtype, copy=False)


def _probe_shape(model, image_size: int, device: str = "cpu") -> tuple[int, ...]:
    """The embedding shape of one blank image, computed on ``device`` (where the teacher will run)."""
    import torch

    dev = resolve_device(device)
    with torch.inference_mode():
        y = model.to(dev).eval()(torch.zeros(1, 1, image_size, image_size, device=dev))
    if isinstance(y, dict):
        y = y["embedding"]
    return tuple(int(s) for s in y.shape[1:])


def file_digest(path: str | Path, n: int = 12) -> str:
    """First ``n`` hex digits of the file's SHA-256: a version string that changes whenever the weights change."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n]


@TEACHERS.register("torch")
def torch_teacher(arg: str, *, image_size: int | None = None, device: str = "cpu", chunk: int = 64) -> TorchTeacher:
    """``torch:CHECKPOINT`` — a CxrNet saved with ``models.network.save_model`` (e.g. by ``teacher pretrain``).

    Its ``embedding`` output is the embedding; image size and normalisation come from the checkpoint's ``teacher``
    metadata when present (``image_size`` overrides it).
    """
    from cxrdistill.models.network import load_model

    path = Path(arg)
    if not arg:
        raise InputError("torch: teacher needs a checkpoint path", hint="e.g. --teacher torch:teacher.safetensors")
    if not path.exists():
        raise InputError("teacher checkpoint not found", path=path, hint="train one with 'cxrdistill teacher pretrain'")
    model, meta = load_model(path)
    tmeta = meta.get("teacher") or {}
    size = int(image_size or tmeta.get("image_size") or 224)
    shape = _probe_shape(model, size, device)
    info = TeacherInfo(name=str(tmeta.get("name") or f"cxrnet-{model.config['backbone']}"),
                       version=str(tmeta.get("version") or file_digest(path)), embedding_shape=shape,
                       dtype="float32", image_size=size,
                       extra={k: tmeta[k] for k in ("tasks", "backbone", "scenario") if k in tmeta})
    return TorchTeacher(model, info, mean=float(tmeta.get("mean", MEAN)),
                        std=float(tmeta.get("std", STD)), chunk=chunk, device=device)


@TEACHERS.register("timm")
def timm_teacher(arg: str, *, image_size: int | None = None, device: str = "cpu", chunk: int = 64) -> TorchTeacher:
    """``timm:NAME[:WEIGHTS]`` — a timm backbone's pooled features. Without WEIGHTS it is randomly initialised
    (seeded, so reproducible): useful only to test the plumbing, its embeddings mean nothing."""
    import torch

    from cxrdistill.models.network import create_backbone

    name, _, weights = arg.partition(":")
    if not name:
        raise InputError("timm: teacher needs a model name", hint="e.g. --teacher timm:resnet18 or "
                                                                   "timm:densenet121:weights.safetensors")
    size = int(image_size or 224)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_backbone(name, in_chans=1, weights=weights or None)
    version = file_digest(weights) if weights else "random-init-seed0"
    info = TeacherInfo(name=f"timm-{name}", version=version, embedding_shape=_probe_shape(model, size, device),
                       dtype="float32", image_size=size, extra={"random_init": not weights})
    return TorchTeacher(model, info, chunk=chunk, device=device)


def token_from_env(var: str | None) -> str | None:
    """The bearer token held in environment variable ``var`` (None when ``var`` is None). Never on the command line."""
    import os

    if not var:
        return None
    tok = os.environ.get(var)
    if not tok:
        raise CxrError(f"environment variable {var} is not set or empty; export the API token in it")
    return tok


def is_remote(spec: str) -> bool:
    """A teacher reached as an API: ``http(s)://…`` (ours), ``vertex:URL`` or ``kserve:URL``."""
    return spec.startswith(("http://", "https://", "vertex:", "kserve:"))


def device_for(spec: str, device: str | None) -> str | None:
    """``device`` for the teacher ``spec``: it places a model run in this process; an API teacher runs wherever it is
    served, so asking for a device there (anything but ``auto``) is an error rather than silently ignored."""
    if is_remote(spec) and device not in (None, "auto"):
        raise InputError(f"--device {device} applies to a teacher run in this process (torch:, timm:); {spec} is "
                         "an API, which runs wherever it is served", hint="leave --device out")
    return device


def resolve_teacher(spec: str, **kwargs: Any) -> TorchTeacher:
    """A local teacher from ``KIND:ARG`` (``torch:ckpt.safetensors``, ``timm:resnet18[:w.safetensors]``).

    A bare existing file path is taken as ``torch:PATH``. Remote teachers (``http://…``) go through the client.
    """
    if is_remote(spec):
        raise CxrError(f"{spec} is a remote teacher; use cxrdistill.teachers.client.open_api")
    kind, sep, arg = spec.partition(":")
    if not sep:
        if Path(spec).exists():
            kind, arg = "torch", spec
        else:
            raise InputError(f"teacher spec {spec!r} is not KIND:ARG",
                             hint="use http://HOST:PORT, vertex:URL, kserve:URL or one of "
                                  f"{', '.join(f'{k}:…' for k in TEACHERS.names())}")
    return TEACHERS.get(kind)(arg, **kwargs)
