"""Fixtures for the synthetic-cohort tests: one small dataset generated once per session (tiny images)."""
from __future__ import annotations

import pytest

from cxrdistill import synth


@pytest.fixture(scope="session")
def mixed_dataset(tmp_path_factory):
    """A 40-image, 48-px dataset of the ``mixed`` scenario: (directory, train.csv DataFrame)."""
    out = tmp_path_factory.mktemp("synth") / "mixed"
    csv = synth.generate(out, n=40, size=48, seed=3, scenario="mixed", workers=1)
    return out, csv
