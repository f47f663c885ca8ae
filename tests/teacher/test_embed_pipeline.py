"""The extraction loop decodes ahead of the requests, and the HTTP stack does not search sys.path on every request."""
from __future__ import annotations

import asyncio
import importlib.util
import sys

import numpy as np
import pytest
from PIL import Image

from cxrdistill.teachers.client import Answer, _extract


class _Sink:
    def __init__(self):
        self.ids, self.embs = [], []

    def append(self, ids, emb):
        self.ids += ids
        self.embs.append(emb)


class _SlowApi:
    """Answers a request only once the batch after it has been decoded and encoded too (or gives up after 5 s)."""

    def __init__(self):
        self.encoded = 0
        self.sent = 0
        self.ahead = []  # batches already encoded when each request was answered

    def encode(self, pixels):
        self.encoded += 1
        return pixels

    async def embed(self, pixels):
        k = self.sent
        self.sent += 1
        for _ in range(500):
            if self.encoded >= min(k + 2, 4):
                break
            await asyncio.sleep(0.01)
        self.ahead.append(self.encoded)
        return Answer.all_of(pixels.reshape(len(pixels), -1)[:, :3].astype(np.float32))


def test_next_batch_is_decoded_while_a_request_is_with_the_teacher(tmp_path):
    items = []
    for k in range(8):
        Image.fromarray(np.full((8, 8), k, np.uint8)).save(tmp_path / f"{k}.png")
        items.append((f"i{k}", tmp_path / f"{k}.png"))
    api, sink = _SlowApi(), _Sink()
    done = asyncio.run(_extract(api, items, sink, batch_size=2, concurrency=1, size=8, max_side=None, mode="resize",
                                on_error="raise", progress=lambda n: None, skipped=[]))
    assert done == 8 and sink.ids == [f"i{k}" for k in range(8)]  # stored in cohort order
    np.testing.assert_array_equal(np.concatenate(sink.embs)[:, 0], np.arange(8))
    # with one request at a time, the batch after it was already prepared when the answer came
    assert api.ahead[:3] == [2, 3, 4], api.ahead


@pytest.mark.skipif(importlib.util.find_spec("sniffio") is not None, reason="sniffio is installed")
def test_missing_sniffio_fails_fast_and_httpcore_assumes_asyncio():
    import cxrdistill.teachers.transport  # noqa: F401  (records the absence)
    from httpcore._synchronization import current_async_library

    assert "sniffio" in sys.modules and sys.modules["sniffio"] is None
    with pytest.raises(ImportError):
        import sniffio  # noqa: F401

    async def which():
        return current_async_library()

    assert asyncio.run(which()) == "asyncio"
