"""Fairness-aware distillation of a black-box teacher: objectives that use the sensitive
attribute during training only, each a drop-in replacement for plain KD (``Distill``), by name from :data:`FAIR_KD`
(``balanced``, ``adversarial``, ``fairdi``, ``mmd``; also ``fairkd_<name>`` in the training METHODS registry), and the
measurement behind ``cxrdistill fair-distill-study`` (:mod:`cxrdistill.fairkd.experiment`).
"""
from cxrdistill.fairkd.base import FAIR_KD, FairDistill  # noqa: F401
from cxrdistill.fairkd import adversarial, balanced, fairdi, mmd  # noqa: F401,E402  (register the objectives)
