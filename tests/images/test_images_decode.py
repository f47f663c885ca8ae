"""Decoding: every supported kind of file, and a clear InputError naming the file for every bad one."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cxrdistill.errors import InputError
from cxrdistill.images.decode import decode_png_bytes, encode_png, load_gray, scale_to_uint8
from cxrdistill.images.preprocess import PREPROCESS, preprocess

from images_helpers import gradient, png_with_declared_size, write_dicom


def test_png_gray_roundtrip(tmp_path):
    a = gradient()
    Image.fromarray(a).save(tmp_path / "g.png")
    out = load_gray(tmp_path / "g.png")
    assert out.dtype == np.uint8 and out.shape == a.shape
    assert np.array_equal(out, a)


@pytest.mark.parametrize("mode,ext,tol", [("RGBA", "png", 0), ("RGB", "png", 0), ("P", "png", 0), ("LA", "png", 0),
                                          ("CMYK", "jpg", 2), ("CMYK", "tif", 0), ("RGB", "jpg", 2), ("1", "png", 0)])
def test_colour_modes_become_gray(tmp_path, mode, ext, tol):
    a = gradient()
    if mode == "1":
        a = np.where(a > 127, 255, 0).astype(np.uint8)
    im = Image.fromarray(a)
    im = im.convert("RGB").convert(mode) if mode in ("CMYK", "RGBA", "RGB") else im.convert(mode)
    p = tmp_path / f"x.{ext}"
    im.save(p, quality=98) if ext == "jpg" else im.save(p)
    assert Image.open(p).mode == mode
    out = load_gray(p)
    assert out.dtype == np.uint8 and out.ndim == 2 and out.shape == a.shape
    assert np.abs(out.astype(int) - a.astype(int)).max() <= tol


def test_png_16bit_minmax_scaled(tmp_path):
    a = gradient().astype(np.uint16) * 7 + 1000  # 1000 .. 2785: min/max window → 0..255
    Image.fromarray(a).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = load_gray(tmp_path / "g16.png")
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    expect = np.round((a - 1000) * 255.0 / (a.max() - 1000)).astype(np.uint8)
    assert np.abs(out.astype(int) - expect).max() <= 1


def test_constant_16bit_is_black():
    assert (scale_to_uint8(np.full((4, 4), 7, np.uint16)) == 0).all()


def test_jpeg_draft_keeps_enough_resolution(tmp_path):
    a = np.tile(gradient(256, 256), (4, 4))  # 1024²
    Image.fromarray(a).save(tmp_path / "big.jpg", quality=95)
    small = load_gray(tmp_path / "big.jpg", draft=128)
    assert min(small.shape) >= 128 and small.shape[0] < 1024  # libjpeg decoded at a reduced scale


# ------------------------------------------------------------------------------------------------------ DICOM
def test_dicom_monochrome1_16bit_inverted(tmp_path):
    a = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (32, 1))
    p = write_dicom(tmp_path / "m1.dcm", a, photometric="MONOCHROME1")
    out = load_gray(p)
    assert out.shape == (32, 64) and out.dtype == np.uint8
    assert out[0, 0] == 255 and out[0, -1] == 0  # minimum stored value is displayed white
    assert np.all(np.diff(out[0].astype(int)) <= 0)
    m2 = load_gray(write_dicom(tmp_path / "m2.dcm", a, photometric="MONOCHROME2"))
    assert np.abs(m2.astype(int) + out.astype(int) - 255).max() <= 1


def test_dicom_window_applied(tmp_path):
    a = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (8, 1))
    out = load_gray(write_dicom(tmp_path / "w.dcm", a, window=(2048, 1024)))
    v = a[0]
    assert (out[0][v <= 1535] == 0).all() and (out[0][v >= 2561] == 255).all()
    mid = (v > 1600) & (v < 2500)
    assert np.all(np.diff(out[0][mid].astype(int)) > 0)


def test_dicom_rescale_then_window(tmp_path):
    # Modality LUT first: stored 0..1000 × 2 − 1000 → −1000..1000; window centre 0 width 1000 on those values.
    a = np.tile(np.linspace(0, 1000, 51).astype(np.uint16), (4, 1))
    out = load_gray(write_dicom(tmp_path / "r.dcm", a, rescale=(2, -1000), window=(0, 1000)))
    hu = a[0].astype(float) * 2 - 1000
    assert (out[0][hu <= -500] == 0).all() and (out[0][hu > 500] == 255).all()
    assert 100 < out[0][np.argmin(np.abs(hu))] < 155


def test_dicom_compressed_without_decoder_is_clear(tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLossless

    a = np.zeros((16, 16), np.uint16)
    p = write_dicom(tmp_path / "jl.dcm", a, transfer_syntax=JPEGLossless,
                    pixel_bytes=encapsulate([b"\xff\xd8\x00\x00\xff\xd9"]))
    with pytest.raises(InputError, match=r"jl\.dcm.*JPEG Lossless.*pylibjpeg"):
        load_gray(p)


def test_dicom_truncated_and_multiframe(tmp_path):
    a = np.zeros((32, 32), np.uint16)
    p = write_dicom(tmp_path / "ok.dcm", a)
    b = p.read_bytes()
    (tmp_path / "t.dcm").write_bytes(b[: len(b) - 700])
    with pytest.raises(InputError, match=r"t\.dcm.*truncated or corrupt"):
        load_gray(tmp_path / "t.dcm")
    with pytest.raises(InputError, match=r"mf\.dcm.*multi-frame"):
        load_gray(write_dicom(tmp_path / "mf.dcm", a, frames=3))


def test_dicom_detected_by_magic_without_extension(tmp_path):
    a = np.tile(np.arange(16, dtype=np.uint16) * 100, (16, 1))
    p = write_dicom(tmp_path / "noext", a)
    assert load_gray(p)[0, -1] == 255


# ------------------------------------------------------------------------------------------------- bad input
def test_missing_zero_text_truncated(tmp_path):
    with pytest.raises(InputError, match=r"nope\.png: image file not found"):
        load_gray(tmp_path / "nope.png")
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(InputError, match=r"zero\.png: image file is empty \(0 bytes\)"):
        load_gray(tmp_path / "zero.png")
    (tmp_path / "notes.png").write_text("this is a radiology report, not an image")
    with pytest.raises(InputError, match=r"notes\.png: is not a readable image"):
        load_gray(tmp_path / "notes.png")
    Image.fromarray(gradient(200, 200)).save(tmp_path / "full.png")
    b = (tmp_path / "full.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(b[: len(b) // 2])
    with pytest.raises(InputError, match=r"trunc\.png: image data is truncated or corrupt"):
        load_gray(tmp_path / "trunc.png")
    Image.fromarray(gradient(200, 200)).save(tmp_path / "full.jpg")
    b = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(b[: len(b) // 3])
    with pytest.raises(InputError, match=r"trunc\.jpg: image data is truncated or corrupt"):
        load_gray(tmp_path / "trunc.jpg")


def test_decompression_bomb_refused_before_decoding(tmp_path, recwarn):
    p = tmp_path / "bomb.png"
    png_with_declared_size(p, 60000, 60000)
    assert p.stat().st_size < 2000
    with pytest.raises(InputError, match=r"bomb\.png: image declares 3,600,000,000 pixels.*decompression bomb"):
        load_gray(p)
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]
    png_with_declared_size(p, 9000, 9000)  # over our 64 Mpx default, under PIL's own limits
    with pytest.raises(InputError, match=r"bomb\.png: image declares 9000×9000 = 81,000,000 pixels"):
        load_gray(p)
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]
    # Our own limit is configurable (a 200×200 image over a limit of 10,000 pixels).
    Image.fromarray(gradient(200, 200)).save(tmp_path / "ok.png")
    with pytest.raises(InputError, match="over the limit of 10,000"):
        load_gray(tmp_path / "ok.png", limit=10_000)
    with pytest.raises(InputError, match="decompression bomb"):
        decode_png_bytes(p.read_bytes())


def test_dicom_bomb_refused(tmp_path):
    from pydicom import dcmread

    p = write_dicom(tmp_path / "b.dcm", np.zeros((8, 8), np.uint16))
    ds = dcmread(p)
    ds.Rows, ds.Columns = 60000, 60000
    ds.save_as(p)
    with pytest.raises(InputError, match=r"b\.dcm: DICOM declares .* decompression bomb"):
        load_gray(p)


# ------------------------------------------------------------------------------------------------ encode/resize
def test_encode_png_pixels_only():
    a = gradient()
    data = encode_png(a)
    im = Image.open(io.BytesIO(data))
    assert im.mode == "L" and np.array_equal(np.asarray(im), a)
    assert im.info == {} or set(im.info) <= {"dpi"}  # no text/time/EXIF chunks
    chunks = []
    i = 8
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        chunks.append(data[i + 4:i + 8])
        i += 12 + n
    assert set(chunks) == {b"IHDR", b"IDAT", b"IEND"}
    assert np.array_equal(decode_png_bytes(data), a)
    with pytest.raises(ValueError):
        encode_png(a.astype(np.uint16))


def test_preprocess_modes():
    a = np.zeros((60, 100), np.uint8)
    a[:, 40:60] = 255  # a central bright band
    assert set(PREPROCESS.names()) >= {"resize", "center-crop", "pad"}
    for mode in PREPROCESS.names():
        out = preprocess(a, 32, mode)
        assert out.shape == (32, 32) and out.dtype == np.uint8
    crop = preprocess(a, 30, "center-crop")  # central 60×60 square: band is cols 20..40 of it → 10..20 of 30
    assert crop[:, 12:18].min() > 200 and crop[:, :8].max() < 20
    padded = preprocess(a, 50, "pad")  # 100×100 with rows 20..80 of image → rows 10..40 of 50; black bars
    assert padded[:8].max() == 0 and padded[-8:].max() == 0 and padded[25, 24] > 200
    # antialiasing: a 1-px checkerboard resized ×1/4 averages to mid-grey instead of aliasing to black/white
    cb = (np.indices((128, 128)).sum(0) % 2 * 255).astype(np.uint8)
    small = preprocess(cb, 32, "resize")
    assert 100 < small.mean() < 155 and small.std() < 20
    with pytest.raises(Exception, match="unknown preprocess mode"):
        preprocess(a, 32, "stretch")
