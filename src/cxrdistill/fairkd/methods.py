"""The fairness-aware distillation objectives as training methods: importing this module registers each one as
``<name>`` in :data:`~cxrdistill.fairkd.base.FAIR_KD` and as ``fairkd_<name>`` in the training ``METHODS``
registry (which finds this module by its name)."""
from cxrdistill.fairkd import adversarial, balanced, fairdi, mmd  # noqa: F401  (registration)
