"""Pretraining methods, by name (:data:`PRETRAINERS`): each recipe turns a backbone and a pretraining cohort into
what the shared trainer needs (model, registered :class:`~cxrdistill.training.method.Method`, data) and, afterwards,
the backbone-only network that is saved. ``supervised`` (alias ``supervised_meta``): view / sex / age prediction
(:mod:`.supervised_meta`); ``barlow``: Barlow Twins (:mod:`.barlow`). A new method = one module + one recipe.
``finetune_aux`` (:mod:`.finetune_aux`) is the fine-tuning method of the study's grid, with auxiliary heads."""
from cxrdistill.pretraining.methods import barlow, finetune_aux, supervised_meta  # noqa: F401  (register the Methods)
from cxrdistill.pretraining.methods.recipes import PRETRAINERS, Recipe, backbone_only  # noqa: F401
