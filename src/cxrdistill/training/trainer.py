"""The one trainer every method shares: optimisation, schedules, early stopping, per-epoch checkpoints with exact
resume, gradient accumulation, AMP/channels_last on GPU, DDP through torchrun, progress and a metrics log.

Exact resume: the data order of epoch ``e`` is drawn from a generator seeded by ``(seed, e)``, and everything that
changes during training (weights, optimiser, scheduler, method state, RNG, history) is in the epoch checkpoint, so a
run killed at any point and resumed ends with the same weights as an uninterrupted one (CPU, deterministic kernels).
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field

from cxrdistill.errors import CxrError
from cxrdistill.models.device import resolve_device
from cxrdistill.progress import Progress
from cxrdistill.storage.checkpoint import load_state, load_weights, save_state, save_weights
from cxrdistill.storage.io import atomic_open
from cxrdistill.training.distributed import DistInfo, barrier, init_distributed


class TrainConfig(BaseModel):
    """Optimisation settings shared by every method (YAML-configurable; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    momentum: float = 0.9
    schedule: Literal["constant", "cosine", "step", "plateau"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    step_size: int = 10
    gamma: float = 0.1
    grad_accum: int = Field(1, ge=1)
    clip_grad: float | None = None
    early_stopping: int | None = Field(None, ge=1, description="stop after this many epochs without improvement")
    restore_best: bool = True
    seed: int = 0
    num_workers: int = 0
    amp: bool = True  # only takes effect on CUDA
    channels_last: bool = True  # only takes effect on CUDA
    deterministic: bool = True
    device: str = "auto"
    progress: bool = True
    max_steps_per_epoch: int | None = None
    eval_batch_size: int | None = None


class Trainer:
    """Fit ``model`` with ``method`` on ``train_data``; validate on ``val_data`` each epoch.

    ``train_data`` is an :class:`~cxrdistill.training.data.ArrayDataset` (fast path) or any map-style Dataset whose
    items are dicts of tensors. ``run_dir`` (optional) receives ``checkpoints/last.pt``, ``best.safetensors``,
    ``history.json``; when ``resume`` is true and a checkpoint exists, training continues from it.
    """

    def __init__(self, model, method, train_data, val_data=None, config: TrainConfig | None = None,
                 run_dir: str | Path | None = None, resume: bool = True, params: Iterable | None = None,
                 weights_metadata: dict | None = None, log: Callable[[str], None] | None = None):
        import torch

        self.cfg = config or TrainConfig()
        self.method = method
        self.train_data = train_data
        self.val_data = val_data
        self.run_dir = Path(run_dir) if run_dir else None
        self.resume = resume
        self.weights_metadata = weights_metadata or {}
        self.dist: DistInfo = init_distributed()
        self.log = log or (lambda s: None)
        if self.cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.device = self._pick_device()
        torch.manual_seed(self.cfg.seed)
        self.model = model.to(self.device)
        if self.device.type == "cuda" and self.cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.method.setup(self.model, self)
        self.train_model = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.train_model = DDP(self.model, device_ids=ids, find_unused_parameters=True)
        trainable = [p for p in (params if params is not None else self.model.parameters()) if p.requires_grad]
        if not trainable:
            raise CxrError("nothing to train: every parameter is frozen")
        self.optimizer = self._make_optimizer(trainable)
        self.steps_per_epoch = self._steps_per_epoch()
        self.scheduler = self._make_scheduler()
        self.use_amp = self.cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.stopped_early = False
        self._writer = None  # the background thread that writes checkpoints (see _save)
        self._pending: list = []

    # ------------------------------------------------------------------ set-up helpers
    def _pick_device(self):
        return resolve_device(self.cfg.device, local_rank=self.dist.local_rank)

    def _make_optimizer(self, params):
        import torch

        c = self.cfg
        if c.optimizer == "sgd":
            return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        if c.optimizer == "adam":
            return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        return torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)

    def _steps_per_epoch(self) -> int:
        n = self._epoch_length()
        per_rank = math.ceil(n / self.dist.world_size)
        b = max(1, self.cfg.batch_size // self.dist.world_size)
        steps = len(_chunk_bounds(per_rank, b, fold_singleton=True))
        if self.cfg.max_steps_per_epoch:
            steps = min(steps, self.cfg.max_steps_per_epoch)
        return max(1, math.ceil(steps / self.cfg.grad_accum))

    def _epoch_length(self) -> int:
        return len(self.train_data)

    def _make_scheduler(self):
        import torch

        c = self.cfg
        total = max(1, c.epochs * self.steps_per_epoch)
        warm = int(round(c.warmup_epochs * self.steps_per_epoch))

        def factor(step: int) -> float:
            if warm and step < warm:
                return (step + 1) / warm
            if c.schedule == "cosine":
                t = (step - warm) / max(1, total - warm)
                return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
            if c.schedule == "step":
                return c.gamma ** ((step // self.steps_per_epoch) // c.step_size)
            return 1.0

        if c.schedule == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode=self.method.monitor_mode,
                                                              factor=c.gamma, patience=1)
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

    # ------------------------------------------------------------------ data
    def _epoch_indices(self, epoch: int):
        """This rank's sample order for ``epoch``: a deterministic function of (seed, epoch) only."""
        import torch

        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        n = self._epoch_length()
        w = self.method.sample_weights(self.train_data)
        if w is not None:
            w = torch.as_tensor(w, dtype=torch.double)
            order = torch.multinomial(w, n, replacement=True, generator=g)
        else:
            order = torch.randperm(n, generator=g)
        if self.dist.enabled:  # pad so that every rank gets the same number of samples, then stride
            per = math.ceil(n / self.dist.world_size)
            order = torch.cat([order, order[: per * self.dist.world_size - n]])
            order = order[self.dist.rank:: self.dist.world_size]
        return order

    def _batches(self, data, order, batch_size: int, fold_singleton: bool = False):
        """Yield dict batches for the given index order (fast tensor gather when the dataset supports it).
        ``fold_singleton`` (training) folds a lone last sample into the batch before it: BatchNorm cannot train on
        a batch of one."""
        import torch

        bounds = _chunk_bounds(len(order), batch_size, fold_singleton)
        if hasattr(data, "get_batch"):
            for s, e in bounds:
                yield data.get_batch(order[s:e])
            return
        from torch.utils.data import DataLoader

        chunks = [order[s:e].tolist() for s, e in bounds]
        loader = DataLoader(data, batch_sampler=chunks, num_workers=self.cfg.num_workers,
                            persistent_workers=False, pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(self.cfg.seed + 7919 * self.epoch))
        yield from loader

    def _to_device(self, batch: dict) -> dict:
        import torch

        out = {}
        for k, v in batch.items():
            if isinstance(v, torch.Tensor):
                v = v.to(self.device, non_blocking=True)
                if k == "x" and v.ndim == 4 and self.device.type == "cuda" and self.cfg.channels_last:
                    v = v.contiguous(memory_format=torch.channels_last)
            out[k] = v
        return out

    def eval_batches(self, data=None):
        """Batches of ``data`` (default: the validation set) in order, on the device — for validation and predict."""
        import torch

        data = self.val_data if data is None else data
        if data is None:
            return
        bs = self.cfg.eval_batch_size or self.cfg.batch_size
        for b in self._batches(data, torch.arange(len(data)), bs):
            yield self._to_device(b)

    # ------------------------------------------------------------------ checkpoints
    @property
    def ckpt_path(self) -> Path | None:
        return self.run_dir / "checkpoints" / "last.pt" if self.run_dir else None

    def _state(self) -> dict[str, Any]:
        import torch

        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "method": self.method.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "history": json.dumps(self.history),
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "stopped_early": self.stopped_early,
            "torch_rng": torch.get_rng_state(),
        }

    def _load(self, state: dict[str, Any]) -> None:
        import torch

        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.method.load_state_dict(state["method"])
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.history = json.loads(state["history"])
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.bad_epochs = int(state["bad_epochs"])
        self.stopped_early = bool(state["stopped_early"])
        torch.set_rng_state(state["torch_rng"])

    def _save(self) -> None:
        """The epoch checkpoint and history: a copy of the state is taken now and written (atomically, fsynced) by a
        background thread while the next epoch trains. A kill during the write leaves the previous epoch's
        checkpoint in place, from which the resume is just as exact."""
        if not self.run_dir or not self.dist.is_main:
            return
        state, history = _snapshot(self._state()), json.dumps(self.history, indent=1)

        def write() -> None:
            save_state(state, self.ckpt_path)
            with atomic_open(self.run_dir / "history.json") as fh:
                fh.write(history)

        self._write_later(write)

    def _write_later(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the one writer thread (writes stay in order); an error of an earlier write is raised here."""
        import concurrent.futures as cf

        if self._writer is None:
            self._writer = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="cxrdistill-ckpt")
        for f in self._pending:
            if f.done():
                f.result()  # raises the error of a failed write
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._writer.submit(fn))

    def _flush_writes(self) -> None:
        """Wait for every background write; raise the first error."""
        pending, self._pending = self._pending, []
        try:
            for f in pending:
                f.result()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None

    # ------------------------------------------------------------------ the loop
    def fit(self) -> list[dict[str, Any]]:
        """Train until ``epochs`` or early stopping; returns the per-epoch history (also in ``history.json``)."""
        if self.resume and self.ckpt_path and self.ckpt_path.exists():
            self._load(load_state(self.ckpt_path))
            self.log(f"resumed from {self.ckpt_path} after epoch {self.epoch}")
        progress = Progress(self.cfg.progress and self.dist.is_main, loss=True, transient=True)
        try:
            with progress:
                while self.epoch < self.cfg.epochs and not self.stopped_early:
                    self._fit_epoch(progress)
        finally:
            self._flush_writes()  # every checkpoint is on disk before fit returns or raises
        if self.cfg.restore_best and self.run_dir and self.best_epoch is not None:
            best = self.run_dir / "best.safetensors"
            if best.exists():
                sd, _ = load_weights(best)
                self.model.load_state_dict(sd)
        if self.run_dir and self.dist.is_main:
            save_weights(self.model.state_dict(), self.run_dir / "model.safetensors", self.weights_metadata)
        barrier(self.dist)
        return self.history

    def _fit_epoch(self, progress) -> None:
        e = self.epoch
        t0 = time.perf_counter()
        self.method.on_epoch_start(e, self)
        train_logs = self._train_epoch(e, progress)
        val_logs = self.validate()
        self.method.on_epoch_end(e, self)
        self.epoch = e + 1
        row = {"epoch": self.epoch, **train_logs, **val_logs,
               "lr": self.optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        self._track_best(row)
        self.history.append(row)
        if self.cfg.schedule == "plateau" and self.method.monitor in row:
            self.scheduler.step(row[self.method.monitor])
        self._save()
        barrier(self.dist)
        self.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))

    def _train_epoch(self, epoch: int, progress) -> dict[str, float]:
        import torch

        self.train_model.train()
        order = self._epoch_indices(epoch)
        b = max(1, self.cfg.batch_size // self.dist.world_size)
        sums: dict[str, float] = {}
        count = 0
        accum = self.cfg.grad_accum
        max_micro = self.steps_per_epoch * accum
        progress.start(f"epoch {epoch + 1}/{self.cfg.epochs}", self.steps_per_epoch)
        self.optimizer.zero_grad(set_to_none=True)
        micro = 0
        n_seen = 0
        for batch in self._batches(self.train_data, order, b, fold_singleton=True):
            if micro >= max_micro:
                break
            batch = self._to_device(batch)
            last_of_group = (micro + 1) % accum == 0 or micro + 1 == max_micro
            sync = contextlib.nullcontext()
            if self.dist.enabled and not last_of_group:
                sync = self.train_model.no_sync()
            with sync, (torch.autocast(self.device.type) if self.use_amp else contextlib.nullcontext()):
                loss, logs = self.method.training_step(self.train_model, batch)
            value = float(loss.detach())  # the step's one host sync: the divergence check, the log and the bar
            if not math.isfinite(value):
                raise CxrError(f"training diverged: loss is {value} at epoch {epoch + 1}, step "
                               f"{self.global_step}; lower the learning rate or check the inputs for NaN")
            self.scaler.scale(loss if accum == 1 else loss / accum).backward()
            micro += 1
            bs = _bs(batch)
            n_seen += bs
            sums["loss"] = sums.get("loss", 0.0) + value * bs
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v) * bs
            count += bs
            if last_of_group:
                if self.cfg.clip_grad:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                if self.cfg.schedule != "plateau":
                    self.scheduler.step()
                self.global_step += 1
                self.method.on_step_end(self.global_step, self)
                progress.advance(loss=value)
        out = {f"train_{k}" if k != "loss" else "train_loss": v / max(count, 1) for k, v in sums.items()}
        out["train_samples"] = n_seen
        return out

    def validate(self) -> dict[str, float]:
        """Run the method's validation on the validation set (rank 0 computes; every rank gets the result)."""
        import torch

        if self.val_data is None:
            return {}
        self.model.eval()
        with torch.no_grad(), torch.autocast(self.device.type, enabled=self.use_amp):
            logs = self.method.validate(self.model, self.eval_batches())
        self.model.train()
        return {k: float(v) for k, v in logs.items()}

    def _track_best(self, row: dict[str, Any]) -> None:
        key = self.method.monitor
        if key not in row or row[key] is None or (isinstance(row[key], float) and math.isnan(row[key])):
            return
        v = float(row[key])
        better = self.best is None or (v > self.best if self.method.monitor_mode == "max" else v < self.best)
        if better:
            self.best, self.best_epoch, self.bad_epochs = v, self.epoch, 0
            if self.run_dir and self.dist.is_main:
                sd, path, meta = _snapshot(self.model.state_dict()), self.run_dir / "best.safetensors", \
                    self.weights_metadata
                self._write_later(lambda: save_weights(sd, path, meta))
        else:
            self.bad_epochs += 1
            if self.cfg.early_stopping and self.bad_epochs >= self.cfg.early_stopping:
                self.stopped_early = True
        row["best_epoch"] = self.best_epoch

    # ------------------------------------------------------------------ inference
    def predict(self, fn: Callable[[Any, dict], Any], data) -> Any:
        """Apply ``fn(model, batch) -> tensor`` over ``data`` in order (eval mode, no grad); concatenated on CPU."""
        import torch

        self.model.eval()
        outs = []
        with torch.no_grad():
            for b in self.eval_batches(data):
                outs.append(fn(self.model, b).float().cpu())
        self.model.train()
        return torch.cat(outs) if outs else torch.empty(0)


def _snapshot(obj):
    """A copy of a (nested) state whose tensors no longer change as training goes on."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return type(obj)((k, _snapshot(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_snapshot(v) for v in obj)
    return obj


def _chunk_bounds(n: int, batch_size: int, fold_singleton: bool = False) -> list[tuple[int, int]]:
    """``(start, end)`` of consecutive batches over ``n`` samples; with ``fold_singleton`` a last batch of one
    sample is merged into the batch before it."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if fold_singleton and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def _bs(batch: dict) -> int:
    for v in batch.values():
        if hasattr(v, "shape") and len(v.shape) > 0:
            return int(v.shape[0])
    return 1
