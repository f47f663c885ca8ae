"""TFRecord files of ``tf.train.Example`` protos, read and written without TensorFlow.

TFRecord framing (per record): ``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``,
little-endian. ``Example`` wire format (tensorflow/core/example/{example,feature}.proto)::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }      // map entry: { string key = 1; Feature value = 2; }
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }  FloatList { repeated float value = 1 [packed]; }
    Int64List { repeated int64 value = 1 [packed]; }

Only this subset is decoded; unknown fields are skipped as protobuf requires.
"""
from __future__ import annotations

import os
import struct
from typing import Any, Iterable, Iterator

import numpy as np

from cxrdistill.storage.io import atomic_open

# ----------------------------------------------------------------------------------------------------- CRC32C
_CRC_TABLE: list[int] | None = None


def _table() -> list[int]:
    global _CRC_TABLE
    if _CRC_TABLE is None:
        poly = 0x82F63B78  # Castagnoli, reflected
        t = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ poly if c & 1 else c >> 1
            t.append(c)
        _CRC_TABLE = t
    return _CRC_TABLE


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data`` (pure Python: ~10 MB/s, hence optional when reading)."""
    t = _table()
    c = 0xFFFFFFFF
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 and add a constant (tensorflow/core/lib/hash/crc32c.h)."""
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class TFRecordError(ValueError):
    """A malformed TFRecord file or Example proto."""


def iter_records(path: str | os.PathLike, *, check_crc: bool = False) -> Iterator[bytes]:
    """Yield the raw records of a TFRecord file. The length CRC is always checked; the data CRC if asked."""
    with open(path, "rb") as fh:
        k = 0
        while True:
            head = fh.read(12)
            if not head:
                return
            if len(head) < 12:
                raise TFRecordError(f"record {k}: truncated header")
            (length,) = struct.unpack("<Q", head[:8])
            (len_crc,) = struct.unpack("<I", head[8:])
            if masked_crc(head[:8]) != len_crc:
                raise TFRecordError(f"record {k}: length checksum mismatch (not a TFRecord file or corrupt)")
            data = fh.read(length)
            tail = fh.read(4)
            if len(data) < length or len(tail) < 4:
                raise TFRecordError(f"record {k}: truncated (declares {length} bytes)")
            if check_crc and masked_crc(data) != struct.unpack("<I", tail)[0]:
                raise TFRecordError(f"record {k}: data checksum mismatch (corrupt)")
            yield data
            k += 1


def write_records(path: str | os.PathLike, records: Iterable[bytes]) -> None:
    """Write records with TFRecord framing (atomically)."""
    with atomic_open(path, "wb") as fh:
        for r in records:
            n = struct.pack("<Q", len(r))
            fh.write(n + struct.pack("<I", masked_crc(n)) + r + struct.pack("<I", masked_crc(r)))


# ------------------------------------------------------------------------------------------------- protobuf wire
def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise TFRecordError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise TFRecordError("varint too long")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """Yield (field number, wire type, value): int for varint, memoryview for length-delimited and fixed."""
    i = 0
    n = len(buf)
    while i < n:
        key, i = _varint(buf, i)
        fn, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            ln, i = _varint(buf, i)
            v, i = buf[i:i + ln], i + ln
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise TFRecordError(f"unsupported wire type {wt}")
        if i > n:
            raise TFRecordError("truncated field")
        yield fn, wt, v


def _to_int64(u: int) -> int:
    return u - (1 << 64) if u >= 1 << 63 else u


def _decode_feature(buf: memoryview) -> Any:
    out: Any = None
    for fn, wt, v in _fields(buf):
        if fn == 1 and wt == 2:  # BytesList
            out = [bytes(x) for f, w, x in _fields(v) if f == 1 and w == 2]
        elif fn == 2 and wt == 2:  # FloatList
            parts = []
            for f, w, x in _fields(v):
                if f == 1 and w == 2:  # packed
                    if len(x) % 4:
                        raise TFRecordError("packed float list length is not a multiple of 4")
                    parts.append(np.frombuffer(x, dtype="<f4"))
                elif f == 1 and w == 5:  # unpacked
                    parts.append(np.frombuffer(x, dtype="<f4"))
            out = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
        elif fn == 3 and wt == 2:  # Int64List
            vals: list[int] = []
            for f, w, x in _fields(v):
                if f == 1 and w == 2:
                    j = 0
                    while j < len(x):
                        u, j = _varint(x, j)
                        vals.append(_to_int64(u))
                elif f == 1 and w == 0:
                    vals.append(_to_int64(x))
            out = np.asarray(vals, dtype=np.int64)
    return out


def decode_example(data: bytes) -> dict[str, Any]:
    """``tf.train.Example`` bytes → ``{name: np.float32 array | np.int64 array | list[bytes]}``."""
    feats: dict[str, Any] = {}
    for fn, wt, v in _fields(memoryview(data)):
        if fn != 1 or wt != 2:
            continue
        for f2, w2, entry in _fields(v):  # Features.feature map entries
            if f2 != 1 or w2 != 2:
                continue
            key, value = None, None
            for f3, w3, x in _fields(entry):
                if f3 == 1 and w3 == 2:
                    key = bytes(x).decode("utf-8")
                elif f3 == 2 and w3 == 2:
                    value = _decode_feature(x)
            if key is not None:
                feats[key] = value
    return feats


def _enc_varint(u: int) -> bytes:
    if u < 0:
        u += 1 << 64
    out = bytearray()
    while True:
        b = u & 0x7F
        u >>= 7
        if u:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _ld(fn: int, payload: bytes) -> bytes:
    return _enc_varint((fn << 3) | 2) + _enc_varint(len(payload)) + payload


def encode_example(features: dict[str, Any]) -> bytes:
    """The inverse of :func:`decode_example`: floats → FloatList (packed), ints → Int64List, bytes/str → BytesList."""
    entries = b""
    for key, val in features.items():
        if isinstance(val, (bytes, str)):
            val = [val]
        if isinstance(val, list) and val and isinstance(val[0], (bytes, str)):
            inner = b"".join(_ld(1, v.encode() if isinstance(v, str) else v) for v in val)
            feat = _ld(1, inner)
        else:
            a = np.asarray(val)
            if np.issubdtype(a.dtype, np.integer):
                feat = _ld(3, _ld(1, b"".join(_enc_varint(int(x)) for x in a.ravel())))
            else:
                feat = _ld(2, _ld(1, a.astype("<f4").ravel().tobytes()))
        entries += _ld(1, _ld(1, key.encode()) + _ld(2, feat))
    return _ld(1, entries)
