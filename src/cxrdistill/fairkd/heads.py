"""Linear multi-label heads on frozen teacher embeddings, fitted once before the student is trained (FairDi's
per-group teachers on a black-box teacher: the teacher is only seen through its stored embeddings).

:func:`fit_logistic` minimises, for every task k separately (the objective is separable, so one joint L-BFGS solve
finds every task's optimum)::

    (1 / Σ_i w_i m_ik) Σ_i w_i m_ik BCE(x_i·W_k + b_k, y_ik) + (l2 / 2) ‖W_k − W0_k‖²

with m_ik = 1 where y_ik is known (NaN = ignore), the bias unpenalised, and ``prior`` W0 = 0 by default — the same
optimum as scikit-learn's ``LogisticRegression(C = 1 / (l2 · n_k))`` (tested). With ``prior`` = a pooled head, a
group's head is "fine-tuned from the pooled head and shrunk toward it" — FairDi's step 1 (teachers initialised from
the step-0 model, optimised for their own group) in closed form.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn


def fit_logistic(X: np.ndarray, Y: np.ndarray, *, l2: float = 1e-2, weight: np.ndarray | None = None,
                 prior: tuple[np.ndarray, np.ndarray] | None = None, max_iter: int = 200,
                 tol: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """(W (K, D), b (K,)) of an L2-regularised multi-label logistic regression (see the module docstring).

    Tasks without both classes among the labelled rows keep the prior's row (or W = 0, b = logit of the rate)."""
    X = torch.as_tensor(np.asarray(X, dtype=np.float64))
    Yn = np.asarray(Y, dtype=np.float64).reshape(len(X), -1)
    n, d = X.shape
    k = Yn.shape[1]
    mask = torch.as_tensor(np.isfinite(Yn))
    Y = torch.as_tensor(np.nan_to_num(Yn, nan=0.0))
    w = torch.ones(n, dtype=torch.float64) if weight is None else torch.as_tensor(np.asarray(weight, np.float64))
    mw = mask.double() * w[:, None]
    denom = mw.sum(0)
    pos = (mw * Y).sum(0)
    ok = (denom > 0) & (pos > 0) & (pos < denom)
    if prior is not None:
        W0 = torch.as_tensor(np.asarray(prior[0], np.float64)).reshape(k, d)
        b0 = torch.as_tensor(np.asarray(prior[1], np.float64)).reshape(k)
    else:
        W0 = torch.zeros(k, d, dtype=torch.float64)
        rate = (pos / denom.clamp_min(1e-12)).clamp(1e-4, 1 - 1e-4)
        b0 = torch.where(denom > 0, torch.log(rate / (1 - rate)), torch.zeros(k, dtype=torch.float64))
    W = W0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    if not bool(ok.any()):
        return W0.numpy().copy(), b0.numpy().copy()
    okf = ok.double()
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=tol * 1e-3,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        z = X @ W.t() + b
        per = nn.functional.binary_cross_entropy_with_logits(z, Y, reduction="none") * mw
        loss = ((per.sum(0) / denom.clamp_min(1e-12)) * okf).sum() + 0.5 * l2 * (((W - W0) ** 2).sum(1) * okf).sum()
        loss.backward()
        return loss

    opt.step(closure)
    Wn, bn = W.detach().clone(), b.detach().clone()
    Wn[~ok], bn[~ok] = W0[~ok], b0[~ok]
    return Wn.numpy(), bn.numpy()


def fold_standardization(W: np.ndarray, b: np.ndarray, mean: np.ndarray, std: np.ndarray):
    """A head fitted on (x − μ)/σ as one acting on raw x: W' = W/σ, b' = b − W·(μ/σ)."""
    W = np.asarray(W, np.float64)
    sd = np.where(np.asarray(std, np.float64) > 1e-8, np.asarray(std, np.float64), 1.0)
    return W / sd[None, :], np.asarray(b, np.float64) - W @ (np.asarray(mean, np.float64) / sd)


class PooledLinear(nn.Module):
    """A fixed linear head on teacher embeddings (N, D), or on token embeddings (N, T, D) mean-pooled first."""

    def __init__(self, W: np.ndarray, b: np.ndarray):
        super().__init__()
        self.linear = nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(torch.as_tensor(W, dtype=torch.float32))
            self.linear.bias.copy_(torch.as_tensor(b, dtype=torch.float32))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        return self.linear(t.mean(1) if t.ndim == 3 else t)


def fit_pooled_head(T: np.ndarray, Y: np.ndarray, *, l2: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """One linear head on raw teacher embeddings (fitted on standardised ones, standardisation folded in)."""
    T = np.asarray(T, np.float64)
    if T.ndim == 3:
        T = T.mean(1)
    mu, sd = T.mean(0), T.std(0)
    W, b = fit_logistic((T - mu) / np.where(sd > 1e-8, sd, 1.0), Y, l2=l2)
    return fold_standardization(W, b, mu, sd)


def fit_group_heads(T: np.ndarray, Y: np.ndarray, g: np.ndarray, n_groups: int, *, l2: float = 1e-2,
                    group_l2: float = 5e-2, min_group_size: int = 8,
                    min_class_count: int = 3) -> tuple[tuple[np.ndarray, np.ndarray], list[tuple[np.ndarray,
                                                                                                    np.ndarray]],
                                                       list[dict]]:
    """The pooled head and one head per group on raw teacher embeddings ``T`` (standardised internally, folded back).

    A group's head starts from the pooled head and is shrunk toward it (``group_l2``); a task with fewer than
    ``min_class_count`` positives or negatives in a group, or a group smaller than ``min_group_size``, keeps the
    pooled head's row. Returns (pooled (W, b), per-group [(W, b)], per-group notes)."""
    T = np.asarray(T, np.float64)
    if T.ndim == 3:
        T = T.mean(1)
    mu, sd = T.mean(0), T.std(0)
    Z = (T - mu) / np.where(sd > 1e-8, sd, 1.0)
    Y = np.asarray(Y, np.float64).reshape(len(T), -1)
    g = np.asarray(g, np.int64)
    Wp, bp = fit_logistic(Z, Y, l2=l2)
    heads, notes = [], []
    for k in range(n_groups):
        rows = np.flatnonzero(g == k)
        if len(rows) < min_group_size:
            heads.append(fold_standardization(Wp, bp, mu, sd))
            notes.append({"group": k, "n": int(len(rows)), "own_tasks": 0})
            continue
        Yk = Y[rows].copy()
        pos = np.nansum(Yk == 1, axis=0)
        neg = np.nansum(Yk == 0, axis=0)
        thin = (pos < min_class_count) | (neg < min_class_count)
        Yk[:, thin] = np.nan  # keeps the pooled row for that task
        Wk, bk = fit_logistic(Z[rows], Yk, l2=group_l2, prior=(Wp, bp))
        heads.append(fold_standardization(Wk, bk, mu, sd))
        notes.append({"group": k, "n": int(len(rows)), "own_tasks": int((~thin).sum())})
    return fold_standardization(Wp, bp, mu, sd), heads, notes


def linear_modules(heads: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[PooledLinear]:
    return [PooledLinear(W, b) for W, b in heads]
