"""The Open Inference Protocol (KServe v2; also NVIDIA Triton and Seldon MLServer), over JSON.

``kserve:URL`` with URL = ``http://HOST:PORT/v2/models/NAME``: ``GET URL`` gives the model's inputs and outputs
(name, datatype, shape; ``-1`` for a variable dimension); ``POST URL/infer`` with
``{"inputs": [{"name", "shape", "datatype", "data"}], "outputs": [{"name"}]}`` carries the batch as the tensor the
metadata declares — ``[B, 1, H, W]``, ``[B, H, W, 1]``, ``[B, H, W, 3]``, ``[B, 3, H, W]`` or ``[B, H, W]``, as
``UINT8`` (0–255) or ``FP32`` (``--normalize none|unit|imagenet``) — with ``data`` flattened in row-major order,
and the answer is ``{"outputs": [{"name", "shape", "datatype", "data"}]}`` (``--output-key`` names the output).

Plain JSON over the shared transport rather than ``tritonclient``: it is the protocol's required encoding, every
server speaks it, and it adds no dependency.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from cxrdistill.errors import CxrError, InputError
from cxrdistill.teachers.client import APIS, Answer, ApiTeacher
from cxrdistill.teachers.local import TeacherInfo

#: ImageNet's channel means and standard deviations (of 0–1 pixels); one channel uses their averages
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NORMALIZE = ("none", "unit", "imagenet")
LAYOUTS = {"NCHW": "[B, C, H, W]", "NHWC": "[B, H, W, C]", "NHW": "[B, H, W]"}
_FLOAT_OUT = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}


def input_layout(shape: Sequence[int]) -> tuple[str, int, int | None, int | None]:
    """``(layout, channels, H, W)`` of an image input's declared shape (H, W None when variable)."""
    s = [int(x) for x in shape]
    if len(s) == 4 and s[1] in (1, 3):
        layout, c, h, w = "NCHW", s[1], s[2], s[3]
    elif len(s) == 4 and s[3] in (1, 3):
        layout, c, h, w = "NHWC", s[3], s[1], s[2]
    elif len(s) == 3:
        layout, c, h, w = "NHW", 1, s[1], s[2]
    else:
        raise ValueError(f"shape {s} is not an image batch ({', '.join(LAYOUTS.values())} with C = 1 or 3)")
    return layout, c, (h if h > 0 else None), (w if w > 0 else None)


def to_tensor(pixels: np.ndarray, layout: str, channels: int, datatype: str, normalize: str) -> np.ndarray:
    """uint8 ``(B, H, W)`` → the declared tensor (gray copied to 3 channels when the model wants colour)."""
    x = np.asarray(pixels)
    if datatype == "UINT8":
        t = x
    else:
        t = x.astype(np.float32)
        if normalize in ("unit", "imagenet"):
            t /= 255.0
    if layout != "NHW":
        t = t[:, None] if layout == "NCHW" else t[..., None]
        if channels == 3:
            t = np.repeat(t, 3, axis=1 if layout == "NCHW" else 3)
    if datatype != "UINT8" and normalize == "imagenet":
        c = (1, -1, 1, 1) if layout == "NCHW" else (1, 1, 1, -1)
        mean = np.array(IMAGENET_MEAN if channels == 3 else [np.mean(IMAGENET_MEAN)], np.float32)
        std = np.array(IMAGENET_STD if channels == 3 else [np.mean(IMAGENET_STD)], np.float32)
        t = (t - mean.reshape(c if layout != "NHW" else (1, 1, 1))) / std.reshape(c if layout != "NHW" else (1, 1, 1))
    return t


@APIS.register("kserve")
class KServeTeacher(ApiTeacher):
    """``kserve:http://HOST:PORT/v2/models/NAME`` (see the module docstring)."""

    protocol = "kserve"

    def __init__(self, url: str, token: str | None = None, **kw: Any):
        super().__init__(url, token, **kw)
        self.input: dict[str, Any] = {}
        self.layout, self.channels = "NCHW", 1

    async def info(self) -> TeacherInfo:
        resp = await self.http.request("GET", "")
        try:
            meta = resp.json()
            inputs, outputs = list(meta["inputs"]), list(meta["outputs"])
        except (ValueError, KeyError, TypeError):
            raise CxrError(f"{self.http.shown} did not return model metadata (inputs, outputs); the URL must be "
                           "http://HOST:PORT/v2/models/NAME") from None
        if len(inputs) != 1:
            raise CxrError(f"model at {self.http.shown} has {len(inputs)} inputs "
                           f"({', '.join(str(i.get('name')) for i in inputs)}); cxrdistill sends one image tensor")
        self.input = dict(inputs[0])
        where = f"model at {self.http.shown}, input {self.input.get('name')!r}"
        dt = str(self.input.get("datatype", "")).upper()
        if dt not in ("UINT8", "FP32"):
            raise CxrError(f"{where}: datatype {dt or '(none)'} is not supported; cxrdistill sends UINT8 or FP32")
        try:
            self.layout, self.channels, h, w = input_layout(self.input.get("shape") or [])
        except ValueError as e:
            raise CxrError(f"{where}: {e}") from None
        if h and w and h != w:
            raise CxrError(f"{where}: takes {h}×{w} images; cxrdistill sends square images")
        norm = self.normalize or ("none" if dt == "UINT8" else "unit")
        if norm not in NORMALIZE:
            raise InputError(f"--normalize {norm!r} is not one of {', '.join(NORMALIZE)}")
        if dt == "UINT8" and norm != "none":
            raise InputError(f"{where} takes UINT8 pixels; --normalize {norm} applies to FP32 inputs only")
        self.normalize = norm
        names = [str(o.get("name")) for o in outputs]
        if self.output_key is None:
            if len(names) != 1:
                raise InputError(f"model at {self.http.shown} has outputs {', '.join(names)}; choose one with "
                                 "--output-key")
            self.output_key = names[0]
        if self.output_key not in names:
            raise InputError(f"model at {self.http.shown} has no output {self.output_key!r} (it has: "
                             f"{', '.join(names)})", hint="choose one with --output-key")
        oshape = [int(s) for s in next(o for o in outputs if o.get("name") == self.output_key).get("shape") or []]
        emb = tuple(oshape[1:]) if len(oshape) >= 2 and all(s > 0 for s in oshape[1:]) else ()
        if len(emb) == 2 and emb[0] == 1:
            emb = emb[1:]
        versions = meta.get("versions") or [""]
        return TeacherInfo(name=str(meta.get("name") or "kserve-model"), version=str(versions[-1] or "unknown"),
                           embedding_shape=emb, dtype="float32", image_size=int(h or 224),
                           extra={"input": self.input.get("name"), "datatype": dt, "layout": self.layout,
                                  "channels": self.channels, "normalize": norm})

    def pixel_size(self, size: int | None, info: TeacherInfo) -> tuple[int | None, int | None]:
        _, _, h, _ = input_layout(self.input["shape"])
        if h and size and int(size) != h:
            raise InputError(f"model at {self.http.shown} takes {h}×{h} images; drop --size or give --size {h}")
        return int(h or size or info.image_size), None

    def encode(self, pixels: Sequence[np.ndarray]) -> tuple[int, bytes]:
        dt = str(self.input["datatype"]).upper()
        t = to_tensor(np.asarray(pixels), self.layout, self.channels, dt, self.normalize)
        body = {"inputs": [{"name": self.input["name"], "shape": list(t.shape), "datatype": dt,
                            "data": t.ravel().tolist()}],
                "outputs": [{"name": self.output_key}]}
        return len(t), json.dumps(body, separators=(",", ":")).encode()

    async def embed(self, payload: tuple[int, bytes]) -> Answer:
        n, body = payload
        resp = await self.http.request("POST", "/infer", content=body, headers={"Content-Type": "application/json"})
        try:
            outs = {o["name"]: o for o in resp.json()["outputs"]}
            o = outs[self.output_key]
            dtype = _FLOAT_OUT.get(str(o.get("datatype", "FP32")).upper(), np.float32)
            shape = [int(s) for s in o["shape"]]
            a = np.asarray(o["data"], dtype=dtype).reshape(shape).astype(np.float32)
        except (ValueError, KeyError, TypeError):
            raise CxrError(f"teacher at {self.http.shown}/infer did not answer with output {self.output_key!r} "
                           "(outputs: [{name, shape, datatype, data}])") from None
        if len(a) != n:
            raise CxrError(f"teacher at {self.http.shown} returned {len(a)} embeddings for {n} images")
        return Answer.all_of(np.stack([self.check_shape(x, f"output {self.output_key!r}") for x in a]))


# ------------------------------------------------------------------------------------------- the server's side
def metadata(name: str, version: str, image_size: int, embedding_shape: Sequence[int]) -> dict[str, Any]:
    """Model metadata of a teacher served by ``teacher serve``: UINT8 ``[B, 1, S, S]`` in, FP32 embedding out."""
    return {"name": name, "versions": [version], "platform": "cxrdistill",
            "inputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, 1, image_size, image_size]}],
            "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, *map(int, embedding_shape)]}]}


def read_infer(body: Any, image_size: int, max_batch: int) -> np.ndarray:
    """uint8 ``(B, S, S)`` from an infer request against :func:`metadata` (ValueError with the reason otherwise)."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or len(body["inputs"]) != 1:
        raise ValueError("expected {\"inputs\": [one tensor named 'image']}")
    t = body["inputs"][0]
    if not isinstance(t, dict) or t.get("name") != "image":
        raise ValueError("the input tensor must be named 'image'")
    if str(t.get("datatype", "")).upper() != "UINT8":
        raise ValueError("input 'image' is UINT8")
    shape = t.get("shape")
    if not (isinstance(shape, list) and len(shape) == 4 and shape[1:] == [1, image_size, image_size]
            and isinstance(shape[0], int) and shape[0] >= 1):
        raise ValueError(f"input 'image' has shape [B, 1, {image_size}, {image_size}], got {shape}")
    if shape[0] > max_batch:
        raise ValueError(f"at most {max_batch} images per request")
    try:
        a = np.asarray(t.get("data"), dtype=np.int64)
    except (TypeError, ValueError):
        raise ValueError("input 'image' data is not a list of integers") from None
    if a.size != int(np.prod(shape)) or (a.size and (a.min() < 0 or a.max() > 255)):
        raise ValueError(f"input 'image' needs {int(np.prod(shape))} values in 0–255")
    return a.reshape(shape[0], image_size, image_size).astype(np.uint8)


def infer_response(name: str, version: str, emb: np.ndarray) -> dict[str, Any]:
    a = np.asarray(emb, dtype=np.float32)
    return {"model_name": name, "model_version": version,
            "outputs": [{"name": "embedding", "datatype": "FP32", "shape": list(a.shape), "data": a.ravel().tolist()}]}
