"""SWAD (Cha et al., NeurIPS 2021, "SWAD: Domain Generalization by Seeking Flat Minima"; code khanrc/swad).

Dense weight averaging over a window of training found from the validation loss. Training is cut into segments
(one per epoch, or every ``eval_every`` optimiser steps); each segment carries the sum of the weights after each of
its steps and the online model's validation loss L_i at its end. The window, as defined in the paper:

- start t_s: the first segment i whose loss is not exceeded by the next N_s − 1 (``n_converge``) ones,
  L_i ≤ min(L_{i+1}, …, L_{i+N_s−1}) (the loss has stopped decreasing);
- tolerance: L_thr = (1 + r) · mean(L_{t_s}, …, L_{t_s+N_s−1}), r = ``tolerance_ratio``;
- end t_e: the first i > t_s with min(L_i, …, L_{i+N_e−1}) > L_thr (N_e = ``n_tolerance``: the loss has left the
  valley for N_e evaluations); segments t_s … t_e − 1 are averaged. When training ends first, the trailing segments
  whose loss never came back under L_thr are left out (the reference code's final drain does the same).

Defaults are the reference code's (N_s = 3, N_e = 6, r = 0.3, constant learning rate). The result is the mean of
every per-step weight snapshot in the window (segments weighted by their step counts; the reference averages equal-
length segment means, the same when segments are equal). Without convergence the last segment's average is used.
BatchNorm running statistics are recomputed on the training data after averaging (``torch.optim.swa_utils.update_bn``
semantics: reset, then a cumulative average over one pass in train mode).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from cxrdistill.errors import CxrError
from cxrdistill.fairness.base import FairMethod, register_method
from cxrdistill.fairness.datasets import iterate_batches


class LossValley:
    """Online SWAD window detection; segments are dicts ``{sum, count, start, end, loss}`` (``sum``: tensors)."""

    def __init__(self, n_converge: int = 3, n_tolerance: int = 6, tolerance_ratio: float = 0.3):
        if n_converge < 1 or n_tolerance < 1 or tolerance_ratio < 0:
            raise ValueError("SWAD needs n_converge ≥ 1, n_tolerance ≥ 1, tolerance_ratio ≥ 0")
        self.n_converge, self.n_tolerance, self.tolerance_ratio = int(n_converge), int(n_tolerance), \
            float(tolerance_ratio)
        self.buffer: list[dict] = []   # the last N_s segments, before convergence
        self.pending: list[dict] = []  # after convergence: segments above the threshold, not yet decided
        self.converged = False
        self.dead = False
        self.threshold: float | None = None
        self.final: dict | None = None  # running sum of the included segments
        self.last: dict | None = None
        self.n_segments = 0
        self.included: list[int] = []  # indices (0-based, in order of arrival) of the averaged segments

    @staticmethod
    def _loss(seg: dict) -> float:
        v = float(seg["loss"])
        return v if math.isfinite(v) else math.inf

    def _include(self, seg: dict) -> None:
        if self.final is None:
            self.final = {"sum": [t.clone() for t in seg["sum"]], "count": seg["count"], "start": seg["start"],
                          "end": seg["end"]}
        else:
            for a, b in zip(self.final["sum"], seg["sum"]):
                a.add_(b.to(a.device))
            self.final["count"] += seg["count"]
            self.final["end"] = seg["end"]
        self.included.append(seg["index"])

    def _after(self, seg: dict) -> None:
        if self._loss(seg) <= self.threshold:
            for s in self.pending:
                self._include(s)
            self.pending = []
            self._include(seg)
        else:
            self.pending.append(seg)
            if len(self.pending) >= self.n_tolerance:  # N_e evaluations above the threshold: the valley ended
                self.dead = True
                self.pending = []

    def add(self, seg: dict) -> None:
        seg = {**seg, "index": self.n_segments}
        self.n_segments += 1
        self.last = seg
        if self.dead:
            return
        if self.converged:
            self._after(seg)
            return
        self.buffer.append(seg)
        self.buffer = self.buffer[-self.n_converge:]
        if len(self.buffer) < self.n_converge:
            return
        losses = [self._loss(s) for s in self.buffer]
        if losses[0] <= min(losses[1:], default=math.inf):
            self.converged = True
            finite = [v for v in losses if math.isfinite(v)]
            self.threshold = (1.0 + self.tolerance_ratio) * (sum(finite) / len(finite) if finite else math.inf)
            first, rest = self.buffer[0], self.buffer[1:]
            self.buffer = []
            self._include(first)
            for s in rest:
                if not self.dead:
                    self._after(s)

    def result(self) -> dict | None:
        """The averaged window ``{sum, count, start, end}``; the last segment when the loss never converged."""
        if self.final is not None:
            return self.final
        return self.last

    # state for exact resume (tensors and plain values only)
    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("buffer", "pending", "converged", "dead", "threshold", "final",
                                              "last", "n_segments", "included")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


@torch.no_grad()
def recompute_bn(model: torch.nn.Module, data, batch_size: int = 256, device="cpu") -> bool:
    """Recompute BatchNorm running statistics over ``data`` (as ``torch.optim.swa_utils.update_bn``, for dict
    batches): reset, momentum None (cumulative average), one pass in train mode. False when there is no BatchNorm."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return False
    momenta = {}
    for m in bns:
        m.reset_running_stats()
        momenta[m] = m.momentum
        m.momentum = None
    was = model.training
    model.train()
    n = len(data)
    for b in iterate_batches(data, batch_size):
        if len(b["x"]) == 1 and n > 1:  # train-mode BatchNorm cannot use a batch of one (torch's update_bn fails)
            continue
        model(b["x"].to(device))
    for m in bns:
        m.momentum = momenta[m]
    model.train(was)
    return True


@register_method("swad")
class SWAD(FairMethod):
    """ERM's loss; the final model is the dense weight average over the validation-loss valley."""

    selects_epochs = False
    train_overrides = {"schedule": "constant"}

    def __init__(self, n_converge: int = 3, n_tolerance: int = 6, tolerance_ratio: float = 0.3, eval_every: int = 0,
                 update_bn: bool = True, **kw):
        super().__init__(**kw)
        self.valley = LossValley(n_converge, n_tolerance, tolerance_ratio)
        self.eval_every = int(eval_every)
        self.update_bn = bool(update_bn)
        self._seg: dict | None = None
        self._epoch_loss: float | None = None

    def setup(self, model, trainer) -> None:
        super().setup(model, trainer)
        if trainer.val_data is None:
            raise CxrError("SWAD needs validation data: its averaging window is found from the validation loss")

    def on_step_end(self, step: int, trainer) -> None:
        params = [p.detach() for p in trainer.model.parameters()]
        if self._seg is None:
            self._seg = {"sum": [p.clone().float() for p in params], "count": 1, "start": step, "end": step}
        else:
            for s, p in zip(self._seg["sum"], params):
                s.add_(p.to(s.device, s.dtype))
            self._seg["count"] += 1
            self._seg["end"] = step
        if self.eval_every and step % self.eval_every == 0:
            model = trainer.model
            model.eval()
            with torch.no_grad():
                loss = self.task.evaluate(model, trainer.eval_batches(), int(self.n_groups))["loss"]
            model.train()
            self._close(loss)

    def _close(self, loss: float) -> None:
        if self._seg is not None:
            self.valley.add({**self._seg, "loss": float(loss)})
            self._seg = None

    def validate(self, model, batches):
        out = super().validate(model, batches)
        self._epoch_loss = out["val_loss"]
        return out

    def on_epoch_end(self, epoch: int, trainer) -> None:
        super().on_epoch_end(epoch, trainer)
        if not self.eval_every and self._epoch_loss is not None:
            self._close(self._epoch_loss)
        self._epoch_loss = None

    def finalize(self, model, trainer) -> dict[str, Any]:
        win = self.valley.result() or self._seg
        if win is None:
            return {"swad": "no segment (no training step)"}
        with torch.no_grad():
            for p, s in zip(model.parameters(), win["sum"]):
                p.copy_((s / win["count"]).to(p.device, p.dtype))
        bn = False
        if self.update_bn:
            bs = trainer.cfg.eval_batch_size or trainer.cfg.batch_size
            bn = recompute_bn(model, trainer.train_data, bs, trainer.device)
        v = self.valley
        return {"swad_converged": v.converged, "swad_dead_valley": v.dead, "swad_threshold": v.threshold,
                "swad_start_step": win["start"], "swad_end_step": win["end"], "swad_steps_averaged": win["count"],
                "swad_segments": list(v.included) if v.converged else [v.n_segments - 1], "bn_recomputed": bn}

    def state_dict(self):
        return {**super().state_dict(), "valley": self.valley.state_dict(), "seg": self._seg}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if "valley" in state:
            self.valley.load_state_dict(state["valley"])
        self._seg = state.get("seg")
