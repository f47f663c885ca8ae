"""Is the synthetic cohort learnable, and does each scenario's bias show? A tiny CNN trained on observed labels
(U-Zeros, blank = 0) at 64 px, AUC per finding overall and per group against observed and true labels.

    python -m cxrdistill.bench.synth_check mixed --n 2000 --epochs 4

Shortcut scenarios are split by ``synth_split`` (phases kept apart); the others by patient at random. Takes about
2 minutes for 2,000 images on one core. Used to calibrate the scenarios (docs/synth.md, "Scenarios").
"""
from __future__ import annotations

import argparse

import numpy as np

TASKS = ["pleural_effusion", "cardiomegaly", "pneumothorax", "edema", "consolidation", "lung_opacity",
         "support_devices", "atelectasis", "lung_lesion"]


def check(scenario: str, n: int = 2000, epochs: int = 4, size: int = 64, seed: int = 0, test_frac: float = 0.35):
    """Train the tiny CNN and return rows: task, prevalence, AUC (observed, true) overall and per group."""
    import pandas as pd
    import torch
    import torch.nn as nn
    from sklearn.metrics import roc_auc_score

    from cxrdistill import synth
    from cxrdistill.images.preprocess import MEAN, STD

    torch.manual_seed(seed)
    X, meta = synth.render_batch(n, size, seed=seed, scenario=scenario, workers=2)
    if (meta["synth_shortcut"] == 1).any():
        test = (meta["synth_split"] == "test").to_numpy()
    else:
        rng = np.random.default_rng(seed + 1)
        pats = meta["patient_id"].unique()
        test = meta["patient_id"].isin(set(rng.choice(pats, int(test_frac * len(pats)), replace=False))).to_numpy()
    Y = np.stack([(meta[f] == 1).to_numpy(np.float32) for f in TASKS], 1)
    T = np.stack([meta[f"true_{f}"].to_numpy() for f in TASKS], 1)
    Xt = (torch.tensor(X, dtype=torch.float32)[:, None] / 255.0 - MEAN) / STD

    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(),
                             nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    net = nn.Sequential(block(1, 12), block(12, 24), block(24, 48), block(48, 64), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(64, len(TASKS)))
    tr = np.flatnonzero(~test)
    ytr = torch.tensor(Y[tr])
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * int(np.ceil(len(tr) / 64)))
    g = torch.Generator().manual_seed(seed)
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(len(tr), generator=g).numpy()
        for b in range(0, len(tr), 64):
            idx = perm[b:b + 64]
            shift = torch.randint(-3, 4, (2,), generator=g).tolist()
            xb = torch.roll(Xt[tr[idx]], shift, (2, 3))
            loss = nn.functional.binary_cross_entropy_with_logits(net(xb), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    te = np.flatnonzero(test)
    with torch.no_grad():
        P = torch.cat([torch.sigmoid(net(Xt[te[i:i + 256]])) for i in range(0, len(te), 256)]).numpy()
    groups = meta["synth_group"].to_numpy()[te]

    def auc(y, p):
        return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")

    rows = []
    for j, f in enumerate(TASKS):
        row = {"task": f, "prevalence": float(T[te, j].mean()), "auc_obs": auc(Y[te, j], P[:, j]),
               "auc_true": auc(T[te, j], P[:, j])}
        for gname in sorted(set(groups)):
            m = groups == gname
            row[f"auc_obs[{gname}]"] = auc(Y[te][m, j], P[m, j])
            row[f"auc_true[{gname}]"] = auc(T[te][m, j], P[m, j])
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m cxrdistill.bench.synth_check")
    ap.add_argument("scenario")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    df = check(args.scenario, args.n, args.epochs, args.size, args.seed)
    print(df.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
