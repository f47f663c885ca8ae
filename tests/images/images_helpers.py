"""Helpers for the images tests: real files of every kind, written with PIL and pydicom."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def gradient(h: int = 48, w: int = 64) -> np.ndarray:
    return (np.arange(h * w) % 256).astype(np.uint8).reshape(h, w)


def png_with_declared_size(path: Path, w: int, h: int) -> None:
    """A tiny, valid-looking PNG whose IHDR declares w×h pixels (a decompression bomb's header)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def write_dicom(path: Path, arr: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int = 12,
                window: tuple[float, float] | None = None, rescale: tuple[float, float] | None = None,
                transfer_syntax=None, pixel_bytes: bytes | None = None, frames: int = 1) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = "PATIENT-SECRET-123"
    ds.Modality = "CR"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    ds.PixelData = pixel_bytes if pixel_bytes is not None else np.tile(arr.astype("<u2"), (frames, 1)).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
