"""The cohort table: one row per image, harmonized across datasets (see docs/formats.md, "Cohort table")."""
from __future__ import annotations

# The 14 CheXpert observations, snake_case; other datasets map their labels onto these names where they match
# and keep their own snake_case names otherwise (e.g. NIH ``infiltration``, ``emphysema``).
CHEXPERT_FINDINGS: list[str] = [
    "no_finding",
    "enlarged_cardiomediastinum",
    "cardiomegaly",
    "lung_opacity",
    "lung_lesion",
    "edema",
    "consolidation",
    "pneumonia",
    "atelectasis",
    "pneumothorax",
    "pleural_effusion",
    "pleural_other",
    "fracture",
    "support_devices",
]

# Columns every cohort table has (labels come after these).
CORE_COLUMNS: list[str] = ["image_id", "patient_id", "path", "view", "frontal", "sex", "age", "race", "split"]
OPTIONAL_META: list[str] = ["study_id", "ethnicity", "dataset"]
ATTRIBUTES: list[str] = ["sex", "race", "age"]
VIEWS = {"PA", "AP", "LATERAL"}
SEXES = {"F", "M"}
SPLITS = {"train", "val", "test"}


def label_columns(df) -> list[str]:
    """Label columns of a cohort table: every column that is not metadata (floats 1/0/-1/NaN)."""
    meta = set(CORE_COLUMNS) | set(OPTIONAL_META)
    return [c for c in df.columns if c not in meta and not c.startswith(("true_", "synth_", "_"))]
