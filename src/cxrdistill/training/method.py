"""What a training method is: the one trainer calls these hooks; a method (KD, probe, GroupDRO, FairDi, Barlow
Twins, …) only says how a batch becomes a loss, and optionally how to sample, validate and keep state.

A new method is one small class registered in :data:`METHODS`; it passes the same contract tests as its siblings.
"""
from __future__ import annotations

from typing import Any

from cxrdistill.registry import Registry

# every package with a ``methods`` module registers its methods here (fairness, fairkd, pretraining, training);
# found and imported on the first lookup, so that `--method NAME` reaches all of them without training naming them
METHODS: Registry = Registry("training method", discover="methods")


def family_register(family: Registry, prefix: str, name: str):
    """Class decorator: register a method in its family's registry as ``name`` and in :data:`METHODS` as
    ``<prefix>_<name>`` (fairness methods, fairness-aware distillation objectives …)."""

    def deco(cls):
        family.register(name)(cls)
        METHODS.register(f"{prefix}_{name}")(cls)
        cls.name = name
        return cls

    return deco


class Method:
    """Base class. Subclasses implement :meth:`training_step`; everything else has a sensible default."""

    #: the name of the validation metric used for early stopping / best checkpoint, and whether larger is better
    monitor: str = "val_loss"
    monitor_mode: str = "min"

    def setup(self, model, trainer) -> None:
        """Called once before training (after the model is on its device)."""

    def training_step(self, model, batch: dict) -> tuple[Any, dict[str, float]]:
        """Return (scalar loss tensor, logs)."""
        raise NotImplementedError

    def sample_weights(self, dataset) -> Any | None:
        """Per-sample sampling weights (1-D tensor) for weighted sampling with replacement, or None for shuffling."""
        return None

    def validate(self, model, batches) -> dict[str, float]:
        """Validation metrics over an iterable of batches (model in eval mode, no grad). Default: mean loss."""
        total, n = 0.0, 0
        for batch in batches:
            loss, _ = self.training_step(model, batch)
            bs = _batch_size(batch)
            total += float(loss.detach()) * bs
            n += bs
        return {"val_loss": total / max(n, 1)}

    def on_epoch_start(self, epoch: int, trainer) -> None:
        pass

    def on_step_end(self, step: int, trainer) -> None:
        pass

    def on_epoch_end(self, epoch: int, trainer) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """Method state that must survive a resume (e.g. GroupDRO's group weights). Tensors and plain values only."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _batch_size(batch: dict) -> int:
    for v in batch.values():
        if hasattr(v, "shape") and len(v.shape) > 0:
            return int(v.shape[0])
    return 1
