"""cxrdistill: distil black-box chest X-ray foundation models into small open students, audit and reduce their bias.

The main steps are functions at the package top (defined in :mod:`cxrdistill.api`), loaded on first use so that
``import cxrdistill`` stays fast and torch is imported only by the steps that need it::

    import cxrdistill
    csv = cxrdistill.synthesize("data/synth", n=400, size=64, scenario="underdiagnosis")
    result = cxrdistill.audit("predictions.csv", attributes=["sex", "race"])
"""

__version__ = "0.1.0"

__all__ = ["synthesize", "synthetic_cohort", "synthetic_images", "import_cohort", "split_cohort", "embed", "distill",
           "probe", "evaluate", "audit", "compare", "run_study", "__version__"]


def __getattr__(name: str) -> object:
    if name in __all__:
        from cxrdistill import api

        return getattr(api, name)
    raise AttributeError(f"module 'cxrdistill' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
