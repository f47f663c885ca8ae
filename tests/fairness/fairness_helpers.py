"""Helpers of the fairness tests: tiny group-structured data: a majority and a minority group whose label depends on
different features (so ERM under-serves the minority), small heads, a fast TrainConfig."""
import numpy as np
import torch

from cxrdistill.training.data import ArrayDataset
from cxrdistill.training.trainer import TrainConfig

D = 12


def make_data(n, seed, minority=0.25, noise_minority=0.5, k=2):
    rng = np.random.default_rng(seed)
    g = (rng.random(n) < minority).astype(np.int64)
    x = rng.normal(size=(n, D)).astype(np.float32)
    w0 = np.random.default_rng(101).normal(size=(D, k))
    w1 = np.random.default_rng(202).normal(size=(D, k))
    logit = np.where(g[:, None] == 1, x @ w1, x @ w0)
    noise = np.where(g[:, None] == 1, noise_minority, 0.3)
    y = (logit + rng.normal(size=(n, k)) * noise > 0).astype(np.float32)
    y[rng.random((n, k)) < 0.05] = np.nan  # some unknown labels (U-Ignore)
    return ArrayDataset(x=x, y=y, g=g)


def head(k=2, bn=True):
    layers = [torch.nn.Linear(D, 16)] + ([torch.nn.BatchNorm1d(16)] if bn else []) + [torch.nn.ReLU(),
                                                                                       torch.nn.Linear(16, k)]
    return torch.nn.Sequential(*layers)


def fast_cfg(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 32, "lr": 5e-3, "progress": False, "seed": 0, **kw})
