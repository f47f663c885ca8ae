"""`embed --teacher kserve:URL` against a stand-in written here from the Open Inference Protocol (KServe v2 / Triton)
REST spec — ``GET /v2/health/ready``, ``GET /v2/models/{name}`` (inputs/outputs with name, datatype, shape; -1 for a
variable dimension), ``POST /v2/models/{name}/infer`` with ``{"inputs": [{name, shape, datatype, data}]}`` (data
flattened row-major) answered by ``{"model_name", "outputs": [{name, shape, datatype, data}]}`` and errors as
``{"error": "…"}`` — and the same cohort through our own server's native, Vertex and KServe routes."""
from __future__ import annotations

import hashlib
import json
import threading

import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cxrdistill.cli import main
from cxrdistill.errors import CxrError
from cxrdistill.storage.store import EmbeddingStore
from cxrdistill.teachers.client import embed_cohort
from cxrdistill.teachers.server import BackgroundServer

from teacher_testlib import SIZE, TOKEN, assert_same_store

MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


class KServeStandIn:
    """One model, ``encoder``, taking ``pixel_values`` (``layout`` NCHW FP32 3-channel, or NHWC UINT8 1-channel) and
    returning ``embedding`` [-1, 16] and ``logits`` [-1, 2]; the first infer request gets a 503."""

    def __init__(self, layout: str):
        self.layout = layout
        self.dtype, self.shape = (("FP32", [-1, 3, SIZE, SIZE]) if layout == "NCHW"
                                  else ("UINT8", [-1, SIZE, SIZE, 1]))
        self.received: list[np.ndarray] = []
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        self.app = app = FastAPI()

        @app.get("/v2/health/ready")
        async def ready():
            return {}

        @app.get("/v2/models/encoder")
        async def metadata():
            return {"name": "encoder", "versions": ["3"], "platform": "pytorch_libtorch",
                    "inputs": [{"name": "pixel_values", "datatype": self.dtype, "shape": self.shape}],
                    "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, 16]},
                                {"name": "logits", "datatype": "FP32", "shape": [-1, 2]}]}

        @app.post("/v2/models/encoder/infer")
        async def infer(request: Request):
            body = await request.body()
            with self.lock:
                self.bodies.append(body)
                if len(self.bodies) == 1:
                    return JSONResponse({"error": "model is loading"}, status_code=503)
            doc = json.loads(body)
            (t,) = doc["inputs"]
            shape = t["shape"]
            if t["name"] != "pixel_values" or t["datatype"] != self.dtype or shape[1:] != self.shape[1:]:
                return JSONResponse({"error": f"bad input {t['name']} {t['datatype']} {shape}"}, status_code=400)
            x = np.asarray(t["data"], np.float32).reshape(shape)
            self.received.append(x)
            emb = self.embed(x)
            wanted = [o["name"] for o in doc.get("outputs") or []] or ["embedding", "logits"]
            outs = {"embedding": emb, "logits": emb[:, :2]}
            return {"model_name": "encoder", "model_version": "3", "id": doc.get("id", ""),
                    "outputs": [{"name": n, "datatype": "FP32", "shape": list(outs[n].shape),
                                 "data": outs[n].ravel().tolist()} for n in wanted]}

    @staticmethod
    def embed(x: np.ndarray) -> np.ndarray:
        flat = x.reshape(len(x), -1)
        return np.stack([flat[:, k::16].mean(1) for k in range(16)], 1).astype(np.float32)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_kserve_sends_the_declared_tensor_and_stores_the_named_output(cohort, pixel_index, tmp_path, layout):
    s = KServeStandIn(layout)
    with BackgroundServer(s.app) as srv:
        url = f"kserve:{srv.url}/v2/models/encoder"
        with pytest.raises(CxrError, match="outputs embedding, logits; choose one with --output-key"):
            embed_cohort(url, cohort["table"], cohort["root"], tmp_path / "x", progress=False)
        norm = "imagenet" if layout == "NCHW" else None
        r = embed_cohort(url, cohort["table"], cohort["root"], tmp_path / "s", output_key="embedding", normalize=norm,
                         batch_size=16, progress=False)
        if layout == "NHWC":
            with pytest.raises(CxrError, match="UINT8 pixels; --normalize imagenet applies to FP32"):
                embed_cohort(url, cohort["table"], cohort["root"], tmp_path / "y", output_key="embedding",
                             normalize="imagenet", progress=False)
    assert r.embedded == len(cohort["df"]) and r.failures == {"HTTP 503": 1}
    st = EmbeddingStore.open(tmp_path / "s")
    assert st.ids == list(cohort["df"].image_id) and st.item_shape == (16,)
    assert st.info["api"] == {"protocol": "kserve", "url": f"{srv.url}/v2/models/encoder", "output_key": "embedding"}
    x = np.concatenate(s.received)
    # the tensor is the client's preprocessed pixels, as declared: normalised 3-channel NCHW, or raw NHWC
    gray = x[:, 0] if layout == "NCHW" else x[..., 0]
    if layout == "NCHW":
        px = np.rint((gray * STD[0] + MEAN[0]) * 255)
        np.testing.assert_allclose((px[:, None] / 255 - MEAN[None, :, None, None]) / STD[None, :, None, None], x,
                                   atol=1e-5)
    else:
        px = gray
    assert {hashlib.sha1(p.astype(np.uint8).tobytes()).hexdigest() for p in px} == set(pixel_index)
    ids = [pixel_index[hashlib.sha1(p.astype(np.uint8).tobytes()).hexdigest()] for p in px]
    np.testing.assert_allclose(st.get(ids), s.embed(x), rtol=1e-6)
    for body in s.bodies:
        assert not any(secret.encode() in body for secret in cohort["secrets"])


def test_native_vertex_and_kserve_routes_store_the_same_numbers(cohort, clean_store, make_server, tmp_path, capsys,
                                                                monkeypatch):
    """`teacher serve` answers all three protocols; the same cohort through each gives the same store."""
    monkeypatch.setenv("TEACHER_TOKEN", TOKEN)
    srv, _, _ = make_server(token=TOKEN)
    name = clean_store.info["name"]
    specs = {"native": srv.url, "vertex": f"vertex:{srv.url}/predict", "kserve": f"kserve:{srv.url}/v2/models/{name}"}
    stores = {}
    for k, spec in specs.items():
        main(["embed", "--teacher", spec, "--token-env", "TEACHER_TOKEN", "--cohort", str(cohort["table"]),
              "--images-root", str(cohort["root"]), "--out", str(tmp_path / k), "--batch-size", "16", "--no-progress"])
        res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert res["embedded"] == len(cohort["df"]) and res["status"] == "ok"
        stores[k] = EmbeddingStore.open(tmp_path / k)
        assert stores[k].ids == list(cohort["df"].image_id)
    for k in ("vertex", "kserve"):
        assert_same_store(stores[k], stores["native"])
    assert_same_store(stores["native"], clean_store)
    assert stores["vertex"].info["preprocess"] == {"size": None, "max_side": 1024, "mode": "keep-aspect"}


def test_serve_takes_vertex_custom_container_routes_from_the_environment(cohort, make_server, monkeypatch, tmp_path):
    """Vertex AI starts a custom container with AIP_PREDICT_ROUTE / AIP_HEALTH_ROUTE: the server answers there."""
    import httpx

    monkeypatch.setenv("AIP_PREDICT_ROUTE", "/v1/endpoints/cxr:predict")
    monkeypatch.setenv("AIP_HEALTH_ROUTE", "/ping")
    srv, _, _ = make_server(token=TOKEN)
    assert httpx.get(srv.url + "/ping").status_code == 200  # health checks need no token
    assert httpx.post(srv.url + "/predict", json={"instances": []}).status_code == 404
    r = httpx.post(srv.url + "/v1/endpoints/cxr:predict", json={"instances": []},
                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    res = embed_cohort(f"vertex:{srv.url}/v1/endpoints/cxr:predict", cohort["table"], cohort["root"], tmp_path / "s",
                       token=TOKEN, splits=["val"], size=SIZE, progress=False)
    assert res.embedded == 24
