"""YAML configuration of the distill / probe / finetune stages: pydantic models (unknown keys are errors), the
package defaults in ``cxrdistill/configs/<stage>.yaml``, a user file on top, then command-line options and
``--set dotted.key=value`` overrides (values parsed as YAML: ``--set train.lr=3e-4``, ``--set loss='{mse: 1}'``),
layered and validated by the one loader, :mod:`cxrdistill.storage.config`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cxrdistill.storage.config import load
from cxrdistill.storage.io import read_yaml_mapping
from cxrdistill.training.trainer import TrainConfig

#: the page that documents the keys of the three stages
DOCS = "docs/distill.md"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StudentConfig(_Strict):
    name: str = Field("mobilenetv3_small_050", description="a STUDENTS preset or any timm model name")
    weights: str | None = Field(None, description="local timm-named weights file (ImageNet or in-domain)")
    proj_hidden: int | None = Field(None, description="projector hidden width (None: the preset's, or linear)")
    token_mode: Literal["pool", "tokens"] = "pool"


class EvalConfig(_Strict):
    splits: list[str] = Field(default_factory=lambda: ["test"], description="splits to predict and score")
    n_boot: int = Field(1000, ge=0)
    target_fpr: float = Field(0.2, gt=0, lt=1)
    aggregate: Literal["image", "study"] = "image"
    seed: int = 0


class DistillConfig(_Strict):
    student: StudentConfig = Field(default_factory=StudentConfig)
    loss: str | dict[str, float] = Field("mse_cosine", description="a KD loss, or a weighted mix {name: weight}")
    loss_options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="keyword args per loss")
    standardize: bool = Field(True, description="standardise teacher targets per dimension (train-split stats)")
    size: int = Field(64, ge=8, description="image size (px) the student sees")
    preprocess: str = "resize"
    augment: str | None = Field(None, description="augmentation name (None: none — targets are for the raw image)")
    method: str = Field("distill", description="training method (METHODS); fairness-aware ones plug in here")
    method_options: dict[str, Any] = Field(default_factory=dict)
    tasks: list[str] | None = Field(None, description="tasks for the validation probe and logit_kd")
    label_policy: str | dict[str, Any] = "u-ignore"
    logit_kd_probe: TrainConfig = Field(default_factory=lambda: TrainConfig(
        epochs=20, batch_size=150, lr=1e-3, optimizer="adam", weight_decay=0.0, schedule="constant", progress=False))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=10, batch_size=64, lr=1e-2, warmup_epochs=0.5))


class ProbeConfig(_Strict):
    head: str = Field("linear", description="linear | mlp3 | mlp5 (HEADS)")
    pool: Literal["mean", "flatten"] = "mean"
    standardize: bool = True
    loss: str = Field("bce", description="bce | aucm (CLS_LOSSES)")
    loss_options: dict[str, Any] = Field(default_factory=dict)
    monitor: str = "val_loss"
    tasks: list[str] | None = None
    label_policy: str | dict[str, Any] = "u-ignore"
    size: int | None = Field(None, description="image size when embeddings come from a model (default: its own)")
    eval: EvalConfig = Field(default_factory=EvalConfig)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(
        epochs=20, batch_size=150, lr=1e-3, optimizer="adam", weight_decay=0.0, schedule="constant"))


class FinetuneConfig(_Strict):
    init: str = Field("random", description="CKPT (cxrdistill model) | random | imagenet:FILE")
    backbone: str = Field("resnet18", description="timm backbone for random / imagenet:FILE init")
    head_on: Literal["embedding", "features"] | None = None
    size: int = Field(64, ge=8)
    preprocess: str = "resize"
    augment: str | None = "light"
    loss: str = "bce"
    loss_options: dict[str, Any] = Field(default_factory=dict)
    monitor: str = "val_auc"
    tasks: list[str] | None = None
    label_policy: str | dict[str, Any] = "u-ignore"
    eval: EvalConfig = Field(default_factory=EvalConfig)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=10, batch_size=64, lr=3e-4))


STAGES: dict[str, type[BaseModel]] = {"distill": DistillConfig, "probe": ProbeConfig, "finetune": FinetuneConfig}


def stage_defaults(stage: str) -> dict[str, Any]:
    """The package defaults of a stage (``configs/<stage>.yaml``), the bottom layer of its configuration."""
    from importlib.resources import files

    dflt = Path(str(files("cxrdistill") / "configs" / f"{stage}.yaml"))
    return read_yaml_mapping(dflt) if dflt.exists() else {}


def load_config(stage: str, path: str | Path | None = None, options: dict[str, Any] | None = None,
                sets: list[str] | None = None):
    """Package defaults ← ``path`` ← ``options`` (dotted keys; None values skipped) ← ``sets``, validated."""
    return load(STAGES[stage], defaults=stage_defaults(stage), path=path, options=options, sets=sets, docs=DOCS)


def to_yaml(cfg: BaseModel) -> str:
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
