"""Vectorized stratified bootstrap of ROC / PR metrics.

Every bootstrap replicate is a row of multinomial counts ``W[b, i]`` (how often row ``i`` is drawn in replicate ``b``),
drawn within strata (label, or group x label) so each stratum keeps its size, as in Glocker et al. 2023
(``sklearn.utils.resample(..., stratify=targets)``). Rows are sorted once by descending score; with counts as weights,
the ROC / PR curves of all replicates of a chunk are a few cumulative sums over a (B, n) matrix, so AUC, AP, Youden's J
and the operating point at a target FPR come out for many replicates at once — no Python loop over replicates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

# Elements of one (replicates x rows) chunk; bounds memory at a few tens of MB whatever the table size.
CHUNK_ELEMENTS = 2_000_000


@dataclass
class Ranked:
    """Rows sorted by descending score, with tie blocks: the shared structure for (weighted) ROC and PR curves.

    ``block_start[k]`` is the first sorted row of the k-th distinct score (descending); ``values[k]`` that score.
    For a subset made with :meth:`subset`, ``global_block`` holds each block's 1-based block number in the parent.
    """

    order: np.ndarray  # positions in the original arrays, by descending score
    y: np.ndarray  # int32 labels in sorted order
    values: np.ndarray  # distinct scores, descending
    block_start: np.ndarray
    block_id: np.ndarray  # 1-based block of every sorted row
    global_block: np.ndarray | None = None

    @classmethod
    def from_scores(cls, y, p) -> "Ranked":
        y = np.asarray(y)
        p = np.asarray(p, dtype=float)
        order = np.argsort(-p, kind="stable")
        return cls._build(order, y[order].astype(np.int32), p[order])

    @classmethod
    def _build(cls, order, ys, ps, global_block_of_row=None) -> "Ranked":
        n = ps.size
        new = np.ones(n, dtype=bool)
        if n > 1:
            new[1:] = ps[1:] != ps[:-1]
        start = np.flatnonzero(new)
        bid = np.cumsum(new, dtype=np.int64)
        gb = None if global_block_of_row is None else global_block_of_row[start]
        return cls(order=order, y=ys, values=ps[start], block_start=start, block_id=bid, global_block=gb)

    @property
    def n(self) -> int:
        return int(self.y.size)

    @property
    def n_pos(self) -> int:
        return int(self.y.sum())

    @property
    def has_ties(self) -> bool:
        return self.block_start.size < self.y.size

    def subset(self, rows: np.ndarray) -> "Ranked":
        """The sub-structure of sorted rows ``rows`` (ascending positions keep the descending score order)."""
        ps = self.values[self.block_id[rows] - 1]
        return Ranked._build(self.order[rows], self.y[rows], ps, global_block_of_row=self.block_id[rows])

    def curves(self, W: np.ndarray | None = None) -> "Curves":
        """Cumulative true / false positives per block, shape (B, m); ``W`` holds counts in sorted order."""
        if W is None:
            W = np.ones((1, self.n), dtype=np.int32)
        pos = W * self.y
        neg = W - pos
        if self.has_ties:
            pos = np.add.reduceat(pos, self.block_start, axis=1)
            neg = np.add.reduceat(neg, self.block_start, axis=1)
        # int32 is exact: a row of counts sums to the (sub)sample size
        return Curves(np.cumsum(pos, axis=1, dtype=np.int32), np.cumsum(neg, axis=1, dtype=np.int32), pos, neg,
                      self.has_ties)


@dataclass
class Curves:
    """Cumulative (TP, FP) and per-block increments (dTP, dFP) of B weighted ROC curves over m blocks."""

    TP: np.ndarray
    FP: np.ndarray
    dTP: np.ndarray
    dFP: np.ndarray
    ties: bool

    @property
    def P(self) -> np.ndarray:
        return self.TP[:, -1].astype(float)

    @property
    def N(self) -> np.ndarray:
        return self.FP[:, -1].astype(float)


# ----------------------------------------------------------------------------------------------------------------
# Metrics from cumulative curves (each returns one value per replicate row)


def auc_from_curves(c: Curves) -> np.ndarray:
    """Mann-Whitney AUC (ties count one half), exactly sklearn's ``roc_auc_score`` for unit weights.

    Integer arithmetic: 2 * P * N * AUC = sum_k dFP_k * (2 TP_k - dTP_k); without ties a block is one row, either
    positive or negative, so the dFP * dTP term vanishes.
    """
    num2 = 2 * np.einsum("ij,ij->i", c.dFP, c.TP, dtype=np.int64)
    if c.ties:
        num2 -= np.einsum("ij,ij->i", c.dFP, c.dTP, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num2 / (2.0 * c.P * c.N)


def average_precision_from_curves(c: Curves) -> np.ndarray:
    """Average precision sum_k (R_k - R_{k-1}) P_k over distinct thresholds (sklearn's ``average_precision_score``)."""
    tot = c.TP + c.FP
    prec = np.divide(c.TP, tot, out=np.zeros(c.TP.shape, dtype=float), where=tot > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("ij,ij->i", c.dTP, prec) / c.P


def max_youden_from_curves(c: Curves) -> np.ndarray:
    """Maximum over thresholds of TPR - FPR (Youden's J); 0 for the empty prediction set."""
    with np.errstate(invalid="ignore", divide="ignore"):
        j = (c.TP / c.P[:, None] - c.FP / c.N[:, None]).max(axis=1)
    return np.maximum(j, 0.0)


def threshold_index(c: Curves, target_fpr: float) -> np.ndarray:
    """Operating point whose FPR is closest to ``target_fpr``, per row: 0 = predict nothing, k = blocks 1..k positive.

    Equals ``np.argmin(np.abs(fpr - target))`` on ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``, as
    Glocker et al. choose their global threshold (first occurrence on ties, i.e. the higher threshold). Rows are
    monotone, so one ``searchsorted`` on row-offset keys finds every row's point at once.
    """
    FP = c.FP
    B, m = FP.shape
    F = np.zeros((B, m + 1), dtype=np.int64)
    F[:, 1:] = FP
    N = FP[:, -1].astype(np.int64)
    span = int(N.max()) + 1
    off = np.arange(B, dtype=np.int64) * span
    F += off[:, None]
    keys = F.ravel()
    q = target_fpr * N.astype(float)
    base = np.arange(B, dtype=np.int64) * (m + 1)
    a = np.searchsorted(keys, q + off, side="left") - base  # first index with F >= q
    a = np.clip(a, 1, m)  # q > 0 and F[:, m] = N >= q
    rows = np.arange(B)
    lo, hi = F[rows, a - 1] - off, F[rows, a] - off
    Nf = N.astype(float)
    take_lo = np.abs(lo / Nf - target_fpr) <= np.abs(hi / Nf - target_fpr)  # same float arithmetic as sklearn's fpr
    first_lo = np.searchsorted(keys, lo + off, side="left") - base  # first occurrence of the lower value
    return np.where(take_lo, first_lo, a)


def rates_at(c: Curves, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TPR and FPR when blocks 1..k (per row) are called positive."""
    rows = np.arange(c.TP.shape[0])
    tp = np.where(k > 0, c.TP[rows, np.maximum(k - 1, 0)], 0)
    fp = np.where(k > 0, c.FP[rows, np.maximum(k - 1, 0)], 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / c.P, fp / c.N


def local_index(sub: Ranked, k_global: np.ndarray) -> np.ndarray:
    """For a subset, how many of its blocks lie at or above global block ``k_global`` (0 = none)."""
    return np.searchsorted(sub.global_block, k_global, side="right")


def threshold_value(r: Ranked, k: np.ndarray) -> np.ndarray:
    """The score threshold (predict positive if score >= threshold) of operating point ``k``; +inf for k = 0."""
    return np.where(k > 0, r.values[np.maximum(k - 1, 0)], np.inf)


# ----------------------------------------------------------------------------------------------------------------
# Resampling


def chunk_size(n_rows: int, n_boot: int) -> int:
    return int(max(1, min(n_boot, CHUNK_ELEMENTS // max(n_rows, 1))))


def stratified_counts(strata: np.ndarray, n_boot: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Yield (b, n) int32 count matrices, b <= chunk: each row one bootstrap replicate drawn within strata.

    ``strata`` gives every (sorted) row its stratum code; each stratum keeps its size in every replicate.
    """
    strata = np.asarray(strata)
    n = strata.size
    members = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    done = 0
    step = chunk_size(n, n_boot)
    while done < n_boot:
        b = min(step, n_boot - done)
        W = np.empty((b, n), dtype=np.int32)
        for mem in members:
            m = mem.size
            dt = np.int32 if b * m < 2**31 else np.int64
            d = rng.integers(0, m, size=(b, m), dtype=dt)
            d += (np.arange(b, dtype=dt) * m)[:, None]
            W[:, mem] = np.bincount(d.ravel(), minlength=b * m).reshape(b, m)
        yield W
        done += b


def percentile_ci(samples: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over replicates (axis 0); NaN where fewer than 2 finite replicates exist."""
    samples = np.asarray(samples, dtype=float)
    if samples.shape[0] == 0:
        shape = samples.shape[1:]
        return np.full(shape, np.nan), np.full(shape, np.nan)
    finite = np.isfinite(samples).sum(axis=0)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanquantile(samples, [alpha / 2, 1 - alpha / 2], axis=0)
    lo = np.where(finite >= 2, lo, np.nan)
    hi = np.where(finite >= 2, hi, np.nan)
    return lo, hi


def derive_rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator for one (task, attribute, …) stream: stable under adding or removing other tasks."""
    import zlib

    spawn = tuple(zlib.crc32(str(k).encode("utf-8")) for k in keys)
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=spawn))
