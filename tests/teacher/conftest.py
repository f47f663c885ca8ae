"""Shared fixtures for the teacher tests: a tiny cohort with identifying metadata in its files, a tiny teacher, a
clean reference store, and a real uvicorn server on 127.0.0.1 (started in a thread, always shut down)."""
from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from teacher_testlib import N_DCM, N_JPG, N_PNG, SIZE, TEACHER, LogCapture  # noqa: E402


def _write_dicom(path: Path, arr: np.ndarray, patient: str) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.PatientName = f"Doe^{patient}"
    ds.PatientID = patient
    ds.Modality = "DX"
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (arr.astype(np.uint16) * 16).tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="session")
def cohort(tmp_path_factory):
    """72 images (PNG with a tEXt chunk naming the patient, 16-bit DICOM with PatientName/PatientID, JPEG) under
    identifying file names, and the cohort table. Returns a dict with paths and the identifying strings."""
    from PIL import Image, PngImagePlugin

    root = tmp_path_factory.mktemp("teacher_cohort")
    imgs = root / "images"
    rng = np.random.default_rng(7)
    rows, secrets = [], []
    n = N_PNG + N_DCM + N_JPG
    for k in range(n):
        patient = f"PATIENT{k:04d}-Smith"
        h, w = 40 + k % 5, 48 - k % 3
        yy, xx = np.mgrid[0:h, 0:w]
        arr = np.clip(120 + 60 * np.sin(xx / (3 + k % 7)) + 40 * rng.standard_normal((h, w)) + k, 0, 255)
        arr = arr.astype(np.uint8)
        d = imgs / patient
        d.mkdir(parents=True)
        if k < N_PNG:
            rel = f"{patient}/confidential_{k}_view1_frontal.png"
            info = PngImagePlugin.PngInfo()
            info.add_text("PatientID", patient)
            Image.fromarray(arr).save(imgs / rel, pnginfo=info)
        elif k < N_PNG + N_DCM:
            rel = f"{patient}/confidential_{k}.dcm"
            _write_dicom(imgs / rel, arr, patient)
        else:
            rel = f"{patient}/confidential_{k}.jpg"
            Image.fromarray(arr).save(imgs / rel, quality=95)
        rows.append({"image_id": f"img-{k:04d}-{patient}", "patient_id": patient, "path": rel,
                     "split": ["train", "val", "test"][k % 3]})
        secrets += [patient, f"confidential_{k}", f"img-{k:04d}"]
    df = pd.DataFrame(rows)
    path = root / "cohort.parquet"
    df.to_parquet(path)
    return {"root": imgs, "table": path, "df": df, "secrets": secrets}


@pytest.fixture(scope="session")
def pixel_index(cohort):
    """sha1 of each image's preprocessed pixels → image_id (what the server should receive, and nothing else)."""
    from cxrdistill.images.decode import load_gray
    from cxrdistill.images.preprocess import preprocess

    out = {}
    for i, p in zip(cohort["df"].image_id, cohort["df"].path):
        px = preprocess(load_gray(cohort["root"] / p, draft=2 * SIZE), SIZE)
        out[hashlib.sha1(px.tobytes()).hexdigest()] = i
    assert len(out) == len(cohort["df"])  # every image distinct, so arrivals can be attributed
    return out


@pytest.fixture(scope="session")
def teacher():
    from cxrdistill.teachers.local import resolve_teacher

    return resolve_teacher(TEACHER, image_size=SIZE)


@pytest.fixture(scope="session")
def clean_store(cohort, tmp_path_factory):
    """The reference: the whole cohort embedded in-process (no HTTP), in one uninterrupted run."""
    from cxrdistill.teachers.client import embed_cohort
    from cxrdistill.storage.store import EmbeddingStore

    out = tmp_path_factory.mktemp("clean") / "store"
    res = embed_cohort(TEACHER, cohort["table"], cohort["root"], out, size=SIZE, batch_size=16, concurrency=1,
                       progress=False)
    assert res.embedded == len(cohort["df"])
    return EmbeddingStore.open(out)


@pytest.fixture()
def make_server(teacher, tmp_path):
    """Factory: ``make_server(**create_app kwargs) -> (BackgroundServer, app, LogCapture)``; all stopped at teardown."""
    from cxrdistill.teachers.server import BackgroundServer, create_app

    started = []

    def make(log_level="info", access_log=True, **kw):
        app = create_app(teacher, **kw)
        srv = BackgroundServer(app, log_level=log_level, access_log=access_log)
        cap = LogCapture()  # attached after uvicorn configured its loggers
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).addHandler(cap)
        started.append((srv, cap))
        srv.start()
        return srv, app, cap

    yield make
    for srv, cap in started:
        srv.stop()
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).removeHandler(cap)
