"""What every fairness method shares: group-aware validation (overall, per-group, worst-group score and gap), model
selection among the epochs (overall / worst-group / DTO) and the ``fit`` recipe. The tasks a method trains on are in
:mod:`~cxrdistill.fairness.tasks`, the dataset helpers in :mod:`~cxrdistill.fairness.datasets`, freezing in
:mod:`~cxrdistill.fairness.freeze`.

A fairness method is a :class:`~cxrdistill.training.method.Method` on the one shared Trainer. It is registered twice:
in :data:`FAIR_METHODS` under its short name (``erm``, ``groupdro``, …; what ``cxrdistill fair --method`` takes) and
in the training :data:`~cxrdistill.training.method.METHODS` registry as ``fair_<name>``. Multi-stage methods (FairDi)
override :meth:`FairMethod.fit`, running one Trainer per stage.

Batches carry ``x`` (embeddings or images), ``y`` (targets, NaN = ignore) and ``g`` (int64 group index 0..G-1 of the
sensitive attribute). The group index is used in training only; every model is called as ``model(batch["x"])``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cxrdistill.errors import CxrError
from cxrdistill.fairness.datasets import dataset_groups, gather
from cxrdistill.fairness.selection import RULES, dto_distances, select_index
from cxrdistill.fairness.tasks import FAIR_TASKS
from cxrdistill.registry import Registry
from cxrdistill.storage.checkpoint import load_weights, save_weights
from cxrdistill.training.method import Method, family_register
from cxrdistill.training.methods.supervised import logits_of
from cxrdistill.training.trainer import TrainConfig, Trainer

FAIR_METHODS: Registry = Registry("fairness method", plugins=("cxrdistill.fairness.methods",))


def register_method(name: str):
    """Register a FairMethod class as ``name`` in FAIR_METHODS and as ``fair_<name>`` in the training METHODS."""

    return family_register(FAIR_METHODS, "fair", name)


@dataclass
class FitResult:
    """What :meth:`FairMethod.fit` returns: the final model (selected / averaged), per-epoch history, and notes."""

    model: torch.nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class FairMethod(Method):
    """Base of every fairness method: ERM's loss, group-aware validation and model selection among the epochs.

    ``task``: ``cls`` (multi-label classification, AUC) or ``seg`` (segmentation, Dice). ``select``: ``auc`` (best
    overall validation score), ``worst`` (best worst-group score) or ``dto`` (MEDFAIR's distance to the per-group
    optimum over the epochs). ``n_groups``: default from the training data's ``g``.
    """

    name = "base"
    #: TrainConfig fields a method needs (e.g. SWAD's constant learning rate); applied by :meth:`fit`
    train_overrides: dict[str, Any] = {}
    #: whether :meth:`finalize` picks an epoch (SWAD averages instead)
    selects_epochs = True

    def __init__(self, task: str = "cls", select: str = "auc", n_groups: int | None = None):
        if select not in RULES:
            raise CxrError(f"unknown model selection {select!r}; use one of: {', '.join(RULES)}")
        self.task_name = task
        self.task = FAIR_TASKS.create(task)
        self.select = select
        self.n_groups = n_groups
        m = self.task.metric
        self.monitor = f"val_worst_{m}" if select == "worst" else f"val_{m}"
        self.monitor_mode = "max"
        self.candidates: list[dict[str, Any]] = []
        self._snapshots: dict[int, dict[str, torch.Tensor]] = {}
        self._last_val: dict[str, Any] | None = None
        self._trainer = None
        self._group_index: list[np.ndarray] = []
        self._ref_calls = 0
        self._frozen_bn: list[torch.nn.Module] = []
        self.group_counts: np.ndarray | None = None

    # ------------------------------------------------------------------ trainer hooks
    def setup(self, model, trainer) -> None:
        self._trainer = trainer
        # BatchNorm layers of frozen parts stay in eval mode while the rest trains (see training_step)
        self._frozen_bn = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                           and list(m.parameters(recurse=False))
                           and not any(p.requires_grad for p in m.parameters(recurse=False))]
        g = dataset_groups(trainer.train_data)
        if g is not None and g.size and g.min() < 0:
            raise CxrError("group indices must be ≥ 0 (drop rows with an unknown attribute first)")
        if self.n_groups is None:
            self.n_groups = int(g.max()) + 1 if g is not None and g.size else 1
        if g is not None:
            self.group_counts = np.bincount(g, minlength=self.n_groups)
            self._group_index = [np.flatnonzero(g == k) for k in range(self.n_groups)]

    def training_step(self, model, batch):
        logits = self.forward(model, batch)
        return self.task.mean_loss(logits, batch["y"]), {}

    def forward(self, model, batch):
        """The model's logits for a training batch (frozen BatchNorm layers kept in eval mode). A batch of one item
        (an epoch's remainder) cannot give batch statistics: BatchNorm then uses its running statistics."""
        for m in self._frozen_bn:
            m.eval()
        x = batch["x"]
        if x.shape[0] == 1 and model.training:
            bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training]
            for m in bns:
                m.eval()
            try:
                return logits_of(model(x))
            finally:
                for m in bns:
                    m.train()
        return logits_of(model(x))

    def validate(self, model, batches) -> dict[str, float]:
        r = self.task.evaluate(model, batches, int(self.n_groups or 1))
        self._last_val = r
        m = self.task.metric
        out = {"val_loss": r["loss"], f"val_{m}": r["score"], f"val_worst_{m}": r["worst"], f"val_{m}_gap": r["gap"]}
        out.update({f"val_{m}_g{k}": v for k, v in enumerate(r["groups"])})
        return out

    def on_epoch_end(self, epoch: int, trainer) -> None:
        if self._last_val is not None and self.selects_epochs:
            self._add_candidate(epoch + 1, trainer)
        self._last_val = None

    def state_dict(self) -> dict[str, Any]:
        return {"candidates": json.dumps(self.candidates), "ref_calls": self._ref_calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.candidates = json.loads(state.get("candidates", "[]"))
        self._ref_calls = int(state.get("ref_calls", 0))

    # ------------------------------------------------------------------ model selection
    def _candidate_dir(self, trainer) -> Path | None:
        return trainer.run_dir / "candidates" if trainer.run_dir is not None else None

    def _add_candidate(self, epoch: int, trainer) -> None:
        r = self._last_val
        self.candidates.append({"epoch": epoch, "score": r["score"], "worst": r["worst"],
                                "groups": [float(v) for v in r["groups"]]})
        state = {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}
        d = self._candidate_dir(trainer)
        needed = {self.candidates[i]["epoch"] for i in self._needed()}
        if d is not None:
            if trainer.dist.is_main:
                if epoch in needed:
                    save_weights(state, d / f"epoch_{epoch:04d}.safetensors")
                for f in d.glob("epoch_*.safetensors"):
                    if int(f.stem.split("_")[1]) not in needed:
                        f.unlink(missing_ok=True)
        else:
            self._snapshots[epoch] = state
            self._snapshots = {e: s for e, s in self._snapshots.items() if e in needed}

    def _needed(self) -> list[int]:
        """Candidates that can still be selected whatever comes later (the others' weights are dropped)."""
        c = self.candidates
        if not c:
            return []
        if self.select in ("auc", "worst"):
            return [select_index([x["score"] for x in c], [x["worst"] for x in c], None, self.select)]
        m = np.array([x["groups"] for x in c], dtype=float)
        if not np.isfinite(m).all():
            return list(range(len(c)))
        # DTO normalises each column by its best value, so a candidate dominated in every group never wins
        keep = [i for i in range(len(c))
                if not np.any(np.all(m >= m[i], axis=1) & np.any(m > m[i], axis=1))]
        return keep

    def selected_candidate(self) -> dict[str, Any] | None:
        c = self.candidates
        if not c:
            return None
        i = select_index([x["score"] for x in c], [x["worst"] for x in c], [x["groups"] for x in c], self.select)
        return c[i]

    def finalize(self, model, trainer) -> dict[str, Any]:
        """After training: load the selected epoch's weights (``select`` rule). Returns notes for the results."""
        cand = self.selected_candidate()
        if cand is None:
            return {"select": self.select, "selected_epoch": None}
        ep = cand["epoch"]
        state = self._snapshots.get(ep)
        if state is None:
            d = self._candidate_dir(trainer)
            f = d / f"epoch_{ep:04d}.safetensors" if d is not None else None
            if f is None or not f.exists():
                raise CxrError(f"weights of the selected epoch {ep} are missing"
                               + (f" ({f})" if f else "") + "; re-run without resuming")

            state, _ = load_weights(f)
        model.load_state_dict(state)
        info = {"select": self.select, "selected_epoch": ep, "val_score": cand["score"], "val_worst": cand["worst"]}
        if self.select == "dto":
            info["val_dto"] = float(dto_distances([x["groups"] for x in self.candidates])[
                [x["epoch"] for x in self.candidates].index(ep)])
        return info

    # ------------------------------------------------------------------ the recipe
    def fit(self, model, train, val=None, config=None, run_dir: str | Path | None = None,
            log: Callable[[str], None] | None = None) -> FitResult:
        """Train ``model`` with this method on the shared Trainer, then :meth:`finalize` (selection / averaging)."""
        cfg = (config or TrainConfig()).model_copy(update={"restore_best": False, **self.train_overrides})
        trainer = Trainer(model, self, train, val, cfg, run_dir=run_dir, log=log)
        history = trainer.fit()
        info = self.finalize(trainer.model, trainer)
        trainer.model.eval()
        return FitResult(trainer.model, history, info)

    # ------------------------------------------------------------------ FairVision's group reference samples
    def reference_losses(self, size: int) -> list[torch.Tensor]:
        """Per-sample losses of a fresh sample of ``size`` items of each group (no gradient, eval mode), drawn from
        the training data with a generator seeded by (seed, call count) so that a resumed run draws the same."""
        tr = self._trainer
        if tr is None or not self._group_index:
            raise CxrError("group reference samples need the trainer's training data with group indices")
        gen = torch.Generator().manual_seed(int(tr.cfg.seed) * 1_000_003 + 7_777 + self._ref_calls)
        self._ref_calls += 1
        picks = []
        for ix in self._group_index:
            take = torch.randperm(len(ix), generator=gen)[:size].numpy() if len(ix) else np.zeros(0, np.int64)
            picks.append(ix[take])
        sizes = [len(p) for p in picks]
        if sum(sizes) == 0:
            return [torch.zeros(0) for _ in picks]
        batch = {k: (v.to(tr.device) if isinstance(v, torch.Tensor) else v)
                 for k, v in gather(tr.train_data, np.concatenate(picks)).items()}
        model = tr.model
        was = model.training
        model.eval()
        with torch.no_grad():
            losses = self.task.per_sample_loss(logits_of(model(batch["x"])), batch["y"]).float()
        model.train(was)
        return list(torch.split(losses, sizes))
