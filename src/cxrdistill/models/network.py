"""CxrNet: any timm backbone (1-channel input) with an optional embedding projector and classification head.

One class serves the teacher "foundation model", every student and every fine-tuned classifier, so that a
checkpoint saved by one stage (safetensors + constructor metadata) can start any other.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cxrdistill.errors import CxrError, InputError
from cxrdistill.storage.checkpoint import load_weights, save_weights


def create_backbone(name: str, in_chans: int = 1, weights: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """A timm model by name, pooled features only (``num_classes=0``), random init or a local weights file.

    Never downloads: ``pretrained`` is always False; ImageNet or in-domain weights come from ``weights``.
    """
    import timm

    try:
        m = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
    except RuntimeError as e:  # timm raises RuntimeError for unknown names
        raise CxrError(f"unknown backbone {name!r} ({e}); any timm model name works, e.g. resnet18, "
                       f"densenet121, efficientnet_b0, mobilenetv3_small_100") from None
    if weights:
        load_backbone_weights(m, weights, in_chans=in_chans)
    return m


def load_backbone_weights(model: nn.Module, path: str | Path, in_chans: int = 1, min_match: float = 0.5) -> dict:
    """Load timm-named weights into ``model`` (classifier keys dropped; RGB stem summed to grayscale as timm's
    ``adapt_input_conv`` does). Errors when fewer than ``min_match`` of the model's tensors are found."""
    from timm.models import adapt_input_conv

    sd, _ = load_weights(path)
    sd = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in sd.items()}
    own = model.state_dict()
    matched = {}
    for k, v in sd.items():
        if k not in own:
            continue
        if v.ndim == 4 and own[k].ndim == 4 and v.shape[1] != own[k].shape[1] and v.shape[0] == own[k].shape[0]:
            v = adapt_input_conv(in_chans, v)
        if v.shape == own[k].shape:
            matched[k] = v
    frac = len(matched) / max(1, len(own))
    if frac < min_match:
        raise InputError(f"only {len(matched)} of {len(own)} tensors match this backbone "
                         f"({type(model).__name__})", path=path,
                         hint="the file must hold timm-named weights for the same architecture")
    model.load_state_dict(matched, strict=False)
    return {"matched": len(matched), "total": len(own)}


class CxrNet(nn.Module):
    """Backbone → features; optional projector → ``embedding`` (teacher-shaped); optional head → ``logits``."""

    def __init__(self, backbone: str = "resnet18", in_chans: int = 1, embed_dim: int | None = None,
                 num_classes: int = 0, proj_hidden: int | None = None, head_on: str = "features",
                 weights: str | None = None, backbone_kwargs: dict | None = None):
        super().__init__()
        self.config = dict(backbone=backbone, in_chans=in_chans, embed_dim=embed_dim, num_classes=num_classes,
                           proj_hidden=proj_hidden, head_on=head_on, backbone_kwargs=backbone_kwargs or {})
        self.backbone = create_backbone(backbone, in_chans=in_chans, weights=weights, **(backbone_kwargs or {}))
        # timm models with a head hidden layer (mobilenetv3, lcnet, ghostnet…) output ``head_hidden_size`` features
        # when num_classes=0, not ``num_features`` (the pre-head width)
        nf = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.num_features = nf
        self.projector: nn.Module | None = None
        if embed_dim:
            self.projector = (nn.Linear(nf, embed_dim) if not proj_hidden else
                              nn.Sequential(nn.Linear(nf, proj_hidden), nn.GELU(), nn.Linear(proj_hidden, embed_dim)))
        head_in = embed_dim if (head_on == "embedding" and embed_dim) else nf
        self.head = nn.Linear(head_in, num_classes) if num_classes else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.backbone(x)
        out = {"features": feats}
        emb = self.projector(feats) if self.projector is not None else feats
        out["embedding"] = emb
        if self.head is not None:
            out["logits"] = self.head(emb if self.config["head_on"] == "embedding" and self.projector is not None
                                      else feats)
        return out


def save_model(model: CxrNet, path: str | Path, **extra_meta: Any) -> None:
    """Weights as safetensors with the constructor arguments, so :func:`load_model` rebuilds the same network."""
    save_weights(model.state_dict(), path, {"cxrnet": model.config, **extra_meta})


def load_model(path: str | Path, **overrides: Any) -> tuple[CxrNet, dict]:
    """Rebuild a :class:`CxrNet` saved by :func:`save_model`; returns (model, metadata)."""
    sd, meta = load_weights(path)
    if "cxrnet" not in meta:
        raise InputError("no cxrdistill model metadata in this file", path=path,
                         hint="use a checkpoint written by cxrdistill, or a backbone weights file via --weights")
    cfg = {**meta["cxrnet"], **overrides}
    model = CxrNet(**cfg)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected or [m for m in missing if not m.startswith(("head.", "projector."))]:
        raise InputError(f"weights do not fit the saved architecture (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]})", path=path)
    return model, meta


def count_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))
