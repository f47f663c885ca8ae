"""ERM: the plain masked-BCE objective (Vapnik 1999) — the baseline every fairness method is compared with."""
from __future__ import annotations

from cxrdistill.fairness.base import FairMethod, register_method


@register_method("erm")
class ERM(FairMethod):
    """Empirical risk minimisation, with the shared group-aware validation and model selection."""
