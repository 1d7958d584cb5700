"""Metrics, as plain functions of numpy arrays.

Each metric declares what it needs (``NEEDS``): ``scores`` and ``labels`` for AUC and
logloss, ``groups`` as well for GAUC, ``ranks`` (1-based rank of the true item) for the
ranking metrics. The oracle AUC of a split is :func:`auc` of the true click probability
against the labels: the best AUC any model could reach on that data.
"""

from __future__ import annotations

import warnings

import numpy as np

from recsys_embed.errors import UndefinedMetricWarning

NEEDS: dict[str, tuple[str, ...]] = {
    "auc": ("scores", "labels"),
    "logloss": ("scores", "labels"),
    "gauc": ("scores", "labels", "groups"),
    "hr": ("ranks",),
    "ndcg": ("ranks",),
    "mrr": ("ranks",),
}


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.float64).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in length: {scores.shape[0]} vs {labels.shape[0]}")
    return scores, labels


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    boundaries = np.flatnonzero(np.diff(sorted_x)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(x)]))
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks start+1..end
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count one half). NaN, with an
    :class:`~recsys_embed.errors.UndefinedMetricWarning`, if the labels have one class."""
    scores, labels = _check(scores, labels)
    pos = labels > 0.5
    n_pos = int(pos.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        warnings.warn(UndefinedMetricWarning(
            f"AUC is undefined: the {len(labels)} labels evaluated are all {'positive' if n_pos else 'negative'} "
            "(AUC needs both classes); evaluate on data with clicks and non-clicks"
        ), stacklevel=2)  # fmt: skip
        return float("nan")
    ranks = _average_ranks(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def oracle_auc(p_true: np.ndarray, labels: np.ndarray) -> float:
    """The best AUC any model could reach: the AUC of the true click probability."""
    return auc(p_true, labels)


def logloss(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities (clipped to [eps, 1 - eps])."""
    probs, labels = _check(probs, labels)
    p = np.clip(probs, eps, 1 - eps)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def gauc(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    """Group AUC: per-group AUC weighted by group size, over groups with both classes."""
    scores, labels = _check(scores, labels)
    groups = np.asarray(groups).ravel()
    order = np.argsort(groups, kind="mergesort")
    g, s, y = groups[order], scores[order], labels[order]
    bounds = np.flatnonzero(g[1:] != g[:-1]) + 1
    total, weight = 0.0, 0
    for lo, hi in zip(np.concatenate(([0], bounds)), np.concatenate((bounds, [len(g)]))):
        yy = y[lo:hi]
        n_pos = int((yy > 0.5).sum())
        if 0 < n_pos < hi - lo:
            total += (hi - lo) * auc(s[lo:hi], yy)
            weight += hi - lo
    return total / weight if weight else float("nan")


def hit_rate(ranks: np.ndarray, k: int) -> float:
    """HR@k: share of cases whose true item ranks in the top k (ranks are 1-based)."""
    return float(np.mean(np.asarray(ranks) <= k))


def ndcg(ranks: np.ndarray, k: int) -> float:
    """NDCG@k with one relevant item: 1/log2(rank + 1) inside the top k, else 0."""
    r = np.asarray(ranks, dtype=np.float64)
    return float(np.mean(np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)))


def mrr(ranks: np.ndarray, k: int) -> float:
    """MRR@k: mean reciprocal rank, 0 outside the top k."""
    r = np.asarray(ranks, dtype=np.float64)
    return float(np.mean(np.where(r <= k, 1.0 / r, 0.0)))
