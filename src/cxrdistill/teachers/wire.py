"""The teacher API's wire formats, shared by the server and the client (no web framework imported here).

Request (``POST /v1/embed``), either
  * ``Content-Type: application/x-cxrdistill-png-batch`` — the images back to back, each preceded by its length as
    a 4-byte little-endian unsigned integer: ``[len0][png0][len1][png1]…``. No names, no metadata: only pixels.
    This is what the client sends (no multipart parsing, no per-part headers).
  * ``multipart/form-data`` with one file part per image (any field name; file names are ignored), for ``curl -F``.

Response: by default ``Content-Type: application/x-cxrdistill-embeddings``, the embeddings as raw C-order
little-endian numbers, with headers ``X-Embedding-Shape: B,D[,…]`` and ``X-Embedding-Dtype: float32|float16``.
With ``Accept: application/json``: ``{"shape": [...], "dtype": "...", "data": "<base64 of the same bytes>"}``.
"""
from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

PNG_BATCH = "application/x-cxrdistill-png-batch"
EMBEDDINGS = "application/x-cxrdistill-embeddings"
_LEN = struct.Struct("<I")


class WireError(ValueError):
    """A malformed request or response body."""


def pack_images(images: list[bytes]) -> bytes:
    """Frame encoded images as ``[u32 little-endian length][bytes]…``."""
    return b"".join(_LEN.pack(len(b)) + b for b in images)


def unpack_images(body: bytes, max_items: int | None = None) -> list[bytes]:
    """Split a framed body into its images; refuses truncated frames and more than ``max_items`` images."""
    out: list[memoryview] = []
    mv = memoryview(body)
    pos, n = 0, len(body)
    while pos < n:
        if pos + 4 > n:
            raise WireError(f"truncated frame header at byte {pos}")
        (length,) = _LEN.unpack_from(mv, pos)
        pos += 4
        if pos + length > n:
            raise WireError(f"image {len(out)} declares {length} bytes but only {n - pos} remain")
        out.append(mv[pos:pos + length])
        pos += length
        if max_items is not None and len(out) > max_items:
            raise WireError(f"more than {max_items} images in one request")
    return [bytes(b) for b in out]


def png_stored(img: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of ``img`` with its pixel rows stored uncompressed (zlib level 0, filter None) and only
    the IHDR, IDAT and IEND chunks: pixels and nothing else.

    For a server on this machine (loopback), where bytes cost nothing: written with zlib and numpy directly, it
    takes ~1% of the time PIL's encoder takes at any level (its per-call cost dominates on small images), and any
    PNG decoder reads it. Across a network the client uses PIL's filtered, compressed PNGs instead.
    """
    a = np.ascontiguousarray(img)
    if a.ndim != 2 or a.dtype != np.uint8:
        raise ValueError(f"png_stored expects a 2-D uint8 array, got {a.dtype} {a.shape}")
    h, w = a.shape
    rows = np.zeros((h, w + 1), np.uint8)  # each row: filter type 0, then its pixels
    rows[:, 1:] = a
    return b"".join((b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)),
                     _chunk(b"IDAT", zlib.compress(rows.tobytes(), 0)), _chunk(b"IEND", b"")))


_STORED_HEAD = struct.Struct(">8s I4s IIBBBBB I I4s")  # signature, IHDR chunk (length, type, fields, CRC), IDAT head


def png_stored_pixels(data: bytes, limit: int) -> np.ndarray | None:
    """The pixels of a PNG laid out exactly as :func:`png_stored` writes it (8-bit grayscale, one IDAT, every row
    unfiltered), read with zlib and numpy alone; None for any other PNG (the caller decodes it with PIL, which
    also reports what is wrong with a broken one). ``limit``: the most pixels accepted, checked before inflating."""
    if len(data) < _STORED_HEAD.size + 16:
        return None
    sig, ihdr_len, ihdr, w, h, depth, color, comp, filt, interlace, _crc, idat_len, idat = \
        _STORED_HEAD.unpack_from(data)
    if (sig != b"\x89PNG\r\n\x1a\n" or ihdr_len != 13 or ihdr != b"IHDR" or idat != b"IDAT"
            or (depth, color, comp, filt, interlace) != (8, 0, 0, 0, 0) or not 0 < w * h <= limit):
        return None
    start = _STORED_HEAD.size
    if data[start + idat_len + 4:] != _chunk(b"IEND", b""):
        return None
    idat_body = data[start:start + idat_len]
    if zlib.crc32(b"IDAT" + idat_body) != struct.unpack_from(">I", data, start + idat_len)[0]:
        return None
    try:
        raw = zlib.decompress(idat_body, bufsize=h * (w + 1))
    except zlib.error:
        return None
    if len(raw) != h * (w + 1):
        return None
    rows = np.frombuffer(raw, np.uint8).reshape(h, w + 1)
    if rows[:, 0].any():  # a filtered row: not ours
        return None
    return rows[:, 1:].copy()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_embeddings(arr: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """Raw little-endian bytes and the headers that describe them."""
    a = np.ascontiguousarray(arr)
    if a.dtype not in (np.float32, np.float16):
        a = a.astype(np.float32)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return a.tobytes(), {"X-Embedding-Shape": ",".join(str(s) for s in a.shape),
                         "X-Embedding-Dtype": a.dtype.name}


def decode_embeddings(body: bytes, shape_header: str | None, dtype_header: str | None) -> np.ndarray:
    """Inverse of :func:`encode_embeddings`; checks that the byte count matches the declared shape."""
    if not shape_header or not dtype_header:
        raise WireError("response lacks X-Embedding-Shape / X-Embedding-Dtype headers")
    try:
        shape = tuple(int(s) for s in shape_header.split(","))
    except ValueError:
        raise WireError(f"bad X-Embedding-Shape {shape_header!r}") from None
    if dtype_header not in ("float32", "float16"):
        raise WireError(f"unsupported X-Embedding-Dtype {dtype_header!r}")
    dt = np.dtype(dtype_header).newbyteorder("<")
    if int(np.prod(shape)) * dt.itemsize != len(body):
        raise WireError(f"response has {len(body)} bytes, expected {int(np.prod(shape)) * dt.itemsize} for "
                        f"{shape} {dtype_header} (truncated?)")
    return np.frombuffer(body, dtype=dt).reshape(shape).astype(dt.newbyteorder("="))


def embeddings_json(arr: np.ndarray) -> dict:
    data, headers = encode_embeddings(arr)
    return {"shape": list(arr.shape), "dtype": headers["X-Embedding-Dtype"],
            "data": base64.b64encode(data).decode("ascii")}


def embeddings_from_json(obj: dict) -> np.ndarray:
    try:
        return decode_embeddings(base64.b64decode(obj["data"]), ",".join(str(s) for s in obj["shape"]), obj["dtype"])
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, WireError):
            raise
        raise WireError(f"bad JSON embeddings ({type(e).__name__}: {e})") from None
