"""Dataset readers: each turns a dataset's own metadata files into a validated cohort table.

``READERS.create("nih", csv="Data_Entry_2017_v2020.csv.gz")`` → DataFrame. A new dataset = one module here that
registers a function with ``@READERS.register("name")`` + one import line below.
"""
from __future__ import annotations

from cxrdistill.registry import Registry

READERS = Registry("cohort reader")

from cxrdistill.cohorts.readers import chexpert, mimic, nih, padchest  # noqa: E402,F401  (registration)

__all__ = ["READERS"]
