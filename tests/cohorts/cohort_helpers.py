"""Helpers shared by the cohort tests (a uniquely named module, so it never clashes with other areas' files)."""
from __future__ import annotations

import csv
import gzip
from pathlib import Path


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """Plain csv-module read (independent of pandas): header and rows of strings."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, list(reader)


def head_rows(path: Path, n: int) -> tuple[list[str], list[list[str]]]:
    """Header and the first ``n`` rows of a gzipped csv, streamed (cheap even for a large file)."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, [row for _, row in zip(range(n), reader)]


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
                   "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis",
                   "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"]


def chexpert_row(path: str, sex="Female", age=60, fl="Frontal", appa="AP", effusion="", extra=()) -> list:
    """One CheXpert csv row with blank labels except Pleural Effusion."""
    labels = [""] * 14
    labels[CHEXPERT_HEADER.index("Pleural Effusion") - 5] = effusion
    return [path, sex, age, fl, appa] + labels + list(extra)


def listdir_clean(d: Path) -> list[str]:
    """Names in a folder (to check that a failed command left nothing behind, not even a temp file)."""
    return sorted(p.name for p in d.iterdir()) if d.exists() else []
