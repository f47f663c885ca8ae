"""Generator of the bad-input corpus: small files that are broken (or unusual) in one specific way each.

Every function writes one file and returns its path. ``generate(out_dir)`` writes one of each into a folder, so the
corpus can also be produced outside the tests: ``python tests/corpus/corpus_files.py /tmp/corpus``.
Nothing here imports cxrdistill: the files are made with PIL, pydicom, numpy and the standard library only, so a bug
in the tool cannot hide a bug in its own test inputs.
"""
from __future__ import annotations

import csv
import os
import pickle
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

SIZE = 32
HOSTILE = "<script>alert(1)</script>"
CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
                   "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis",
                   "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"]


def _parent(path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def gradient(size: int = SIZE, seed: int = 0) -> np.ndarray:
    """A deterministic uint8 test image with every row different (so inversions and flips are visible)."""
    yy, xx = np.mgrid[0:size, 0:size]
    rng = np.random.default_rng(seed)
    return np.clip(4 * yy + 2 * xx + rng.integers(0, 20, (size, size)), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------- images
def png(path, arr: np.ndarray | None = None, **pnginfo: str) -> Path:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for k, v in pnginfo.items():
        info.add_text(k, v)
    Image.fromarray(gradient() if arr is None else arr).save(_parent(path), pnginfo=info)
    return Path(path)


def truncated_png(path) -> Path:
    """The first half of a valid PNG: the header opens, the pixel data ends early."""
    p = png(path)
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 2])
    return p


def truncated_jpeg(path) -> Path:
    from PIL import Image

    p = _parent(path)
    Image.fromarray(gradient()).save(p, format="JPEG", quality=90)
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 3])
    return p


def zero_byte(path) -> Path:
    p = _parent(path)
    p.write_bytes(b"")
    return p


def text_as_png(path) -> Path:
    """A CSV saved with a .png extension (a common mix-up)."""
    p = _parent(path)
    p.write_text("patient,finding\np1,effusion\n", encoding="utf-8")
    return p


def png16(path) -> Path:
    """16-bit grayscale PNG using the range 1000..1000+64*k (12-bit detector data in a 16-bit container)."""
    from PIL import Image

    a = 1000 + gradient().astype(np.uint16) * 12
    Image.fromarray(a).save(_parent(path))  # uint16 → mode I;16
    return Path(path)


def png16_expected() -> np.ndarray:
    """What the documented handling (min/max scaled to 0..255) gives for :func:`png16`."""
    a = (1000 + gradient().astype(np.float64) * 12)
    return np.clip((a - a.min()) * (255.0 / (a.max() - a.min())) + 0.5, 0, 255).astype(np.uint8)


def rgba_png(path) -> Path:
    """RGBA PNG: grey in the colour channels, a half-transparent alpha that must be ignored."""
    from PIL import Image

    g = gradient()
    a = np.stack([g, g, g, np.full_like(g, 60)], axis=-1)
    Image.fromarray(a).save(_parent(path))
    return Path(path)


def cmyk_jpeg(path) -> Path:
    """CMYK JPEG (as some scanners and print workflows write): K carries the image, CMY are zero."""
    from PIL import Image

    g = gradient()
    z = np.zeros_like(g)
    Image.fromarray(np.stack([z, z, z, 255 - g], axis=-1), mode="CMYK").save(_parent(path), format="JPEG",
                                                                            quality=95)
    return Path(path)


def bomb_png(path, side: int = 10_000) -> Path:
    """A real decompression bomb: a valid 8-bit PNG of ``side``² black pixels (100 Mpx) in ~100 KB of zlib data.
    Written chunk by chunk, so building it never holds the decoded image in memory."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte 0 + black pixels
    idat = []
    block = row * 200
    for _ in range(side // 200):
        idat.append(comp.compress(block))
    idat.append(comp.flush())
    data = b"".join(idat)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    p = _parent(path)
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return p


def dicom(path, arr: np.ndarray | None = None, photometric: str = "MONOCHROME2", patient: str = "Doe^John",
          patient_id: str = "PID-0001", bits: int = 12) -> Path:
    """A single-frame DICOM radiograph (uint16 pixels, ``bits`` stored) with identifying header fields."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    a = (gradient() if arr is None else arr).astype(np.uint16) * (2 ** (bits - 8))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.PatientName, ds.PatientID, ds.Modality = patient, patient_id, "DX"
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = a.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelData = a.tobytes()
    ds.save_as(_parent(path), enforce_file_format=True)
    return Path(path)


def truncated_dicom(path) -> Path:
    p = dicom(path)
    b = p.read_bytes()
    p.write_bytes(b[: len(b) - 700])  # header intact, pixel data cut
    return p


def dicom_without_pixels(path) -> Path:
    """A DICOM object with no image (e.g. a structured report exported next to the radiographs)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.PatientID, ds.Modality = "PID-0002", "SR"
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.save_as(_parent(path), enforce_file_format=True)
    return Path(path)


# ----------------------------------------------------------------------------------------------------- tables
def write_csv(path, header: list[str], rows: list[list[object]], encoding: str = "utf-8") -> Path:
    p = _parent(path)
    with open(p, "w", newline="", encoding=encoding) as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return p


def chexpert_row(path: str, sex="Female", age=60, fl="Frontal", appa="AP", effusion="1.0") -> list:
    labels = [""] * 14
    labels[CHEXPERT_HEADER.index("Pleural Effusion") - 5] = effusion
    return [path, sex, age, fl, appa] + labels


def chexpert_csv(path, n: int = 4, header: list[str] | None = None, encoding: str = "utf-8",
                 changes: dict[tuple[int, str], object] | None = None) -> Path:
    """A CheXpert-layout train.csv with ``n`` frontal images of ``n`` patients. ``changes``: {(row, column): value},
    rows numbered as a spreadsheet shows them (the header is row 1, the first image row 2)."""
    header = list(header or CHEXPERT_HEADER)
    rows = [dict(zip(CHEXPERT_HEADER, chexpert_row(f"CheXpert-v1.0-small/train/patient{k + 1:05d}/study1/"
                                                   f"view1_frontal.jpg", sex="Female" if k % 2 else "Male",
                                                   effusion=str(float(k % 2))))) for k in range(n)]
    for (row, col), v in (changes or {}).items():
        rows[row - 2][col] = v
    return write_csv(path, header, [[r.get(h, "") for h in header] for r in rows], encoding=encoding)


def cohort_table(path, n: int = 8, **columns) -> Path:
    """A cohort Parquet table (GUIDE layout) of ``n`` images of ``n`` patients; ``columns`` replace or add columns."""
    import pandas as pd

    df = pd.DataFrame({"image_id": [f"img{k}" for k in range(n)], "patient_id": [f"p{k}" for k in range(n)],
                       "path": [f"img{k}.png" for k in range(n)], "view": ["PA"] * n, "frontal": [True] * n,
                       "sex": ["F", "M"] * (n // 2), "age": [50.0 + k for k in range(n)], "race": [None] * n,
                       "split": (["train", "val", "test", "train"] * n)[:n],
                       "pleural_effusion": [float(k % 2) for k in range(n)]})
    for k, v in columns.items():
        df[k] = v
    p = _parent(path)
    df.to_parquet(p, index=False)
    return p


def predictions_csv(path, n: int = 60, seed: int = 0, **columns) -> Path:
    """A predictions table (GUIDE layout) with one task ``effusion``: informative scores, two sexes."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(int)
    df = pd.DataFrame({"image_id": [f"img{k}" for k in range(n)], "sex": ["F", "M"] * (n // 2),
                       "race": (["White", "Black", "Asian"] * n)[:n], "y_effusion": y,
                       "p_effusion": np.round(np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1), 4)})
    for k, v in columns.items():
        df[k] = v
    p = _parent(path)
    df.to_csv(p, index=False)
    return p


# ----------------------------------------------------------------------------------------------- pickles / arrays
class _Marker:
    """Unpickling this object runs ``touch MARKER``: the payload of a malicious pickle."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def malicious_pickle(path, marker: Path) -> Path:
    """A raw pickle (what old ``torch.save`` / ``pickle.dump`` checkpoints are) whose loading creates ``marker``."""
    p = _parent(path)
    p.write_bytes(pickle.dumps({"state_dict": {"weight": _Marker(marker)}}, protocol=2))
    return p


def malicious_torch_zip(path, marker: Path) -> Path:
    """A zip-format ``torch.save`` checkpoint with a real tensor and the same payload inside."""
    import torch

    p = _parent(path)
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "extra": _Marker(marker)}, p)
    return p


def pickled_npy(path, marker: Path) -> Path:
    """An ``.npy`` holding an object array (i.e. a pickle) whose loading creates ``marker``."""
    a = np.empty(2, dtype=object)
    a[0], a[1] = _Marker(marker), np.zeros(4)
    p = _parent(path)
    np.save(p, a, allow_pickle=True)
    return p


def npz(path, **arrays) -> Path:
    p = _parent(path)
    np.savez(p, **arrays)
    return p


def yaml_text(path, text: str) -> Path:
    p = _parent(path)
    p.write_text(text, encoding="utf-8")
    return p


# ------------------------------------------------------------------------------------------------------ all
def generate(out_dir) -> list[Path]:
    """One file of each kind in ``out_dir`` (payload markers point into ``out_dir``; nothing here loads them)."""
    d = Path(out_dir)
    marker = d / "MARKER_if_this_exists_code_ran"
    made = [
        truncated_png(d / "images/truncated.png"), truncated_jpeg(d / "images/truncated.jpg"),
        zero_byte(d / "images/zero.png"), text_as_png(d / "images/not_an_image.png"), png16(d / "images/16bit.png"),
        rgba_png(d / "images/rgba.png"), cmyk_jpeg(d / "images/cmyk.jpg"), bomb_png(d / "images/bomb.png"),
        dicom(d / "images/monochrome1.dcm", photometric="MONOCHROME1"), truncated_dicom(d / "images/truncated.dcm"),
        dicom_without_pixels(d / "images/report.dcm"),
        chexpert_csv(d / "tables/unknown_sex.csv", changes={(3, "Sex"): "X"}),
        chexpert_csv(d / "tables/latin1.csv", encoding="latin-1", changes={(2, "Sex"): "Fémale"}),
        predictions_csv(d / "tables/nan_scores.csv", p_effusion=[np.nan] + [0.5] * 59),
        malicious_pickle(d / "checkpoints/evil.pt", marker), pickled_npy(d / "embeddings/evil.npy", marker),
        npz(d / "embeddings/no_key.npz", features=np.zeros(8, np.float32)),
        yaml_text(d / "configs/malformed.yaml", "teacher:\n  kind: [api\n"),
    ]
    return made


if __name__ == "__main__":
    for f in generate(sys.argv[1] if len(sys.argv) > 1 else "corpus"):
        print(f)
