"""Export a cxrdistill model (student, teacher or fine-tuned CxrNet) to ONNX and check that onnxruntime gives the
same outputs as torch. The ONNX graph takes ``image`` float32 (batch, 1, H, W), normalised as in training
((u8/255 − 0.5)/0.25), and returns ``embedding`` (and ``probabilities`` = σ(logits) when the model has a head)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrdistill.errors import CxrError, InputError
from cxrdistill.images.preprocess import MEAN, STD
from cxrdistill.storage.io import atomic_path


def _wrapper(model, with_head: bool):
    import torch

    class OnnxOutputs(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image):
            out = self.m(image)
            if with_head:
                return out["embedding"], torch.sigmoid(out["logits"])
            return out["embedding"]

    return OnnxOutputs(model).eval()


def export_onnx(checkpoint: str | Path, out: str | Path, size: int | None = None, opset: int = 17,
                check: bool = True, atol: float = 1e-4, rtol: float = 1e-3, n_check: int = 4,
                seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Write ``out`` (atomically) and, with ``check``, compare onnxruntime with torch on ``n_check`` random images
    (and a batch of a different size, to test the dynamic batch axis). Raises ``CxrError`` when they differ by more
    than ``atol + rtol·|torch|``. Torch traces and checks on ``device``. Returns a report (sizes, max differences)."""
    import torch

    from cxrdistill.models.device import resolve_device
    from cxrdistill.models.network import load_model

    dev = resolve_device(device)
    model, meta = load_model(checkpoint)
    model = model.to(dev).eval()
    size = int(size or _size_from_meta(meta) or 224)
    with_head = model.head is not None
    wrapped = _wrapper(model, with_head)
    names = ["embedding", "probabilities"] if with_head else ["embedding"]
    example = torch.zeros(2, 1, size, size, device=dev)
    out = Path(out)
    import warnings

    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(wrapped, (example,), str(tmp), dynamo=False, input_names=["image"], output_names=names,
                          dynamic_axes={"image": {0: "batch"}, **{n: {0: "batch"} for n in names}},
                          opset_version=int(opset))
        report: dict[str, Any] = {"onnx": str(out), "image_size": size, "outputs": names, "opset": int(opset),
                                  "device": str(dev)}
        if check:
            report.update(check_onnx(tmp, wrapped, size, atol=atol, rtol=rtol, n=n_check, seed=seed))
    return report


def check_onnx(onnx_path, wrapped, size: int, atol: float = 1e-4, rtol: float = 1e-3, n: int = 4,
               seed: int = 0) -> dict[str, Any]:
    """Max |onnxruntime − torch| per output on random inputs of two batch sizes; raises when out of tolerance."""
    import numpy as np
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    dev = next(wrapped.parameters(), torch.empty(0)).device  # torch runs where the model is
    rng = np.random.default_rng(seed)
    worst: dict[str, float] = {}
    for b in (n, 1):
        x = rng.normal(size=(b, 1, size, size)).astype(np.float32)
        got = sess.run(None, {"image": x})
        with torch.inference_mode():
            ref = wrapped(torch.from_numpy(x).to(dev))
        ref = ref if isinstance(ref, tuple) else (ref,)
        for name, g, r in zip([o.name for o in sess.get_outputs()], got, ref):
            r = r.float().cpu().numpy()
            if g.shape != r.shape:
                raise CxrError(f"ONNX output {name} has shape {g.shape}, torch gives {r.shape}")
            excess = np.abs(g - r) - (atol + rtol * np.abs(r))
            worst[name] = max(worst.get(name, 0.0), float(np.abs(g - r).max()))
            if (excess > 0).any():
                raise CxrError(f"ONNX export differs from torch: max |Δ{name}| = {np.abs(g - r).max():.3g} "
                               f"(tolerance {atol} + {rtol}·|y|); try another --opset")
    return {"checked": True, "max_abs_diff": worst, "atol": atol, "rtol": rtol}


def _size_from_meta(meta: dict) -> int | None:
    for key in ("student", "teacher", "finetune"):
        v = meta.get(key)
        if isinstance(v, dict) and v.get("image_size"):
            return int(v["image_size"])
    return None


def onnx_embed(onnx_path, images_u8, mean: float = MEAN, std: float = STD):
    """Run an exported model on uint8 images (N, H, W): returns the ONNX outputs (embedding[, probabilities])."""
    import numpy as np
    import onnxruntime as ort

    p = Path(onnx_path)
    if not p.exists():
        raise InputError("ONNX file not found", path=p)
    sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    x = ((np.asarray(images_u8, dtype=np.float32) / 255.0 - mean) / std)[:, None]
    return sess.run(None, {"image": x})
