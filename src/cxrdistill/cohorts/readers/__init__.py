"""Dataset readers: each turns a dataset's own metadata files into a validated cohort table.

``READERS.create("nih", csv="Data_Entry_2017_v2020.csv.gz")`` → DataFrame. A new dataset = one module here that
registers a function with ``@READERS.register("name")`` + its name in the ``plugins`` list below (imported on the
first lookup).
"""
from __future__ import annotations

from cxrdistill.registry import Registry

READERS = Registry("cohort reader", plugins=("cxrdistill.cohorts.readers.chexpert", "cxrdistill.cohorts.readers.mimic",
                                            "cxrdistill.cohorts.readers.nih", "cxrdistill.cohorts.readers.padchest"))

__all__ = ["READERS"]
