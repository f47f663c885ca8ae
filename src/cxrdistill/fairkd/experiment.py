"""The fair-distillation study — "Can the student be fairer than its teacher?"

Per synthetic scenario (a planted bias):

1. a cohort (``synth.render_batch``; ``n`` images at ``size`` px, seeded by ``data_seed``), split by patient: the
   patients of the generator's *test phase* (where a shortcut flips) form the test split, the others train / val;
2. a **biased black-box teacher**: a CxrNet trained (shared Trainer, multi-label BCE on the observed labels of every
   finding) on the training split, saved, and reopened through the teacher interface (``torch:`` teacher) — the
   students only ever see its embeddings of the images;
3. per seed, a **plain-KD student** (``Distill``) and one student per fairness-aware objective (:data:`FAIR_KD`),
   identical in architecture, data, KD loss, optimiser and seed — only the objective differs;
4. **one evaluation protocol for everyone** (teacher included): a linear probe (L2 logistic regression,
   :func:`~cxrdistill.fairkd.heads.fit_logistic`) fitted on the model's train-split embeddings with the observed
   labels, scored on the test split (eval ``probe`` — the numbers of the main table); students with their own head
   (``fairdi``, ``mmd``) are also scored by that head (eval ``head``). Every score is measured against the observed
   labels **and** the ground truth (``true_*``), so label bias and model bias can be told apart. Subgroup metrics come
   from the audit (``evaluation.audit.subgroup_summary`` through ``fairness.metrics.tidy_rows``); the feature-space
   KS audit (``evaluation.features.audit_embeddings``, PCA modes, Benjamini–Yekutieli) and the attribute probe
   (``evaluation.probes.probe_attributes``, grouped CV by patient) run on the test-split embeddings.

Teacher and cohort are built once per scenario (the seeds vary the students' initialisation and data order), so the
paired test against plain KD pairs students trained on the same data from the same seed.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from cxrdistill import synth
from cxrdistill.cohorts.policies import build_targets
from cxrdistill.cohorts.schema import CHEXPERT_FINDINGS
from cxrdistill.cohorts.splits import hashed_splits, patient_hash
from cxrdistill.errors import CxrError, InputError
from cxrdistill.evaluation.features import audit_embeddings
from cxrdistill.evaluation.probes import probe_attributes
from cxrdistill.evaluation.quick import mean_auc
from cxrdistill.fairkd import FAIR_KD
from cxrdistill.fairkd.heads import fit_logistic
from cxrdistill.fairkd.summary import (EMB_METRICS, GOAL, KD, LABELS, SECTION_TITLE, TEACHER, TEST_NAME,  # noqa: F401
                                       TESTED, per_seed, report_section, summarize, write_outputs)
from cxrdistill.fairness.metrics import tidy_rows
from cxrdistill.images.preprocess import MEAN, STD
from cxrdistill.losses.kd import build_kd_loss
from cxrdistill.models.network import CxrNet, count_params, save_model
from cxrdistill.models.students import create_student
from cxrdistill.storage.config import deep_merge, non_empty, validate
from cxrdistill.storage.io import atomic_path, stable_hash, write_parquet
from cxrdistill.synth import SCENARIOS
from cxrdistill.teachers.local import torch_teacher
from cxrdistill.training.inputs import ImageBatches
from cxrdistill.training.methods.distill import Distill, DistillModel, target_stats
from cxrdistill.training.methods.supervised import Supervised
from cxrdistill.training.run_dir import open_run
from cxrdistill.training.trainer import TrainConfig, Trainer

DEFAULT_SCENARIOS = ("acquisition", "shortcut", "manifestation", "mixed", "underdiagnosis")
DEFAULT_TASKS = ("pleural_effusion", "cardiomegaly", "pneumothorax", "edema", "consolidation", "support_devices")


# ------------------------------------------------------------------------------------------------------- config
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TeacherSpec(_Strict):
    backbone: str = "resnet18"
    embed_dim: int = Field(128, ge=2)
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(2e-3, gt=0)


class StudentSpec(_Strict):
    backbone: str = "mobilenetv3_small_050"
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(1e-2, gt=0)
    loss: str = "mse_cosine"
    standardize: bool = True


class FairKDStudyConfig(_Strict):
    """Everything the measurement needs (unknown keys are errors)."""

    scenarios: list[str] = Field(default_factory=lambda: list(DEFAULT_SCENARIOS))
    seeds: Annotated[list[int], non_empty("seed")] = Field(default_factory=lambda: [0, 1, 2])
    n: int = Field(1500, ge=60)
    size: int = Field(48, ge=16)
    attribute: str = Field("auto", description="sex | race | auto (each scenario's own attribute)")
    methods: list[str] = Field(default_factory=lambda: ["balanced", "adversarial", "fairdi", "mmd"])
    method_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    tasks: list[str] = Field(default_factory=lambda: list(DEFAULT_TASKS))
    label_policy: str = "u-ignore"
    data_seed: int = 0
    val_fraction: float = Field(0.12, gt=0, lt=0.5, description="share of train-phase patients used for validation")
    distill_extra: int = Field(1500, ge=0, description="extra unlabelled images of the same scenario (another seed) "
                               "added to the students' distillation set: the teacher embeds them, nobody labels them")
    teacher: TeacherSpec = Field(default_factory=TeacherSpec)
    student: StudentSpec = Field(default_factory=StudentSpec)
    probe_l2: float = Field(1e-2, gt=0, description="L2 of the linear evaluation probe (standardised embeddings)")
    ks_modes: int = Field(8, ge=1, description="PCA modes tested by the feature-space KS audit")
    ks_correction: Literal["by", "bh", "bonferroni", "none"] = "by"
    alpha: float = Field(0.05, gt=0, lt=1)
    attr_probe_folds: int = Field(3, ge=2)
    workers: int = Field(2, ge=1, description="processes rendering the synthetic images")
    jobs: int = Field(1, ge=1, description="scenarios run in parallel processes (each with threads / jobs threads)")
    device: str = Field("cpu", description="cpu | cuda | auto (CUDA when present)")


def make_config(config: FairKDStudyConfig | dict | None = None, *, what: str = "", path: str | Path | None = None,
                synthetic: bool = True, **overrides: Any) -> FairKDStudyConfig:
    """A validated config from a config object / dict plus keyword overrides (None values are ignored; a dict merges
    into a dict). ``what``: the key these settings sit under, named in errors (a study's ``fair_distill.options``);
    ``path``: the YAML file they came from, named in errors; ``synthetic``: see :func:`_check_names`."""
    base = config.model_dump() if isinstance(config, FairKDStudyConfig) else dict(config or {})
    base = deep_merge(base, {k: v for k, v in overrides.items() if v is not None})
    cfg = validate(FairKDStudyConfig, base, path=path, prefix=what, docs="docs/fairkd.md")
    _check_names(cfg, synthetic=synthetic)
    return cfg


def _check_names(cfg: FairKDStudyConfig, synthetic: bool = True) -> None:
    """Method names must exist; for the synthetic measurement also its scenario, task and attribute names (a study's
    own cohort brings its own tasks and attribute, checked against its table)."""
    for m in cfg.methods:
        FAIR_KD.get(m)
    bad = set(cfg.method_params) - set(cfg.methods)
    if bad:
        raise InputError(f"method_params for method(s) not run: {sorted(bad)}",
                         hint=f"methods: {', '.join(cfg.methods)}")
    if not synthetic:
        return
    for s in cfg.scenarios:
        if s not in SCENARIOS:
            raise InputError(f"unknown scenario {s!r}", hint=f"use one of: {', '.join(SCENARIOS.names())}")
    for t in cfg.tasks:
        if t not in CHEXPERT_FINDINGS:
            raise InputError(f"unknown task {t!r}", hint=f"use findings of: {', '.join(CHEXPERT_FINDINGS)}")
    if cfg.attribute not in ("auto", "sex", "race"):
        raise InputError(f"unknown attribute {cfg.attribute!r}", hint="use sex, race or auto")


# ------------------------------------------------------------------------------------------------------- cohort
@dataclass
class Cohort:
    """One scenario's images and table, split, group codes and targets (aligned rows)."""

    scenario: str
    images: np.ndarray               # uint8 (n, size, size)
    meta: pd.DataFrame               # cohort table (+ split)
    attribute: str
    group_names: list[str]
    g: np.ndarray                    # int64 (n,)
    y_all: np.ndarray                # observed targets of every finding (teacher training)
    findings: list[str]
    y: dict[str, np.ndarray]         # label source → (n, K) targets of the study tasks
    tasks: list[str]
    idx: dict[str, np.ndarray] = field(default_factory=dict)  # split → row indices
    extra: np.ndarray | None = None  # uint8 (m, size, size): the unlabelled distillation pool
    extra_g: np.ndarray | None = None

    @property
    def images_all(self) -> np.ndarray:
        """The cohort's images followed by the unlabelled pool's (what the teacher embeds)."""
        return self.images if self.extra is None else np.concatenate([self.images, self.extra])

    def distill_rows(self, train_rows: np.ndarray) -> np.ndarray:
        """Rows of ``images_all`` a student distils on: the training split and the whole unlabelled pool."""
        m = 0 if self.extra is None else len(self.extra)
        return np.concatenate([train_rows, len(self.images) + np.arange(m)]).astype(np.int64)

    def counts(self) -> dict[str, dict[str, int]]:
        return {s: {n: int((self.g[ix] == k).sum()) for k, n in enumerate(self.group_names)}
                for s, ix in self.idx.items()}


def split_by_phase(meta: pd.DataFrame, val_fraction: float, seed: int) -> np.ndarray:
    """``test`` for the generator's test-phase patients; the train-phase patients split train / val (seeded)."""
    pats = meta["patient_id"].astype(str).to_numpy()
    if "synth_shortcut_phase" not in meta:  # not a phased cohort: 70 / val / rest by patient hash
        return hashed_splits(pats, (0.7 - val_fraction, val_fraction, 0.3), seed)
    phase = meta["synth_shortcut_phase"].astype(str).to_numpy()
    return np.where(phase == "test", "test", np.where(patient_hash(pats, seed) < val_fraction, "val", "train")
                    ).astype(object)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    """An array as .npy, written atomically (no pickles)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, arr if arr.dtype == np.uint8 else arr.astype(np.float32), allow_pickle=False)


def _render(scenario: str, n: int, size: int, seed: int, cfg: FairKDStudyConfig, cache: Path | None,
            log: Callable[[str], None]) -> tuple[np.ndarray, pd.DataFrame]:
    """``synth.render_batch``, cached as images.npy + meta.parquet."""
    key = stable_hash({"scenario": scenario, "n": n, "size": size, "seed": seed, "v": 1})
    d = cache / f"{scenario}_{key}" if cache else None
    if d is not None and (d / "images.npy").exists() and (d / "meta.parquet").exists():
        return np.load(d / "images.npy", allow_pickle=False), pd.read_parquet(d / "meta.parquet")
    t0 = time.perf_counter()
    images, meta = synth.render_batch(n, size, seed, scenario, workers=cfg.workers)
    log(f"[{scenario}] rendered {len(images)} images at {size} px in {time.perf_counter() - t0:.0f} s")
    if d is not None:
        d.mkdir(parents=True, exist_ok=True)
        _save_npy(d / "images.npy", images)
        write_parquet(meta, d / "meta.parquet")
    return images, meta


def prepare_cohort(scenario: str, cfg: FairKDStudyConfig, cache: Path | None, log: Callable[[str], None]) -> Cohort:
    """Render (or reload) the scenario's cohort (and unlabelled pool); derive split, groups and targets."""
    images, meta = _render(scenario, cfg.n, cfg.size, cfg.data_seed, cfg, cache, log)
    meta = meta.reset_index(drop=True).copy()
    meta["split"] = split_by_phase(meta, cfg.val_fraction, cfg.data_seed)
    attr = cfg.attribute if cfg.attribute != "auto" else str(meta["synth_attribute"].iloc[0])
    vals = meta[attr]
    if vals.isna().any():
        raise CxrError(f"{int(vals.isna().sum())} synthetic rows have no {attr}")
    names = sorted(map(str, vals.unique()))
    g = vals.astype(str).map({v: i for i, v in enumerate(names)}).to_numpy(np.int64)
    findings = [f for f in CHEXPERT_FINDINGS if f in meta.columns]
    y_all = build_targets(meta, findings, cfg.label_policy)
    y = {"observed": build_targets(meta, cfg.tasks, cfg.label_policy),
         "true": meta[[f"true_{t}" for t in cfg.tasks]].to_numpy(np.float32)}
    idx = {s: np.flatnonzero(meta["split"].to_numpy() == s) for s in ("train", "val", "test")}
    for s, ix in idx.items():
        if len(ix) == 0:
            raise CxrError(f"[{scenario}] the {s} split is empty; increase n (now {cfg.n})")
    c = Cohort(scenario, images, meta, attr, names, g, y_all, findings, y, list(cfg.tasks), idx)
    if cfg.distill_extra:
        # the pool comes from the training population: the generator's test-phase patients (where a shortcut's
        # association flips) are dropped, so the students never see the test distribution, even unlabelled
        m = int(np.ceil(cfg.distill_extra / 0.65))
        ex, exm = _render(scenario, m, cfg.size, cfg.data_seed + 7919, cfg, cache, log)
        keep = np.flatnonzero(exm["synth_shortcut_phase"].astype(str).to_numpy() != "test")[:cfg.distill_extra]
        c.extra = ex[keep]
        c.extra_g = exm[attr].iloc[keep].astype(str).map({v: i for i, v in enumerate(names)}).fillna(-1) \
            .to_numpy(np.int64)
    return c


# ------------------------------------------------------------------------------------------------------- models
def _batches(images, rows, **arrays):
    return ImageBatches(images, rows, **arrays)


def forward_all(net, images: np.ndarray, batch_size: int = 256, device: str = "cpu") -> tuple[np.ndarray,
                                                                                              np.ndarray | None]:
    """(embedding (n, D), logits (n, K) or None) of a CxrNet over every image, normalised as in training."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    data = _batches(images, np.arange(len(images)))
    net = net.to(device).eval()
    embs, logits = [], []
    with torch.no_grad():
        for s in range(0, len(data), batch_size):
            out = net(data.get_batch(np.arange(s, min(len(data), s + batch_size)))["x"].to(device))
            e = out["embedding"]
            embs.append((e.mean(1) if e.ndim == 3 else e).float().cpu())
            if "logits" in out:
                logits.append(out["logits"].float().cpu())
    return torch.cat(embs).numpy(), (torch.cat(logits).numpy() if logits else None)


def train_teacher(c: Cohort, cfg: FairKDStudyConfig, root: Path, log: Callable[[str], None]) -> tuple[np.ndarray,
                                                                                                      dict]:
    """Train the scenario's biased teacher on its training split; return its embeddings of every image (through the
    ``torch:`` teacher interface) and a summary. Cached under ``root/teachers``."""
    import torch

    spec = cfg.teacher
    d = root / "teachers" / c.scenario
    run = open_run(d, "fairkd-teacher", {"cohort": [c.scenario, cfg.n, cfg.size, cfg.data_seed, cfg.val_fraction,
                                                    cfg.label_policy, cfg.distill_extra],
                                         "teacher": spec.model_dump(), "v": 1}, {},
                   summary="teacher.json", on_change="restart", exclusive=True,
                   is_done=lambda info: (d / "embeddings.npy").exists())
    if run.done is not None:
        log(f"[{c.scenario}] teacher: cached")
        return np.load(d / "embeddings.npy", allow_pickle=False), run.done
    tr, va = c.idx["train"], c.idx["val"]
    torch.manual_seed(cfg.data_seed)
    net = CxrNet(spec.backbone, in_chans=1, embed_dim=spec.embed_dim, num_classes=len(c.findings),
                 head_on="embedding")
    tcfg = TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, schedule="cosine",
                       warmup_epochs=0.3, seed=cfg.data_seed, progress=False, device=cfg.device,
                       eval_batch_size=256, deterministic=False)
    t0 = time.perf_counter()
    trainer = Trainer(net, Supervised(), _batches(c.images, tr, y=c.y_all[tr]), _batches(c.images, va, y=c.y_all[va]),
                      tcfg, run_dir=d / "run", resume=True)
    hist = trainer.fit()
    secs = time.perf_counter() - t0
    net = trainer.model.cpu().eval()
    path = d / "teacher.safetensors"
    save_model(net, path, teacher={"name": f"fairkd-{c.scenario}-teacher", "image_size": cfg.size,
                                   "embedding_shape": [spec.embed_dim], "tasks": c.findings, "mean": MEAN, "std": STD,
                                   "scenario": c.scenario, "backbone": spec.backbone})
    teacher = torch_teacher(str(path), image_size=cfg.size)  # from here on the teacher is a black box
    T = teacher.embed(c.images_all)  # cohort rows first, then the unlabelled pool
    _, logits = forward_all(net, c.images)
    te = c.idx["test"]
    info = {"key": run.key, "n_embedded": int(len(T)), "backbone": spec.backbone, "params": count_params(net),
            "embedding_dim": spec.embed_dim,
            "epochs": len(hist), "best_epoch": trainer.best_epoch, "train_seconds": round(secs, 1),
            "own_head_test_auc": {k: mean_auc(c.y_all[te] if k == "observed" else
                                              c.meta[[f"true_{f}" for f in c.findings]].to_numpy(float)[te],
                                              logits[te]) for k in LABELS}}
    _save_npy(d / "embeddings.npy", T)
    run.finish(info)
    shutil.rmtree(d / "run", ignore_errors=True)  # the trainer's checkpoints: only a killed run needs them
    log(f"[{c.scenario}] teacher {spec.backbone}: {secs:.0f} s, own-head test AUC "
        f"{info['own_head_test_auc']['observed']:.3f} (observed labels)")
    return T, info


def make_method(name: str, cfg: FairKDStudyConfig, attribute: str):
    if name == KD:
        return Distill()
    return FAIR_KD.create(name, attribute=attribute, **cfg.method_params.get(name, {}))


def train_student(c: Cohort, T: np.ndarray, method: str, seed: int, cfg: FairKDStudyConfig, root: Path,
                  log: Callable[[str], None], teacher_key: str) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Distil the teacher's embeddings into one student with ``method`` (``kd`` = plain KD); return its embeddings
    of every image, its head's logits (or None) and a summary. Cached (and resumable) under ``root/runs``."""
    import torch

    spec = cfg.student
    params = cfg.method_params.get(method, {})
    d = root / "runs" / c.scenario / method / f"seed{seed}"
    run = open_run(d, "fairkd-student", {"method": method, "params": params, "student": spec.model_dump(),
                                         "seed": seed, "tasks": c.tasks, "attribute": c.attribute, "v": 1},
                   {"teacher": teacher_key}, summary="result.json", on_change="restart", exclusive=True,
                   is_done=lambda info: (d / "embeddings.npy").exists())
    if run.done is not None:
        lg = np.load(d / "logits.npy", allow_pickle=False) if (d / "logits.npy").exists() else None
        return np.load(d / "embeddings.npy", allow_pickle=False), lg, run.done
    tr, va = c.distill_rows(c.idx["train"]), c.idx["val"]
    t_mean = t_std = None
    if spec.standardize:
        t_mean, t_std = target_stats(T[tr])
    torch.manual_seed(seed)
    student = create_student(spec.backbone, (T.shape[1],))
    model = DistillModel(student, build_kd_loss(spec.loss, dim=T.shape[1]), (T.shape[1],), t_mean, t_std)
    m = make_method(method, cfg, c.attribute)
    y = c.y["observed"]
    if c.extra is not None:  # the pool has groups but no labels
        y = np.concatenate([y, np.full((len(c.extra), y.shape[1]), np.nan, np.float32)])
    g = c.g if c.extra is None else np.concatenate([c.g, c.extra_g])
    if (g[tr] < 0).any():
        raise CxrError(f"[{c.scenario}] unlabelled pool images without a {c.attribute}")
    images = c.images_all
    train = _batches(images, tr, t=T[tr], y=y[tr], g=g[tr])
    val = _batches(images, va, t=T[va], y=y[va], g=g[va])
    tcfg = TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, schedule="cosine",
                       warmup_epochs=0.3, seed=seed, progress=False, device=cfg.device, restore_best=False,
                       eval_batch_size=256, deterministic=False)
    t0 = time.perf_counter()
    hist = Trainer(model, m, train, val, tcfg, run_dir=d / "run", resume=True).fit()
    secs = time.perf_counter() - t0
    export = getattr(m, "export_student", None)
    st = export(model) if export else model.export_student()
    E, logits = forward_all(st, c.images, device=cfg.device)
    if logits is not None:
        _save_npy(d / "logits.npy", logits)
    _save_npy(d / "embeddings.npy", E)  # then result.json (run.finish), the mark of a finished run
    last = hist[-1] if hist else {}
    info = {"key": run.key, "method": method, "seed": seed, "params": params, "seconds": round(secs, 1),
            "epochs": len(hist), "student_params": count_params(st), "backbone": spec.backbone,
            "last": {k: v for k, v in last.items() if isinstance(v, (int, float))}}
    run.finish(info)
    shutil.rmtree(d / "run", ignore_errors=True)  # the trainer's checkpoints: only a killed run needs them
    log(f"[{c.scenario}] {method} seed {seed}: {secs:.0f} s")
    return E, logits, info


# ------------------------------------------------------------------------------------------------------- metrics
def probe_scores(E: np.ndarray, c: Cohort, l2: float) -> np.ndarray:
    """Test-split logits of a linear probe fitted on the train-split embeddings with the observed labels."""
    tr, te = c.idx["train"], c.idx["test"]
    mu, sd = E[tr].mean(0), E[tr].std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    W, b = fit_logistic((E[tr] - mu) / sd, c.y["observed"][tr], l2=l2)
    return ((E[te] - mu) / sd) @ W.T + b


def score_rows(scores: np.ndarray, c: Cohort, **keys: Any) -> list[dict]:
    """Tidy subgroup rows (overall / per-group AUC, worst-group AUC, gap, ES-AUC, PSD per task) for both label
    sources."""
    te = c.idx["test"]
    groups = np.array(c.group_names, dtype=object)[c.g[te]]
    rows = []
    for labels in (lab for lab in LABELS if lab in c.y):  # a real cohort has no ground truth
        rows += tidy_rows(c.y[labels][te], scores, groups, c.tasks, c.group_names, labels=labels, **keys)
    return rows


def embedding_rows(E: np.ndarray, c: Cohort, cfg: FairKDStudyConfig, **keys: Any) -> list[dict]:
    """Feature-space KS audit and attribute probe on the test-split embeddings (tidy rows)."""
    te = c.idx["test"]
    meta = c.meta.iloc[te].reset_index(drop=True)
    X = E[te].astype(np.float64)
    fa = audit_embeddings(X, meta, attributes=[c.attribute], modes=cfg.ks_modes, variance=0.999,
                          correction=cfg.ks_correction, alpha=cfg.alpha, tsne=False, seed=0)
    pr = probe_attributes(X, meta, [c.attribute], folds=cfg.attr_probe_folds, seed=0,
                          groups=meta["patient_id"].astype(str).to_numpy(), n_boot=0, repeats=1)
    vals = {"ks_significant": fa.summary["n_significant"], "ks_tests": fa.summary["n_tests"],
            "attribute_probe_auc": pr[c.attribute]["auc"]}
    return [{**keys, "eval": "embedding", "labels": "(none)", "task": "(embedding)", "group": "(summary)",
             "metric": k, "value": float(v), "n": int(len(te)), "n_pos": 0} for k, v in vals.items()]


def evaluate(E: np.ndarray, logits: np.ndarray | None, c: Cohort, cfg: FairKDStudyConfig, **keys: Any) -> list[dict]:
    rows = score_rows(probe_scores(E, c, cfg.probe_l2), c, eval="probe", **keys)
    if logits is not None:
        rows += score_rows(logits[c.idx["test"]], c, eval="head", **keys)
    return rows + embedding_rows(E, c, cfg, **keys)


TIDY_COLUMNS = ["scenario", "attribute", "seed", "model", "eval", "labels", "task", "group", "metric", "value", "n",
                "n_pos"]


# ------------------------------------------------------------------------------------------------------- the study
def run_study(scenarios: list[str] | tuple[str, ...] | str | None = None, seeds: list[int] | None = None, *,
              n: int | None = None, size: int | None = None, attribute: str | None = None,
              methods: list[str] | None = None, out: str | Path | None = None,
              config: FairKDStudyConfig | dict | None = None, log: Callable[[str], None] | None = None,
              **overrides: Any) -> pd.DataFrame:
    """Run the measurement and return the tidy results (columns ``TIDY_COLUMNS``).

    With ``out``, also writes ``fairkd_results.parquet`` (tidy), ``fairkd_per_seed.parquet``,
    ``fairkd_summary.parquet``, ``fairkd_table.md`` / ``.csv``, ``fairkd.json``, ``fairkd_tradeoff.png`` and
    ``report.html``; trained teachers and students are cached there (a re-run reuses them, a killed run resumes).
    Without ``out`` everything happens in a temporary directory. ``overrides``: any :class:`FairKDStudyConfig`
    field (``teacher={"epochs": 2}``, ``student={"backbone": "resnet10t"}``, ``tasks=[…]``, …).
    """
    log = log or (lambda s: None)
    if isinstance(scenarios, str):
        scenarios = [scenarios]
    cfg = make_config(config, scenarios=list(scenarios) if scenarios else None, seeds=seeds, n=n, size=size,
                      attribute=attribute, methods=methods, **overrides)
    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="fairkd-")
        root = Path(tmp.name)
    else:
        root = Path(out)
        root.mkdir(parents=True, exist_ok=True)
    try:
        tidy, meta = _run(cfg, root, log)
        if out is not None:
            write_outputs(tidy, meta, root)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return tidy


def _run(cfg: FairKDStudyConfig, root: Path, log: Callable[[str], None]) -> tuple[pd.DataFrame, dict]:
    meta: dict[str, Any] = {"config": cfg.model_dump(), "scenarios": {}, "test": TEST_NAME, "goal": GOAL}
    t_start = time.perf_counter()
    results: dict[str, tuple[list[dict], dict]] = {}
    if cfg.jobs > 1:
        results = _run_parallel(cfg, root, log, t_start)
    else:
        for scen in cfg.scenarios:
            results[scen] = scenario_rows(scen, cfg, root, log)
            log(f"[{scen}] done ({time.perf_counter() - t_start:.0f} s so far)")
    rows: list[dict] = []
    for scen in cfg.scenarios:
        r, m = results[scen]
        rows += r
        meta["scenarios"][scen] = m
    meta["seconds"] = round(time.perf_counter() - t_start, 1)
    return pd.DataFrame(rows, columns=TIDY_COLUMNS), meta


def _run_parallel(cfg: FairKDStudyConfig, root: Path, log: Callable[[str], None],
                  t_start: float) -> dict[str, tuple[list[dict], dict]]:
    """``jobs`` worker processes: first every scenario's cohort and teacher, then the students of every (scenario,
    seed) — small units, so that both cores stay busy to the end."""
    import concurrent.futures as cf
    import multiprocessing as mp

    import torch

    threads = max(1, torch.get_num_threads() // cfg.jobs)
    cd, rt = cfg.model_dump(), str(root)
    teach: dict[str, tuple[list[dict], dict]] = {}
    studs: dict[tuple[str, int], tuple[list[dict], list[dict]]] = {}
    with cf.ProcessPoolExecutor(max_workers=cfg.jobs, mp_context=mp.get_context("spawn")) as ex:
        futs = {ex.submit(_teacher_worker, scen, cd, rt, threads): scen for scen in cfg.scenarios}
        for f in cf.as_completed(futs):
            teach[futs[f]] = f.result()
        log(f"teachers done ({time.perf_counter() - t_start:.0f} s so far)")
        units = {ex.submit(_students_worker, scen, int(seed), cd, rt, threads): (scen, int(seed))
                 for scen in cfg.scenarios for seed in cfg.seeds}
        for f in cf.as_completed(units):
            studs[units[f]] = f.result()
            log(f"[{units[f][0]}] seed {units[f][1]} done ({time.perf_counter() - t_start:.0f} s so far)")
    out = {}
    for scen in cfg.scenarios:
        trows, notes = teach[scen]
        rows, sinfo = [], []
        for seed in cfg.seeds:
            rows += [{**r, "seed": int(seed)} for r in trows]
            r, si = studs[(scen, int(seed))]
            rows += r
            sinfo += si
        out[scen] = (rows, {**notes, "students": sinfo})
    return out


def _worker_log():
    import sys

    return lambda s: print(s, file=sys.stderr, flush=True)


def _teacher_worker(scen: str, cfg_dict: dict, root: str, threads: int) -> tuple[list[dict], dict]:
    """A worker: the scenario's cohort and teacher (cached on disk), and the teacher's evaluation rows."""
    import torch

    torch.set_num_threads(threads)
    cfg, log = FairKDStudyConfig.model_validate(cfg_dict), _worker_log()
    c = prepare_cohort(scen, cfg, Path(root) / "cache", log)
    T, tinfo = train_teacher(c, cfg, Path(root), log)
    rows = evaluate(T[:len(c.images)], None, c, cfg, scenario=scen, attribute=c.attribute, model=TEACHER, seed=-1)
    return rows, {"attribute": c.attribute, "groups": c.group_names, "counts": c.counts(),
                  "teacher": {k: v for k, v in tinfo.items() if k != "key"}}


def _students_worker(scen: str, seed: int, cfg_dict: dict, root: str, threads: int) -> tuple[list[dict],
                                                                                               list[dict]]:
    """A worker: every student of one (scenario, seed) (the cohort and teacher are read from the cache)."""
    import torch

    torch.set_num_threads(threads)
    cfg, log = FairKDStudyConfig.model_validate(cfg_dict), _worker_log()
    c = prepare_cohort(scen, cfg, Path(root) / "cache", log)
    T, tinfo = train_teacher(c, cfg, Path(root), log)
    return _students(c, T, tinfo, seed, cfg, Path(root), log)


def _students(c: Cohort, T: np.ndarray, tinfo: dict, seed: int, cfg: FairKDStudyConfig, root: Path,
              log: Callable[[str], None]) -> tuple[list[dict], list[dict]]:
    rows, sinfo = [], []
    for m in [KD] + [m for m in cfg.methods if m != KD]:
        E, logits, info = train_student(c, T, m, int(seed), cfg, root, log, tinfo["key"])
        sinfo.append({k: info[k] for k in ("method", "seed", "seconds", "epochs", "student_params")})
        rows += evaluate(E, logits, c, cfg, scenario=c.scenario, attribute=c.attribute, model=m, seed=int(seed))
    return rows, sinfo


def cohort_rows(c: Cohort, T: np.ndarray, tinfo: dict, cfg: FairKDStudyConfig, root: Path,
                log: Callable[[str], None]) -> tuple[list[dict], list[dict]]:
    """The teacher's evaluation rows (repeated per seed, so every seed has its reference) and every student of every
    seed → (tidy rows, student summaries). ``T``: the teacher's embeddings, cohort rows first."""
    teacher_rows = evaluate(T[:len(c.images)], None, c, cfg, scenario=c.scenario, attribute=c.attribute,
                            model=TEACHER, seed=-1)
    rows: list[dict] = []
    sinfo: list[dict] = []
    for seed in cfg.seeds:
        rows += [{**r, "seed": int(seed)} for r in teacher_rows]
        r, si = _students(c, T, tinfo, int(seed), cfg, root, log)
        rows += r
        sinfo += si
    return rows, sinfo


def scenario_rows(scen: str, cfg: FairKDStudyConfig, root: Path, log: Callable[[str], None]) -> tuple[list[dict],
                                                                                                     dict]:
    """Cohort, teacher, every student of every seed, and their evaluation → (tidy rows, the scenario's notes)."""
    c = prepare_cohort(scen, cfg, root / "cache", log)
    T, tinfo = train_teacher(c, cfg, root, log)
    rows, sinfo = cohort_rows(c, T, tinfo, cfg, root, log)
    notes = {"attribute": c.attribute, "groups": c.group_names, "counts": c.counts(),
             "teacher": {k: v for k, v in tinfo.items() if k != "key"}, "students": sinfo}
    return rows, notes
