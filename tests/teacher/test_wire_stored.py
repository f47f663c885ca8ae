"""The server's fast path for the stored PNGs a loopback client sends: the same pixels as PIL, and any other or
broken PNG left to PIL (which reports what is wrong with it)."""
from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from cxrdistill.errors import InputError
from cxrdistill.images.decode import decode_png_bytes
from cxrdistill.teachers import wire


@pytest.mark.parametrize("shape", [(1, 1), (37, 53), (64, 64), (3, 700)])
def test_stored_pngs_read_back_exactly(shape):
    a = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    got = wire.png_stored_pixels(wire.png_stored(a), limit=10**8)
    np.testing.assert_array_equal(got, a)
    np.testing.assert_array_equal(got, decode_png_bytes(wire.png_stored(a)))
    assert got.flags.writeable and got.flags.c_contiguous


def test_other_or_broken_pngs_are_left_to_pil():
    a = np.random.default_rng(1).integers(0, 256, (16, 16), dtype=np.uint8)
    for kwargs in ({"compress_level": 1}, {"compress_level": 0}):  # PIL's: filtered rows and/or other chunks
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG", **kwargs)
        assert wire.png_stored_pixels(buf.getvalue(), limit=10**8) is None
    buf = io.BytesIO()
    Image.fromarray(np.stack([a] * 3, -1)).save(buf, format="PNG")
    assert wire.png_stored_pixels(buf.getvalue(), limit=10**8) is None  # RGB
    good = wire.png_stored(a)
    assert wire.png_stored_pixels(good[:-5], limit=10**8) is None  # truncated
    assert wire.png_stored_pixels(b"", limit=10**8) is None
    flipped = bytearray(good)
    flipped[60] ^= 1  # a pixel byte: the IDAT CRC no longer matches
    assert wire.png_stored_pixels(bytes(flipped), limit=10**8) is None
    with pytest.raises(InputError):
        decode_png_bytes(bytes(flipped))
    # a filter byte that is not 0, with a valid CRC: not the stored layout
    rows = np.zeros((16, 17), np.uint8)
    rows[:, 1:] = a
    rows[3, 0] = 1
    idat = zlib.compress(rows.tobytes(), 0)
    body = good[:33] + wire._chunk(b"IDAT", idat) + wire._chunk(b"IEND", b"")
    assert wire.png_stored_pixels(body, limit=10**8) is None
    assert decode_png_bytes(body).shape == (16, 16)


def test_pixel_limit_is_checked_before_inflating():
    big = wire.png_stored(np.zeros((100, 100), np.uint8))
    assert wire.png_stored_pixels(big, limit=9_999) is None
    assert wire.png_stored_pixels(big, limit=10_000) is not None
    with pytest.raises(InputError, match="over the limit"):  # the server's fallback refuses it
        decode_png_bytes(big, limit=9_999)
