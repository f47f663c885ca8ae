"""Constants and helpers shared by the teacher tests (a module with a unique name, importable from each test)."""
from __future__ import annotations

import logging

import numpy as np

TEACHER = "timm:resnet10t"  # random init, seeded: the plumbing does not need a trained model
SIZE = 32
TOKEN = "tok-Zq81-sEcReT-4711"
N_PNG, N_DCM, N_JPG = 56, 8, 8


def assert_same_store(a, b, ids=None):
    """Same ids and the same embeddings. Batches are composed differently after a resume or retry, and a CPU
    convolution's float32 result can depend on the batch size in the last bits, so equality is to 1e-5."""
    if ids is None:  # the whole stores
        ids = sorted(a.ids)
        assert sorted(b.ids) == ids
    else:  # a holds exactly ``ids``, b holds them among others
        ids = sorted(ids)
        assert sorted(a.ids) == ids and not b.missing(ids)
    np.testing.assert_allclose(a.get(ids), b.get(ids), rtol=1e-4, atol=1e-5)


class LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record):
        self.records.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.records)
