"""Heads on frozen embeddings (linear, MLP-3, MLP-5): supervised multi-label training with the head as the model
and ``ArrayDataset(x=embeddings, y=targets)`` as data (the fast path). Losses: ``bce`` or ``aucm``.

Defaults follow Glocker et al.'s heads (their code: Adam, lr 1e-3, batch 150, 20 epochs, checkpoint with the best
validation loss); the monitor can be switched to ``val_auc``.
"""
from __future__ import annotations

import cxrdistill.losses.aucm  # noqa: F401  (registers "aucm" in CLS_LOSSES)
from cxrdistill.training.method import METHODS
from cxrdistill.training.methods.supervised import Supervised


@METHODS.register("probe")
class Probe(Supervised):
    """:class:`Supervised` that keeps the epoch with the best validation loss (``monitor`` can switch it)."""

    monitor = "val_loss"
    monitor_mode = "min"
