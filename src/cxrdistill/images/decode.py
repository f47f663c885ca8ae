"""Decode PNG, JPEG and DICOM radiographs to a 2-D uint8 grayscale array, refusing bad files with a clear error.

Every failure a user can cause (missing, empty, truncated, non-image, decompression bomb, unsupported DICOM) is an
``InputError`` that names the file and says what to do. No torch here: this runs in cache-building worker processes.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

from cxrdistill.errors import InputError

# Largest image accepted (pixels). Chest radiographs are ≤ ~4.3k × 4.3k (≈ 18 Mpx); 64 Mpx leaves room for
# PadChest/odd scanners while refusing decompression bombs before a single pixel is decoded.
DEFAULT_MAX_PIXELS = 64_000_000
_MAX_PIXELS_ENV = "CXRDISTILL_MAX_PIXELS"

DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}


def max_pixels() -> int:
    """The pixel limit: ``$CXRDISTILL_MAX_PIXELS`` if set, else ``DEFAULT_MAX_PIXELS``."""
    v = os.environ.get(_MAX_PIXELS_ENV)
    if v:
        try:
            return int(float(v))
        except ValueError:
            raise InputError(f"{_MAX_PIXELS_ENV}={v!r} is not a number", hint="set it to a pixel count, e.g. 64000000")
    return DEFAULT_MAX_PIXELS


def is_dicom(path: str | os.PathLike) -> bool:
    """DICOM by extension or by the ``DICM`` magic at byte 128 (Part 10 files)."""
    p = Path(path)
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def load_gray(path: str | os.PathLike, *, limit: int | None = None, draft: int | None = None) -> np.ndarray:
    """Read an image file as a 2-D ``uint8`` array (grayscale; 16-bit and float data are min/max-scaled).

    ``limit``: maximum pixel count (default :func:`max_pixels`). ``draft``: for JPEG only, let libjpeg decode at a
    reduced scale whose short side stays ≥ ``draft`` pixels (much faster when the image is resized afterwards).
    """
    p = Path(path)
    limit = max_pixels() if limit is None else int(limit)
    if not p.exists():
        raise InputError("image file not found", path=p, hint="check --images-root and the cohort's path column")
    if p.is_dir():
        raise InputError("is a directory, not an image file", path=p, hint="check the cohort's path column")
    try:
        size = p.stat().st_size
    except OSError as e:
        raise InputError(f"cannot be read ({e.strerror})", path=p, hint="check file permissions") from None
    if size == 0:
        raise InputError("image file is empty (0 bytes)", path=p, hint="re-copy or re-download this file, or drop it")
    if is_dicom(p):
        return _load_dicom(p, limit)
    return _load_pil(p, limit, draft)


# ----------------------------------------------------------------------------------------------------------- PIL
def _load_pil(p: Path, limit: int, draft: int | None) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # We do our own (stricter) pixel check below; PIL's own warning/error fires only at 1×/2× its limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(p)
    except Image.DecompressionBombError as e:
        raise _bomb(e, p, limit) from None
    except UnidentifiedImageError:
        raise InputError("is not a readable image (not PNG, JPEG, TIFF or DICOM)", path=p,
                         hint="convert it to PNG/JPEG/DICOM or remove it from the cohort") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot be opened as an image ({_short(e)})", path=p,
                         hint="the file is probably corrupt: re-copy it or drop it") from None
    with im:
        w, h = im.size
        if w * h > limit:
            raise InputError(f"image declares {w}×{h} = {w * h:,} pixels, over the limit of {limit:,} "
                             "(possible decompression bomb)", path=p,
                             hint=f"if the file is genuine, raise the limit with {_MAX_PIXELS_ENV}")
        if w == 0 or h == 0:
            raise InputError(f"image has zero size ({w}×{h})", path=p, hint="drop this file")
        try:
            if draft and im.format == "JPEG":
                im.draft("L", (draft, draft))  # DCT-domain downscale by 1/2, 1/4 or 1/8; keeps short side ≥ draft
            im.load()
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            if im.format in ("JPEG", "TIFF", "MPO", "WEBP") and im.getexif().get(0x0112, 1) not in (1, None):
                im = ImageOps.exif_transpose(im)  # honour the camera/scanner orientation tag
            return _pil_to_gray(im, p)
        except InputError:
            raise
        except Image.DecompressionBombError as e:
            raise _bomb(e, p, limit) from None
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
            raise InputError(f"image data is truncated or corrupt ({_short(e)})", path=p,
                             hint="re-copy or re-download this file, or drop it") from None


def _pil_to_gray(im, p: Path) -> np.ndarray:
    mode = im.mode
    if mode == "L":
        return np.asarray(im, dtype=np.uint8).copy()
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return scale_to_uint8(np.asarray(im))
    if mode == "LA" or mode == "La":
        return np.asarray(im.getchannel("L"), dtype=np.uint8).copy()  # alpha is ignored (documented)
    if mode in ("1", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBa"):
            im = im.convert("RGB")
        elif mode in ("RGBA", "RGBX"):
            im = im.convert("RGB")  # alpha dropped: radiographs are opaque
        return np.asarray(im.convert("L"), dtype=np.uint8).copy()  # ITU-R 601-2 luma
    raise InputError(f"unsupported image mode {mode!r}", path=p, hint="convert it to 8- or 16-bit grayscale PNG")


def scale_to_uint8(a: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Linearly map ``[lo, hi]`` (default: the array's min and max) onto 0..255; a constant image becomes 0."""
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    af = a.astype(np.float32, copy=False)
    if lo is None or hi is None:
        finite = np.isfinite(af)
        if not finite.all():
            af = np.where(finite, af, np.nan)
            lo_, hi_ = float(np.nanmin(af)) if finite.any() else 0.0, float(np.nanmax(af)) if finite.any() else 0.0
            af = np.nan_to_num(af, nan=lo_)
        else:
            lo_, hi_ = float(af.min()), float(af.max())
        lo = lo_ if lo is None else lo
        hi = hi_ if hi is None else hi
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    out = (af - lo) * (255.0 / (hi - lo))
    np.clip(out, 0, 255, out=out)
    return (out + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------- DICOM
def _load_dicom(p: Path, limit: int) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(p, force=p.suffix.lower() in DICOM_SUFFIXES)
    except InvalidDicomError as e:
        raise InputError(f"is not a valid DICOM file ({_short(e)})", path=p, hint="re-export it or drop it") from None
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"DICOM file is truncated or corrupt ({_short(e)})", path=p,
                         hint="re-copy or re-download this file, or drop it") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        with open(p, "rb") as fh:
            part10 = fh.read(132)[128:132] == b"DICM"
        if not part10:
            raise InputError("is not a valid DICOM file (no DICM header, no pixel data)", path=p,
                             hint="re-export it or drop it")
        raise InputError("DICOM file holds no pixel data (a report or structured document?)", path=p,
                         hint="drop it from the cohort")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if rows * cols == 0:
        raise InputError("DICOM file declares an empty image (Rows/Columns missing or 0)", path=p)
    if rows * cols * frames > limit:
        raise InputError(f"DICOM declares {frames}×{cols}×{rows} = {rows * cols * frames:,} pixels, over the limit "
                         f"of {limit:,} (possible decompression bomb)", path=p,
                         hint=f"if the file is genuine, raise the limit with {_MAX_PIXELS_ENV}")
    if frames > 1:
        raise InputError(f"multi-frame DICOM ({frames} frames) is not supported", path=p,
                         hint="export the radiograph as a single-frame DICOM, PNG or JPEG")
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError, ImportError) as e:
        name = getattr(ts, "name", str(ts))
        raise InputError(f"DICOM pixel data in transfer syntax {name!r} cannot be decoded here ({_short(e)})", path=p,
                         hint="install a decoder (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg) or "
                              "decompress the file first (e.g. 'gdcmconv --raw' or 'dcmdjpeg')") from None
    except (ValueError, EOFError, OSError, AttributeError, KeyError, TypeError) as e:
        raise InputError(f"DICOM pixel data is truncated or corrupt ({_short(e)})", path=p,
                         hint="re-copy or re-download this file, or drop it") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        if arr.ndim == 3 and arr.shape[-1] == 3:  # colour DICOM (rare for CXR): pydicom gives RGB; take luma
            rgb = arr.astype(np.float32)
            return scale_to_uint8(rgb @ np.array([0.299, 0.587, 0.114], np.float32), 0, float(arr.max() or 1))
        if photometric.startswith("PALETTE"):
            raise InputError("PALETTE COLOR DICOM is not supported", path=p, hint="export it as grayscale")
    if arr.ndim != 2:
        raise InputError(f"unsupported DICOM pixel array shape {arr.shape}", path=p,
                         hint="export the radiograph as a single-frame grayscale DICOM")
    return dicom_to_uint8(arr, ds, p)


def dicom_to_uint8(arr: np.ndarray, ds, p: Path | None = None) -> np.ndarray:
    """Stored values → modality LUT (rescale) → VOI LUT or window → 0..255, MONOCHROME1 inverted (bright = dense).

    With a window or VOI LUT the output is scaled by the transform's own output range (so that the window keeps its
    meaning); without one, by the image's min/max.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        v = apply_modality_lut(arr, ds)
        has_voi = ("WindowCenter" in ds and "WindowWidth" in ds) or bool(ds.get("VOILUTSequence"))
        if has_voi:
            v = apply_voi_lut(v, ds, index=0)
            lo, hi = _voi_output_range(ds)
        else:
            lo = hi = None
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise InputError(f"DICOM LUT/window attributes are invalid ({_short(e)})", path=p,
                         hint="fix or remove the Window Center/Width or VOI LUT attributes") from None
    out = scale_to_uint8(v, lo, hi)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        out = 255 - out  # MONOCHROME1: the minimum value is displayed white
    return out


def _voi_output_range(ds) -> tuple[float | None, float | None]:
    """The output range of the dataset's VOI transform, found by sending extreme inputs through it."""
    from pydicom.pixels import apply_voi_lut

    if ds.get("VOILUTSequence"):
        lut = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float64).ravel()
        return (float(lut.min()), float(lut.max())) if lut.size else (None, None)
    probe = np.array([-1e15, 1e15], dtype=np.float64)
    ends = np.asarray(apply_voi_lut(probe, ds, index=0), dtype=np.float64)
    lo, hi = float(ends.min()), float(ends.max())
    return (lo, hi) if hi > lo else (None, None)


# ----------------------------------------------------------------------------------------------------------- PNG
def encode_png(img: np.ndarray, *, compress_level: int = 1) -> bytes:
    """Encode a 2-D uint8 array as an 8-bit grayscale PNG holding pixels only (no text, time or EXIF chunks).

    Used by the embedding client so that nothing but pixels leaves the machine.
    """
    from PIL import Image

    a = np.asarray(img)
    if a.ndim != 2 or a.dtype != np.uint8:
        raise ValueError(f"encode_png expects a 2-D uint8 array, got {a.dtype} {a.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a), mode="L").save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def decode_png_bytes(data: bytes, *, limit: int | None = None, what: str = "request image") -> np.ndarray:
    """Decode image bytes (e.g. a PNG received by the teacher server) to 2-D uint8, with the same checks as files."""
    from PIL import Image, UnidentifiedImageError

    limit = max_pixels() if limit is None else int(limit)
    if not data:
        raise InputError("image is empty (0 bytes)", path=what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
        w, h = im.size
        if w * h > limit:
            raise InputError(f"image declares {w}×{h} pixels, over the limit of {limit:,} (possible decompression "
                             "bomb)", path=what)
        im.load()
        return _pil_to_gray(im, Path(str(what)))
    except InputError:
        raise
    except Image.DecompressionBombError as e:
        raise _bomb(e, what, limit) from None
    except UnidentifiedImageError:
        raise InputError("is not a readable image", path=what, hint="send PNG or JPEG bytes") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"image data is truncated or corrupt ({_short(e)})", path=what) from None


def _bomb(e: BaseException, where: object, limit: int) -> InputError:
    """PIL refused the header itself (over 2× its own limit): same message as our own check."""
    import re

    m = re.search(r"\((\d+) pixels\)", str(e))
    n = f"{int(m.group(1)):,}" if m else "too many"
    return InputError(f"image declares {n} pixels, over the limit of {limit:,} (possible decompression bomb)",
                      path=where, hint=f"if the file is genuine, raise the limit with {_MAX_PIXELS_ENV}")


def _short(e: BaseException) -> str:
    s = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return s if len(s) <= 160 else s[:157] + "..."
