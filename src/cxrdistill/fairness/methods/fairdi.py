"""FairDi — Fair Distillation (Masroor et al. 2024, "Fair Distillation: Teaching Fairness from Biased Teachers in
Medical Imaging", arXiv 2411.11939). The paper has no public code and its exact loss is not public; this
is our configurable reading of its three steps (Fig. 2):

0. **pretrain** one model on all training data with the FIS loss (``pretrain_loss="fis"``, or ``"erm"``);
1. **teachers**: for each group k of the sensitive attribute, a copy of the step-0 model fine-tuned on group k's
   training data only (plain task loss; model selection on group k's validation data), so that each teacher is
   "biased" toward — optimised for — its own group. ``teacher_freeze`` says what stays frozen (default
   ``backbone``: only the final classifier layer is re-fitted per group, our reading of the figure's snowflakes);
2. **student**: initialised from the step-0 model (``student_init``), trained on all data with::

       L = λ · τ² · KD(teacher_{a(g_i)}(x_i), student(x_i)) + (1 − λ) · FIS(CE(student(x_i), y_i))

   where KD is the per-label binary KL at temperature τ (:func:`~cxrdistill.losses.binary_kd.binary_kd`; per pixel
   for segmentation) and a(g) the teacher assignment: ``own`` (each sample taught by its own group's teacher — the
   default), ``mean`` (the average of all teachers' probabilities) or an explicit list/dict group → teacher.
   Defaults λ = 0.95, τ = 1.5 (the issue's). The group index is used in training only: the student is an ordinary
   model whose forward takes ``x`` alone.

:meth:`FairDi.fit_student` runs step 2 alone with any teachers (e.g. per-group heads on a black-box teacher's
embeddings, ``teacher_input="t"``), which is how fairness-aware distillation builds on it.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from cxrdistill.errors import CxrError
from cxrdistill.fairness.base import FairMethod, FitResult, register_method
from cxrdistill.fairness.datasets import dataset_groups, subset_dataset
from cxrdistill.fairness.freeze import freeze
from cxrdistill.fairness.methods.erm import ERM
from cxrdistill.fairness.methods.fis import FIS, FISMixin
from cxrdistill.losses.binary_kd import binary_kd
from cxrdistill.losses.fis import FISLoss
from cxrdistill.training.methods.supervised import logits_of
from cxrdistill.training.trainer import TrainConfig

ASSIGNMENTS = ("own", "mean")


@register_method("fairdi")
class FairDi(FISMixin, FairMethod):
    """Step 2's objective as a Method (``training_step``) and the three-step recipe (``fit``)."""

    def __init__(self, lam: float = 0.95, tau: float = 1.5, assignment: str | Sequence[int] | dict = "own",
                 teacher_freeze: str | list[str] = "backbone", student_freeze: str | list[str] = "none",
                 student_init: str = "pretrained", pretrain_loss: str = "fis", student_fis: bool = True,
                 teacher_input: str = "x", pretrain_epochs: int | None = None, teacher_epochs: int | None = None,
                 student_epochs: int | None = None, teacher_lr: float | None = None, min_group_size: int = 8,
                 coef: float = 0.5, temperature: float = 1.0, right_asymptote: float = 1.0, distance: str = "sq_w2",
                 normalize: str = "batch", detach_weights: bool = True, group_batch_size: int = 64,
                 teachers: Sequence[torch.nn.Module] | None = None, **kw):
        super().__init__(**kw)
        if not 0.0 <= lam <= 1.0:
            raise CxrError(f"FairDi lam must be in [0, 1], got {lam}")
        if tau <= 0:
            raise CxrError(f"FairDi tau must be > 0, got {tau}")
        if isinstance(assignment, str) and assignment not in ASSIGNMENTS:
            raise CxrError(f"FairDi assignment must be one of {ASSIGNMENTS} or a group → teacher mapping, "
                           f"got {assignment!r}")
        if student_init not in ("pretrained", "scratch"):
            raise CxrError(f"FairDi student_init must be 'pretrained' or 'scratch', got {student_init!r}")
        if pretrain_loss not in ("fis", "erm"):
            raise CxrError(f"FairDi pretrain_loss must be 'fis' or 'erm', got {pretrain_loss!r}")
        self.lam, self.tau = float(lam), float(tau)
        self.assignment = assignment
        self.teacher_freeze, self.student_freeze = teacher_freeze, student_freeze
        self.student_init, self.pretrain_loss, self.student_fis = student_init, pretrain_loss, bool(student_fis)
        self.teacher_input = teacher_input
        self.pretrain_epochs, self.teacher_epochs, self.student_epochs = pretrain_epochs, teacher_epochs, \
            student_epochs
        self.teacher_lr, self.min_group_size = teacher_lr, int(min_group_size)
        self.fis_kwargs = dict(coef=coef, temperature=temperature, right_asymptote=right_asymptote,
                               distance=distance, normalize=normalize, detach_weights=detach_weights)
        self.fis = FISLoss(**self.fis_kwargs)
        self.group_batch_size = int(group_batch_size)
        self.teachers: list[torch.nn.Module] = list(teachers or [])

    # ------------------------------------------------------------------ step 2: the student's objective
    def setup(self, model, trainer) -> None:
        super().setup(model, trainer)
        if not self.teachers:
            raise CxrError("FairDi's student step needs teachers (run FairDi.fit, or pass teachers=…)")
        for t in self.teachers:
            t.to(trainer.device).eval()
            for p in t.parameters():
                p.requires_grad_(False)

    def teacher_of(self, group: int) -> int:
        """Index of the teacher that teaches samples of ``group``."""
        a = self.assignment
        if isinstance(a, str):
            return group if group < len(self.teachers) else 0
        t = a[group] if isinstance(a, (list, tuple)) else a.get(group, a.get(str(group)))
        if t is None or not 0 <= int(t) < len(self.teachers):
            raise CxrError(f"FairDi assignment gives no valid teacher for group {group}: {a!r}")
        return int(t)

    @torch.no_grad()
    def teacher_logits(self, batch: dict) -> torch.Tensor:
        """Each sample's teacher logits: its group's teacher (``own`` / mapping) or the teachers' mean probability."""
        inp = batch[self.teacher_input]
        if self.assignment == "mean":
            p = torch.stack([torch.sigmoid(logits_of(t(inp)).float()) for t in self.teachers]).mean(0)
            p = p.clamp(1e-6, 1 - 1e-6)
            return torch.log(p) - torch.log1p(-p)
        g = batch["g"]
        out = None
        for k in torch.unique(g).tolist():
            rows = g == k
            lk = logits_of(self.teachers[self.teacher_of(int(k))](inp[rows])).float()
            if out is None:
                out = lk.new_zeros((g.shape[0], *lk.shape[1:]))
            out[rows] = lk
        return out

    def objective(self, student_logits, teacher_logits, batch) -> tuple[torch.Tensor, dict[str, float]]:
        """L = λ τ² KD + (1 − λ) FIS(CE) (plain CE when ``student_fis`` is off)."""
        kd = binary_kd(student_logits, teacher_logits, self.tau).mean()
        if self.student_fis:
            task = self.fis_loss(student_logits, batch)
        else:
            task = self.task.mean_loss(student_logits, batch["y"])
        loss = self.lam * self.tau ** 2 * kd + (1.0 - self.lam) * task
        return loss, {"kd": float(kd.detach()), "task": float(task.detach())}

    def training_step(self, model, batch):
        s = self.forward(model, batch)
        return self.objective(s, self.teacher_logits(batch), batch)

    # ------------------------------------------------------------------ the three steps
    def fit(self, model, train, val=None, config=None, run_dir: str | Path | None = None,
            log: Callable[[str], None] | None = None) -> FitResult:
        """Step 0 (pretrain, FIS) → step 1 (one teacher per group) → step 2 (the student). ``model`` is trained in
        place by step 0; the returned model is the student."""
        cfg = config or TrainConfig()
        log = log or (lambda s: None)
        run_dir = Path(run_dir) if run_dir else None
        sub = (lambda name: run_dir / name) if run_dir else (lambda name: None)
        init_state = copy.deepcopy(model.state_dict())
        g_train = dataset_groups(train)
        if g_train is None:
            raise CxrError("FairDi needs group indices (g) in the training data")
        n_groups = self.n_groups or int(g_train.max()) + 1
        self.n_groups = n_groups
        common = dict(task=self.task_name, select=self.select, n_groups=n_groups)

        # step 0: pretrain on all data
        pre = (FIS(group_batch_size=self.group_batch_size, **self.fis_kwargs, **common)
               if self.pretrain_loss == "fis" else ERM(**common))
        log("FairDi step 0: pretraining on all groups")
        r0 = pre.fit(model, train, val, self._stage_cfg(cfg, self.pretrain_epochs), sub("step0_pretrain"), log)
        pretrained = copy.deepcopy(r0.model.state_dict())

        # step 1: one teacher per group, from the step-0 model
        g_val = dataset_groups(val) if val is not None else None
        teachers, tinfo = [], []
        for k in range(n_groups):
            teacher = copy.deepcopy(r0.model)
            teacher.load_state_dict(pretrained)
            idx = np.flatnonzero(g_train == k)
            if len(idx) < self.min_group_size:
                log(f"FairDi step 1: group {k} has {len(idx)} training items (< {self.min_group_size}); "
                    "its teacher is the step-0 model")
                teachers.append(teacher.eval())
                tinfo.append({"group": k, "n_train": int(len(idx)), "fine_tuned": False})
                continue
            frozen = freeze(teacher, self.teacher_freeze)
            if not any(p.requires_grad for p in teacher.parameters()):
                raise CxrError(f"teacher_freeze={self.teacher_freeze!r} freezes every parameter")
            tval = None
            if g_val is not None:
                vidx = np.flatnonzero(g_val == k)
                tval = subset_dataset(val, vidx) if len(vidx) else None
            log(f"FairDi step 1: teacher for group {k} ({len(idx)} items, {len(frozen)} frozen tensors)")
            rt = ERM(task=self.task_name, select="auc", n_groups=n_groups).fit(
                teacher, subset_dataset(train, idx), tval, self._stage_cfg(cfg, self.teacher_epochs, self.teacher_lr),
                sub(f"step1_teacher_{k}"), log)
            teachers.append(rt.model.eval())
            tinfo.append({"group": k, "n_train": int(len(idx)), "fine_tuned": True, **rt.info})

        # step 2: the student
        student = copy.deepcopy(r0.model)
        student.load_state_dict(pretrained if self.student_init == "pretrained" else init_state)
        for p in student.parameters():
            p.requires_grad_(True)
        freeze(student, self.student_freeze)
        log("FairDi step 2: distilling the teachers into one student")
        res = self.fit_student(student, teachers, train, val, self._stage_cfg(cfg, self.student_epochs),
                               sub("step2_student"), log)
        res.info.update({"pretrain": r0.info, "teachers": tinfo})
        return res

    def fit_student(self, student, teachers, train, val=None, config=None, run_dir=None, log=None) -> FitResult:
        """Step 2 alone: distil ``teachers`` (one per group, or as ``assignment`` maps them) into ``student``."""
        self.teachers = list(teachers)
        self.candidates, self._snapshots, self._ref_calls = [], {}, 0
        return FairMethod.fit(self, student, train, val, config, run_dir, log)

    @staticmethod
    def _stage_cfg(cfg, epochs: int | None, lr: float | None = None):
        upd: dict[str, Any] = {}
        if epochs:
            upd["epochs"] = int(epochs)
        if lr:
            upd["lr"] = float(lr)
        return cfg.model_copy(update=upd) if upd else cfg
