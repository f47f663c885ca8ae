"""Full fine-tuning of a :class:`~cxrdistill.models.network.CxrNet` with a classification head, from a distilled
student, any cxrdistill checkpoint, a timm-named weights file (ImageNet) or random init; losses ``bce`` or ``aucm``.
Images may be augmented (a new, deterministic stream each epoch)."""
from __future__ import annotations

import cxrdistill.losses.aucm  # noqa: F401  (registers "aucm" in CLS_LOSSES)
from cxrdistill.training.method import METHODS
from cxrdistill.training.methods.supervised import Supervised


@METHODS.register("finetune")
class Finetune(Supervised):
    """:class:`Supervised` that keeps the epoch with the best validation AUC and gives augmenting datasets a new,
    deterministic stream each epoch."""

    monitor = "val_auc"
    monitor_mode = "max"

    def on_epoch_start(self, epoch: int, trainer) -> None:
        set_epoch = getattr(trainer.train_data, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
