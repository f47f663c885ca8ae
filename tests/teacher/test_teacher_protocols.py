"""The small parts the API protocols are built from: spec parsing, URL redaction, the error bodies in use, request
packing by bytes, the stored PNG the client sends on loopback, and the Open Inference Protocol's tensor layouts."""
from __future__ import annotations

import io
import struct

import httpx
import numpy as np
import pytest
from PIL import Image

from cxrdistill.errors import InputError
from cxrdistill.images.decode import decode_png_bytes
from cxrdistill.teachers import wire
from cxrdistill.teachers.client import ApiTeacher, api_spec
from cxrdistill.teachers.kserve import input_layout, to_tensor
from cxrdistill.teachers.transport import error_message, redact_url


def test_specs_urls_and_error_bodies():
    assert api_spec("http://h:1") == ("http", "http://h:1")
    assert api_spec("vertex:https://r-aiplatform.googleapis.com/v1/x:predict") == (
        "vertex", "https://r-aiplatform.googleapis.com/v1/x:predict")
    assert api_spec("kserve:http://h/v2/models/m") == ("kserve", "http://h/v2/models/m")
    assert api_spec("torch:model.safetensors") is None and api_spec("timm:resnet18") is None
    with pytest.raises(InputError, match="needs a full http"):
        api_spec("vertex:my-endpoint")
    assert redact_url("https://user:pw@host:8443/v1/e:predict?key=SECRET#frag") == "https://host:8443/v1/e:predict"
    assert redact_url("http://[::1]:80/p") == "http://[::1]:80/p"

    def resp(body, status=400):
        return httpx.Response(status, json=body) if not isinstance(body, bytes) else httpx.Response(status,
                                                                                                   content=body)

    assert error_message(resp({"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}})
                         ) == "RESOURCE_EXHAUSTED: Quota exceeded"
    assert error_message(resp({"error": "unexpected input 'x'"})) == "unexpected input 'x'"
    assert error_message(resp({"detail": "too many images"})) == "too many images"
    assert error_message(resp(b"<html>502 Bad Gateway</html>")) == "<html>502 Bad Gateway</html>"


def test_requests_are_packed_in_order_under_the_budget():
    pack = ApiTeacher.pack
    assert pack([4, 4, 4, 4], budget=10, overhead=2) == [[0, 1], [2, 3]]
    assert pack([3, 20, 3, 3, 3], budget=10) == [[0], [1], [2, 3, 4]]  # an oversized item alone; the caller refuses
    assert pack([], budget=10) == []
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 50, 200).tolist()
    groups = pack(sizes, budget=100, overhead=7)
    assert [k for g in groups for k in g] == list(range(200))
    assert all(7 + sum(sizes[k] for k in g) <= 100 for g in groups)
    # greedy: no group could have taken the next item
    assert all(7 + sum(sizes[k] for k in g) + sizes[g[-1] + 1] > 100 for g in groups[:-1])


def test_stored_png_is_pixels_only_and_any_decoder_reads_it():
    rng = np.random.default_rng(1)
    for shape in ((1, 1), (37, 53), (64, 64)):
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        b = wire.png_stored(a)
        im = Image.open(io.BytesIO(b))
        assert im.format == "PNG" and im.mode == "L" and im.size == shape[::-1] and not im.info
        np.testing.assert_array_equal(np.asarray(im), a)
        np.testing.assert_array_equal(decode_png_bytes(b), a)
        pos, kinds = 8, []
        while pos < len(b):
            (n,) = struct.unpack(">I", b[pos:pos + 4])
            kinds.append(b[pos + 4:pos + 8])
            pos += 12 + n
        assert kinds == [b"IHDR", b"IDAT", b"IEND"]
    with pytest.raises(ValueError):
        wire.png_stored(np.zeros((4, 4), np.float32))


def test_kserve_layouts_and_normalisation():
    assert input_layout([-1, 1, 224, 224]) == ("NCHW", 1, 224, 224)
    assert input_layout([-1, 224, 224, 3]) == ("NHWC", 3, 224, 224)
    assert input_layout([-1, -1, -1]) == ("NHW", 1, None, None)
    with pytest.raises(ValueError, match="not an image batch"):
        input_layout([-1, 512])
    px = np.random.default_rng(2).integers(0, 256, (2, 5, 5), dtype=np.uint8)
    np.testing.assert_array_equal(to_tensor(px, "NHWC", 1, "UINT8", "none"), px[..., None])
    np.testing.assert_allclose(to_tensor(px, "NCHW", 1, "FP32", "unit"), px[:, None] / 255.0, rtol=1e-6)
    t = to_tensor(px, "NHWC", 3, "FP32", "imagenet")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(t, (px[..., None] / 255.0 - mean) / std, rtol=1e-5)
    g = to_tensor(px, "NCHW", 1, "FP32", "imagenet")
    np.testing.assert_allclose(g, (px[:, None] / 255.0 - mean.mean()) / std.mean(), rtol=1e-5)
