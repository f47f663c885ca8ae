"""A small training job run as a subprocess by the kill/resume and torchrun tests (not collected by pytest)."""
import sys

import numpy as np
import torch

from cxrdistill.training.data import ArrayDataset
from cxrdistill.training.methods.supervised import Supervised
from cxrdistill.training.trainer import Trainer, TrainConfig


def data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, 16, 16)).astype(np.float32)
    w = np.random.default_rng(99).normal(size=(256, 3)).astype(np.float32)
    y = (x.reshape(n, -1) @ w + rng.normal(size=(n, 3)) * 4 > 0).astype(np.float32)
    return ArrayDataset(x=x, y=y)


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(8 * 256, 3))


if __name__ == "__main__":
    run_dir, epochs, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    cfg = TrainConfig(epochs=epochs, batch_size=32, lr=3e-3, progress=False, seed=1)
    Trainer(model(), Supervised(), data(n, 0), data(128, 1), cfg, run_dir=run_dir).fit()
