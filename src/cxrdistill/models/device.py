"""The torch device a ``--device`` value names, checked once where a command starts.

``auto`` is this process's GPU when torch sees one and the CPU otherwise; ``cpu``, ``cuda``, ``cuda:N`` and ``mps``
are taken as given, after checking that the machine has them, so that a missing GPU is one clear error naming the
option rather than a CUDA traceback from deep inside a model.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from cxrdistill.errors import InputError

if TYPE_CHECKING:
    import torch

DEVICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(device: str | torch.device | None = "auto", *, local_rank: int = 0) -> torch.device:
    """``auto`` (or None) → ``cuda:local_rank`` when CUDA is available, else ``cpu``; any other name → that device,
    or an :class:`~cxrdistill.errors.InputError` when this machine does not have it.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    import torch  # here, so that importing this module (e.g. for a remote teacher) does not load torch

    if isinstance(device, torch.device):
        spec = str(device)
    else:
        spec = str(device or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise InputError(f"--device {device!r} is not a device", hint=f"use {DEVICES}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {spec}: torch sees no CUDA GPU on this machine",
                             hint="use --device cpu, or auto (a GPU only when there is one)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                             f"numbered from 0", hint="use --device cuda, or cuda:N with a smaller N")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {spec}: torch sees no Apple GPU (MPS) on this machine",
                         hint="use --device cpu or auto")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"--device {spec} is not supported", hint=f"use {DEVICES}")
    return dev
