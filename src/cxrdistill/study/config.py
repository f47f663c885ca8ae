"""The study configuration (one YAML file, validated by pydantic; misspelled keys are errors)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cxrdistill.errors import CxrError
from cxrdistill.storage.config import ConfigError, layers, set_dotted, validate
from cxrdistill.teachers.pretrain import TeacherPretrainConfig
from cxrdistill.training.run_config import DistillConfig, ProbeConfig

#: the page that documents the study configuration
DOCS = "docs/study.md, 'Study configuration'"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _validate_section(model, data: dict, prefix: str) -> None:
    """Validate a section with another area's config model, reporting the full dotted key on error."""
    try:
        validate(model, data, prefix=prefix, docs=DOCS)
    except ConfigError as e:
        raise ValueError(e.problems) from None


def _required(section: BaseModel, kind: str, needs: dict[str, tuple[str, str]]) -> None:
    """The setting each value of ``kind`` needs, ``{value: (field, message)}``: the message when it is not set."""
    field, message = needs.get(getattr(section, kind), (None, ""))
    if field and not getattr(section, field):
        raise ValueError(message)


class SynthCfg(_M):
    n: int = Field(2400, ge=50)
    scenario: str = "mixed"
    seed: int = 0
    workers: int = 2


class CohortCfg(_M):
    source: Literal["synth", "chexpert", "mimic", "nih", "padchest", "table"] = "synth"
    synth: SynthCfg = SynthCfg()
    reader_args: dict[str, Any] = Field(default_factory=dict,
                                        description="options of `cohort import SOURCE` (csv, demographics, …)")
    table: str | None = Field(None, description="an existing cohort parquet (source: table)")
    images_root: str | None = None
    frontal_only: bool = True
    max_images: int | None = None


class SplitCfg(_M):
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    stratify: list[str] = Field(default_factory=lambda: ["sex"])
    seed: int = 0
    from_file: str | None = None
    keep_existing: bool = False
    use_synth_split: bool = Field(True, description="synthetic cohorts: use the generator's split.csv (it confines "
                                  "a planted shortcut to training data)")


def _pretrain_cfg():
    return TeacherPretrainConfig


class PoolCfg(_M):
    """Images used only for distillation (an unlabelled pool): embedded once through the teacher like the cohort,
    never labelled, never in a probe, audit or fairness stage. ``synth``: more images of the synthetic cohort's
    population (its scenario, another seed); ``table``: a cohort table (``image_id``, ``path``; labels ignored);
    ``dir``: every PNG/JPEG/DICOM file under a directory."""

    source: Literal["none", "synth", "table", "dir"] = "none"
    n: int = Field(0, ge=0, description="synth: images to render (e.g. 3x the labelled train split)")
    seed: int = Field(1, description="synth: the generator's seed (differs from the cohort's, so images differ)")
    table: str | None = Field(None, description="table: a cohort table (Parquet/CSV) with image_id and path")
    dir: str | None = Field(None, description="dir: a directory of images (searched recursively)")
    images_root: str | None = Field(None, description="table: the root of its paths (default: the table's folder)")
    max_images: int | None = Field(None, ge=1, description="use at most this many (a seeded sample)")

    @model_validator(mode="after")
    def _check(self):
        _required(self, "source", {
            "synth": ("n", "distill_pool.n: give the number of images to render (source: synth)"),
            "table": ("table", "distill_pool.table: give the cohort table of the pool (source: table)"),
            "dir": ("dir", "distill_pool.dir: give the directory of the pool's images (source: dir)")})
        return self


class TeacherCfg(_M):
    """Where the black-box teacher comes from. ``pretrain``: train the default "foundation model" on a separate
    synthetic pretraining cohort and (``serve``) query it over HTTP on loopback, exactly as a remote API."""

    kind: Literal["pretrain", "api", "files", "local"] = "pretrain"
    pretrain: dict[str, Any] = Field(default_factory=dict, description="options of `cxrdistill teacher pretrain`")
    serve: bool = Field(True, description="serve the local/pretrained teacher on loopback and query it over HTTP")
    url: str | None = None
    token_env: str | None = None
    local: str | None = Field(None, description="torch:CHECKPOINT or timm:NAME[:WEIGHTS]")
    files: str | None = Field(None, description="an embedding store, or a directory of CXR Foundation files")
    files_format: str = "cxr-foundation-npz"
    pool: str = "mean"
    concurrency: int = 2
    batch_size: int = 32

    @model_validator(mode="after")
    def _check(self):
        _validate_section(_pretrain_cfg(), self.pretrain, "teacher.pretrain")
        _required(self, "kind", {k: (k2, f"teacher.{k2} is required when teacher.kind is {k}")
                                 for k, k2 in (("api", "url"), ("local", "local"), ("files", "files"))})
        return self


class StageSwitch(_M):
    enabled: bool = True
    options: dict[str, Any] = Field(default_factory=dict)


class AuditCfg(_M):
    target_fpr: float = 0.2
    n_boot: int = 500
    alpha: float = 0.05
    correction: Literal["by", "bh", "bonferroni", "none"] = "by"
    margin: float = Field(0.02, gt=0, description="equivalence margin of 'inherited' (AUC units for AUC gaps)")
    pca_variance: float = 0.95
    modes: int | None = 4
    probe_folds: int = 3
    probe_repeats: int = 2
    tsne: bool = True


class FairnessCfg(_M):
    enabled: bool = True
    attribute: str | None = Field(None, description="default: the synthetic scenario's attribute, else the first")
    options: dict[str, Any] = Field(default_factory=dict, description="`cxrdistill fair` settings (methods, seeds…)")


class StudyConfig(_M):
    name: str = "study"
    seed: int = 0
    jobs: int = Field(1, ge=1, le=16, description="stages run at once, each in its own process with cores / jobs "
                      "threads (2 on a 2-core CPU; 1 on a GPU, where stages would share the device)")
    size: int = Field(64, ge=16, description="image side in pixels for every model of the study")
    tasks: list[str] = Field(default_factory=lambda: ["pleural_effusion", "cardiomegaly", "pneumothorax", "edema",
                                                      "consolidation", "support_devices"])
    label_policy: str = "u-ones"
    attributes: list[str] = Field(default_factory=lambda: ["sex", "race"])
    cohort: CohortCfg = CohortCfg()
    split: SplitCfg = SplitCfg()
    teacher: TeacherCfg = TeacherCfg()
    distill: dict[str, Any] = Field(default_factory=dict, description="`cxrdistill distill` config (distill.yaml)")
    distill_pool: PoolCfg = PoolCfg()
    probe: dict[str, Any] = Field(default_factory=dict, description="`cxrdistill probe` config (probe.yaml)")
    finetune: StageSwitch = StageSwitch()
    audit: AuditCfg = AuditCfg()
    fairness: FairnessCfg = FairnessCfg()
    fair_distill: StageSwitch = StageSwitch()
    pretraining: StageSwitch = StageSwitch()

    @model_validator(mode="after")
    def _check(self):
        if not self.tasks:
            raise ValueError("tasks: give at least one finding")
        if abs(sum(self.split.fractions) - 1) > 1e-6:
            raise ValueError("split.fractions must sum to 1")

        _validate_section(DistillConfig, self.distill, "distill")
        _validate_section(ProbeConfig, self.probe, "probe")
        if self.fair_distill.enabled and self.fair_distill.options:  # fail now, not after the stages before it
            from cxrdistill.fairkd.on_cohort import make_cohort_config

            try:
                make_cohort_config(self.fair_distill.options, tasks=self.tasks)
            except CxrError as e:
                raise ValueError(getattr(e, "problems", None) or str(e)) from None
        if self.distill_pool.source == "synth" and self.cohort.source != "synth":
            raise ValueError("distill_pool.source: synth renders more of a synthetic cohort's population; with a "
                             f"{self.cohort.source} cohort give a table or dir of unlabelled images")
        if self.cohort.source not in ("synth", "table") and not self.cohort.reader_args:
            raise ValueError(f"cohort.reader_args: give the {self.cohort.source} files (e.g. csv: …)")
        return self


def load_config(path: str | Path | None, overrides: dict | None = None) -> StudyConfig:
    """Read and validate a study YAML, then ``overrides`` (dotted keys, e.g. from ``--set``); errors name the file
    and the offending key."""
    data = layers(path=path)
    for k, v in (overrides or {}).items():
        set_dotted(data, k, v)
    return validate(StudyConfig, data, path=path, docs=DOCS)
