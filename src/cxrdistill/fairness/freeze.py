"""Freezing parts of a model by name (``none``, ``backbone``, ``all`` or parameter-name prefixes), with frozen
BatchNorm layers keeping their running statistics."""
from __future__ import annotations

import torch

from cxrdistill.errors import CxrError


def classifier_prefix(model: torch.nn.Module) -> str:
    """Parameter-name prefix of the final classifier: ``head.`` (CxrNet) or the last Linear/Conv module."""
    head = getattr(model, "head", None)
    if isinstance(head, torch.nn.Module):
        return "head."
    last = None
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv1d)) and name:
            last = name
    if last is None:
        raise CxrError(f"cannot find the classifier layer of {type(model).__name__}; give parameter prefixes "
                       "to freeze instead of 'backbone'")
    return last + "."


def freeze(model: torch.nn.Module, spec: str | list[str] | None) -> list[str]:
    """Freeze parameters by spec: ``none``; ``backbone`` (everything but the final classifier); ``all``; or
    parameter-name prefixes (list or comma-separated). BatchNorm layers whose parameters are all frozen also keep
    their running statistics (momentum 0). Returns the frozen parameter names."""
    if spec is None or spec == "none" or spec == []:
        return []
    params = list(model.named_parameters())
    if spec == "all":
        frozen = [n for n, _ in params]
    elif spec == "backbone":  # one pass over the names (a prefix per name would be quadratic in the model size)
        keep = classifier_prefix(model)
        frozen = [n for n, _ in params if not n.startswith(keep)]
    else:
        prefixes = tuple(p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec) if p.strip())
        frozen = [n for n, _ in params if n.startswith(prefixes)]
    names = set(frozen)
    for n, p in params:
        if n in names:
            p.requires_grad_(False)
    if spec not in ("all", "backbone") and not frozen:
        raise CxrError(f"freeze spec {spec!r} matches no parameter; names look like "
                       f"{', '.join(n for n, _ in params[:4])}")
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            ps = list(m.parameters(recurse=False))
            if ps and not any(p.requires_grad for p in ps):
                m.momentum = 0.0  # running = (1 − 0)·running: statistics stay those of the frozen model
    return frozen
