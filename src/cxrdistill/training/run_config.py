"""YAML configuration of the distill / probe / finetune stages: pydantic models (unknown keys are errors), the
package defaults in ``cxrdistill/configs/<stage>.yaml``, a user file on top, then command-line options and
``--set dotted.key=value`` overrides (values parsed as YAML: ``--set train.lr=3e-4``, ``--set loss='{mse: 1}'``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cxrdistill.errors import CxrError, InputError, config_problems
from cxrdistill.training.trainer import TrainConfig

M = TypeVar("M", bound=BaseModel)


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


def default_yaml(stage: str) -> Path:
    from importlib.resources import files

    return Path(str(files("cxrdistill") / "configs" / f"{stage}.yaml"))


def read_yaml(path: str | Path) -> dict[str, Any]:
    from cxrdistill.storage.io import read_yaml_mapping

    return read_yaml_mapping(path)


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = [p for p in key.split(".") if p]
    if not parts:
        raise CxrError(f"empty config key in --set {key!r}")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def parse_set(item: str) -> tuple[str, Any]:
    """``key.sub=value`` → (key.sub, YAML-parsed value)."""
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise CxrError(f"--set needs key=value (e.g. train.lr=3e-4), got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(stage: str, path: str | Path | None = None, options: dict[str, Any] | None = None,
                sets: list[str] | None = None):
    """Package defaults ← ``path`` ← ``options`` (dotted keys; None values skipped) ← ``sets``, validated."""
    model = STAGES[stage]
    data: dict[str, Any] = {}
    dflt = default_yaml(stage)
    if dflt.exists():
        data = read_yaml(dflt)
    if path:
        data = deep_merge(data, read_yaml(path))
    for k, v in (options or {}).items():
        if v is not None:
            set_dotted(data, k, v)
    for item in sets or []:
        set_dotted(data, *parse_set(item))
    return validate(model, data, path)


def validate(model: type[M], data: dict[str, Any], path=None, docs: str = "docs/distill.md") -> M:
    """``data`` as ``model``, or one InputError listing what is wrong (and the page that documents the keys)."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise InputError(f"invalid config: {config_problems(e)}", path=path,
                         hint=f"see the documented keys in {docs}") from None


def to_yaml(cfg: BaseModel) -> str:
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
