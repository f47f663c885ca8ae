"""Fair training: ERM and the baselines FairDi is measured against (group-balanced resampling,
GroupDRO, FIS, SWAD), FairDi itself, model selection (overall / worst-group / DTO), a small U-Net for fair
segmentation, and the seeds × methods runner behind ``cxrdistill fair``.

Methods are reachable by name from :data:`FAIR_METHODS` (``erm``, ``resample``, ``groupdro``, ``fis``, ``swad``,
``fairdi``) and from the shared training registry as ``fair_<name>``.
"""
from cxrdistill.fairness.base import FAIR_METHODS, FairMethod, FitResult  # noqa: F401
from cxrdistill.fairness.tasks import FAIR_TASKS  # noqa: F401
from cxrdistill.fairness import methods  # noqa: F401,E402  (registers the methods)
from cxrdistill.fairness import segmentation  # noqa: F401,E402  (registers the ``seg`` task)
