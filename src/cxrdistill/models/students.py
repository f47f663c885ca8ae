"""Students: any timm backbone by name (1-channel input, random init or a local weights file) with a projector to the
teacher's embedding shape, as a :class:`~cxrdistill.models.network.CxrNet`.

``STUDENTS`` holds named presets (sensible sizes for 2 CPU cores or a GPU); any other name is taken as a timm model
name, e.g. ``create_student("convnext_atto", (1376,))``. Token-shaped teachers (T, D) — e.g. ELIXR-B 32×768, or
ELIXR-C 8×8×1376 read as 64 tokens — are matched either on mean-pooled tokens (``token_mode="pool"``, default: the
student predicts one D-vector) or token by token (``"tokens"``: the projector outputs T·D values, reshaped to (T, D)
for the loss; costs a T·D-wide last layer).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from cxrdistill.errors import CxrError, InputError
from cxrdistill.models.network import CxrNet
from cxrdistill.registry import Registry
from cxrdistill.storage.checkpoint import load_weights

STUDENTS: Registry = Registry("student")

TOKEN_MODES = ("pool", "tokens")


@dataclass(frozen=True)
class StudentSpec:
    """A preset: the timm backbone, an optional projector hidden width, and what it is for."""

    backbone: str
    proj_hidden: int | None = None
    note: str = ""


def _preset(name: str, backbone: str, proj_hidden: int | None, note: str) -> None:
    STUDENTS.register(name)(lambda: StudentSpec(backbone, proj_hidden, note))


# CPU-friendly (the embedded demo, 2 cores, 64 px)
_preset("mobilenetv3_small_050", "mobilenetv3_small_050", None, "0.6 M params; the CPU default (fastest)")
_preset("resnet10t", "resnet10t", None, "4.9 M params; CPU, more capacity")
_preset("efficientnet_b0", "efficientnet_b0", None, "4.0 M params; CPU or GPU")
# GPU-sized (real CheXpert / MIMIC at 224–512 px)
_preset("densenet121", "densenet121", 1024, "7 M params; GPU")
_preset("densenet169", "densenet169", 1024, "12.5 M params; GPU; the student of the reference GPU study")
_preset("resnet50", "resnet50", 1024, "23.5 M params; GPU")
_preset("convnext_tiny", "convnext_tiny", 1024, "28 M params; GPU")


def student_spec(name: str) -> StudentSpec:
    """The preset called ``name``, or a plain timm backbone of that name."""
    return STUDENTS.create(name) if name in STUDENTS else StudentSpec(name)


def target_shape(teacher_shape: tuple[int, ...] | list[int], token_mode: str = "pool") -> tuple[int, ...]:
    """The shape the student predicts per image: (D,) for vectors or pooled tokens, (T, D) in token mode."""
    shape = tuple(int(s) for s in teacher_shape)
    if not shape or any(s < 1 for s in shape):
        raise CxrError(f"invalid teacher embedding shape {shape}")
    if token_mode not in TOKEN_MODES:
        raise CxrError(f"unknown token mode {token_mode!r}; choose one of {', '.join(TOKEN_MODES)}")
    if len(shape) == 1:
        return shape
    tokens = math.prod(shape[:-1])
    return (shape[-1],) if token_mode == "pool" else (tokens, shape[-1])


def prepare_targets(t, teacher_shape, token_mode: str = "pool"):
    """Teacher embeddings (N, *teacher_shape) → the student's targets (N, *target_shape) (numpy or torch)."""
    shape = tuple(int(s) for s in teacher_shape)
    n = t.shape[0]
    if tuple(t.shape[1:]) != shape:
        raise CxrError(f"teacher embeddings have shape {tuple(t.shape[1:])}, expected {shape}")
    if len(shape) == 1:
        return t
    t = t.reshape(n, math.prod(shape[:-1]), shape[-1])
    return t.mean(1) if token_mode == "pool" else t


def create_student(name: str, teacher_shape, *, weights: str | Path | None = None, proj_hidden: int | None = None,
                   token_mode: str = "pool", in_chans: int = 1, backbone_kwargs: dict | None = None):
    """A :class:`CxrNet` whose ``embedding`` output has the size of the teacher's (pooled or flattened) embedding."""
    spec = student_spec(name)
    tshape = target_shape(teacher_shape, token_mode)
    return CxrNet(spec.backbone, in_chans=in_chans, embed_dim=math.prod(tshape),
                  proj_hidden=proj_hidden if proj_hidden is not None else spec.proj_hidden,
                  weights=str(weights) if weights else None, backbone_kwargs=backbone_kwargs)


def load_for_finetune(path: str | Path, num_classes: int, head_on: str | None = None,
                      tasks: list[str] | None = None):
    """A saved :class:`CxrNet` (student, teacher or fine-tuned model) with a ``num_classes`` head.

    The saved head is kept only when it was trained for exactly ``tasks`` (same names, same order, read from the
    file's ``finetune``/``teacher`` metadata); otherwise the head starts fresh. ``head_on`` defaults to
    ``"embedding"`` when the model has a projector (a distilled student: the head reads the teacher-like embedding),
    else ``"features"``. Returns (model, metadata).
    """
    sd, meta = load_weights(path)
    if "cxrnet" not in meta:
        raise InputError("no cxrdistill model metadata in this file", path=path,
                         hint="fine-tune from a checkpoint written by cxrdistill, or use --init imagenet:FILE "
                              "with --backbone NAME for timm-named backbone weights")
    cfg = dict(meta["cxrnet"])
    cfg["num_classes"] = int(num_classes)
    cfg["head_on"] = head_on or ("embedding" if cfg.get("embed_dim") else "features")
    model = CxrNet(**cfg)
    own = model.state_dict()
    saved_tasks = next((m.get("tasks") for m in (meta.get("finetune"), meta.get("teacher")) if isinstance(m, dict)
                        and m.get("tasks")), None)
    same_head = (tasks is not None and saved_tasks == list(tasks)
                 and meta["cxrnet"].get("head_on", "features") == cfg["head_on"])
    keep = {k: v for k, v in sd.items()
            if not (k.startswith("head.") and (not same_head or k not in own or own[k].shape != v.shape))}
    missing, unexpected = model.load_state_dict(keep, strict=False)
    bad = [m for m in missing if not m.startswith("head.")]
    if unexpected or bad:
        raise InputError(f"weights do not fit the saved architecture (missing {bad[:3]}, unexpected "
                         f"{unexpected[:3]})", path=path)
    return model, meta
