"""Vertex AI's online ``predict`` signature, as Google's CXR Foundation serving container speaks it.

Request: ``POST URL`` with ``{"instances": [{"input_bytes": "<base64 PNG>"}, …]}`` and nothing else — each image a
lossless PNG of its pixels only (no ids, file names, text chunks or DICOM header). Response:
``{"predictions": [...]}`` in instance order (Vertex's ``deployedModelId``, ``model``, … are ignored); each
prediction is a dict of outputs (``general_img_emb`` (32, 768), ``contrastive_img_emb`` (32, 128)) or
``{"error": {"description": …}}`` for that instance alone — a failed image, never a failed batch.

There is no info call: the embedding's shape comes from the first answer and every later one must match. Vertex
refuses request bodies over 1.5 MiB (HTTP 400, "Request payload size exceeds the limit"), so instances are packed by
bytes as well as by count under ``max_request_bytes``; an image that alone exceeds it is a failed image with a
named reason (it is not downscaled behind the user's back: ``--size`` sends smaller images).

The server side of the same schema (``teacher serve`` at ``/predict``) is :func:`instance_bytes` and
:func:`prediction`.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Sequence

import numpy as np

from cxrdistill.errors import CxrError
from cxrdistill.images.decode import encode_png
from cxrdistill.teachers.client import APIS, Answer, ApiTeacher
from cxrdistill.teachers.local import TeacherInfo
from cxrdistill.teachers.transport import PayloadTooLarge

DEFAULT_OUTPUT_KEY = "general_img_emb"
DEFAULT_MAX_REQUEST_MB = 1.5  # Vertex AI online prediction's request limit
MAX_SIDE = 1024  # default: the stored resolution, long side capped here (CXR Foundation preprocesses itself)
_HEAD, _SEP, _TAIL = b'{"instances":[', b",", b"]}"


@APIS.register("vertex")
class VertexTeacher(ApiTeacher):
    """``vertex:URL`` — a Vertex AI endpoint's full predict URL (``https://REGION-aiplatform.googleapis.com/v1/
    projects/P/locations/R/endpoints/E:predict``) or a custom container's route (``http://HOST:8080/predict``)."""

    protocol = "vertex"
    token_hint = ("pass a Google access token with --token-command \"gcloud auth print-access-token\" "
                  "(or --token-env VAR)")

    def __init__(self, url: str, token: str | None = None, **kw: Any):
        kw["output_key"] = kw.get("output_key") or DEFAULT_OUTPUT_KEY
        kw["max_request_bytes"] = kw.get("max_request_bytes") or int(DEFAULT_MAX_REQUEST_MB * 2**20)
        super().__init__(url, token, **kw)

    async def info(self) -> TeacherInfo:
        return TeacherInfo(name="vertex-endpoint", version="unknown", embedding_shape=(), dtype="float32",
                           image_size=MAX_SIDE, extra={"output_key": self.output_key})

    def pixel_size(self, size: int | None, info: TeacherInfo) -> tuple[int | None, int | None]:
        return (int(size), None) if size else (None, MAX_SIDE)

    def encode(self, pixels: Sequence[np.ndarray]) -> list[bytes]:
        """One JSON instance per image, ready to be joined into a body (base64 is done here, off the event loop)."""
        return [b'{"input_bytes":"' + base64.b64encode(encode_png(p)) + b'"}' for p in pixels]

    async def embed(self, payload: list[bytes]) -> Answer:
        budget = int(self.max_request_bytes)
        out: dict[int, np.ndarray] = {}
        errors: list[tuple[int, str]] = []
        groups = self.pack([len(x) + len(_SEP) for x in payload], budget, len(_HEAD) + len(_TAIL))
        while groups:
            g = groups.pop(0)
            size = len(_HEAD) + len(_TAIL) + sum(len(payload[k]) + len(_SEP) for k in g) - len(_SEP)
            if len(g) == 1 and size > budget:
                errors.append((g[0], f"as a request it is {size:,} bytes, over the limit of {budget:,} bytes "
                                     "(--max-request-mb); send smaller images with --size (e.g. --size 1024)"))
                continue
            try:
                answers = await self._predict(_HEAD + _SEP.join(payload[k] for k in g) + _TAIL, len(g))
            except PayloadTooLarge as e:  # the service's limit is below ours: halve the request
                if len(g) == 1:
                    errors.append((g[0], str(e)))
                else:
                    groups[:0] = [g[:len(g) // 2], g[len(g) // 2:]]
                continue
            for k, a in zip(g, answers):
                if isinstance(a, str):
                    errors.append((k, a))
                else:
                    out[k] = a
        ok = sorted(out)
        emb = np.stack([out[k] for k in ok]) if ok else np.zeros((0, *(self._shape or (0,))), np.float32)
        return Answer(emb, ok, sorted(errors))

    async def _predict(self, body: bytes, n: int) -> list[np.ndarray | str]:
        resp = await self.http.request("POST", "", content=body, headers={"Content-Type": "application/json"})
        try:
            preds = json.loads(resp.content)["predictions"]
        except (ValueError, KeyError, TypeError):
            raise CxrError(f"teacher at {self.http.shown} did not answer with {{\"predictions\": [...]}}; is this a "
                           "Vertex AI predict URL (…/endpoints/ID:predict)?") from None
        if not isinstance(preds, list) or len(preds) != n:
            got = len(preds) if isinstance(preds, list) else type(preds).__name__
            raise CxrError(f"teacher at {self.http.shown} returned {got} predictions for {n} instances")
        return [self._read(p) for p in preds]

    def _read(self, pred: Any) -> np.ndarray | str:
        """One prediction: the chosen output as an array, or the service's reason it failed (a string)."""
        if not isinstance(pred, dict):
            raise CxrError(f"teacher at {self.http.shown} returned a prediction that is not an object "
                           f"({type(pred).__name__})")
        if "error" in pred:
            err = pred["error"]
            if isinstance(err, dict):
                err = err.get("description") or err.get("message") or json.dumps(err)
            return str(err)[:1024] or "the service reported an error without a description"
        if self.output_key not in pred:
            raise CxrError(f"teacher at {self.http.shown} returned no {self.output_key!r} (it returned: "
                           f"{', '.join(sorted(pred)) or 'nothing'}); choose one with --output-key")
        try:
            a = np.asarray(pred[self.output_key], dtype=np.float32)
        except (TypeError, ValueError):
            raise CxrError(f"teacher at {self.http.shown}: output {self.output_key!r} is not a numeric "
                           "array") from None
        return self.check_shape(a, f"{self.output_key!r}")


# ------------------------------------------------------------------------------------------- the server's side
class InstanceError(ValueError):
    """An instance the server cannot use; answered as ``{"error": {"description": …}}`` for that instance."""


def instance_bytes(instance: Any) -> bytes:
    """The image bytes of one ``{"input_bytes": base64}`` instance (our server reads no URIs: it fetches nothing)."""
    if not isinstance(instance, dict):
        raise InstanceError("an instance must be an object with 'input_bytes'")
    if "input_bytes" not in instance:
        other = sorted(set(instance) & {"gcs_uri", "dicomweb_uri", "prompt_query"})
        raise InstanceError(f"this server reads 'input_bytes' only{' (not ' + ', '.join(other) + ')' if other else ''}")
    data = instance["input_bytes"]
    if not isinstance(data, str):
        raise InstanceError("'input_bytes' must be a base64 string")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InstanceError("'input_bytes' is not valid base64") from None


def prediction(emb: np.ndarray, key: str = DEFAULT_OUTPUT_KEY) -> dict[str, Any]:
    """One prediction as CXR Foundation returns it: a 2-D list (a pooled ``(D,)`` embedding becomes ``1 × D``)."""
    a = np.asarray(emb, dtype=np.float32)
    return {key: (a[None] if a.ndim == 1 else a).tolist()}
