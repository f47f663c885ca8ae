"""Registered training methods. Importing this package registers them all in ``METHODS``."""
from cxrdistill.training.method import METHODS  # noqa: F401
from cxrdistill.training.methods import supervised  # noqa: F401
