"""Checkpoints that load safely: safetensors for weights, ``torch.load(weights_only=True)`` for trainer state.

A crafted pickle (code execution on load) is refused with a clear error rather than executed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cxrdistill.errors import InputError
from cxrdistill.storage.io import atomic_path


def save_state(state: dict[str, Any], path: str | Path) -> None:
    """Save a trainer state dict (tensors, numbers, strings, nested dicts/lists) atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | Path) -> dict[str, Any]:
    """Load a trainer state saved by :func:`save_state`; refuses anything that is not plain tensors and containers."""
    import pickle

    import torch

    path = Path(path)
    if not path.exists():
        raise InputError("checkpoint not found", path=path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as e:
        # torch's first line advises weights_only=False (i.e. running the code); show the line naming the culprit
        lines = [s.strip() for s in str(e).splitlines() if s.strip()] or [type(e).__name__]
        first = next((s for s in lines if "GLOBAL" in s), lines[0])[:200]
        raise InputError(f"refused to load checkpoint: not a safe weights-only file ({first})", path=path,
                         hint="use a .safetensors file or a checkpoint written by cxrdistill") from None


def save_weights(state_dict: dict[str, Any], path: str | Path, metadata: dict[str, Any] | None = None) -> None:
    """Model weights as safetensors, with JSON-able metadata (architecture, embedding shape, …) in the header."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_weights(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load (state_dict, metadata) from .safetensors, or from .pt/.pth/.bin with weights_only=True (never a pickle)."""
    path = Path(path)
    if not path.exists():
        raise InputError("weights file not found", path=path, hint="give a local .safetensors or .pth file")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = {k: _maybe_json(v) for k, v in (f.metadata() or {}).items()}
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise InputError(f"not a readable safetensors file ({str(e).splitlines()[0][:160]})", path=path) from None
        return sd, meta
    obj = load_state(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise InputError("weights file does not hold a state dict", path=path)
    return obj, {}


def _maybe_json(v: str) -> Any:
    try:
        return json.loads(v)
    except (TypeError, ValueError):
        return v
