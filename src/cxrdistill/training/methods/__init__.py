"""Registered training methods. Importing this package registers them all in ``METHODS``."""
from cxrdistill.training.method import METHODS  # noqa: F401
from cxrdistill.training.methods import supervised  # noqa: F401
from cxrdistill.training.methods import distill, finetune, probe  # noqa: F401
from cxrdistill.training.methods import teacher_pretrain  # noqa: F401
