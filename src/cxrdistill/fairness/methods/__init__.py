"""The fairness methods, one small file each; importing this package registers them all."""
from cxrdistill.fairness.methods import erm, fairdi, fis, groupdro, resample, swad  # noqa: F401
