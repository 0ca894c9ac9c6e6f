"""Cohort calibration (seed 002 section 2.6.1): a small model for people with little history.

The main ranker learns mostly from people with many friends and visits; for someone with one or
two friends its pair features are nearly empty, and its scores are less reliable. A logistic
regression trained only on that cohort takes the ranker's score plus coarse features and
corrects the order of the cohort's candidates. It changes nothing for everyone else.

Features of a (query, candidate) pair, all cheap and available at serving time:
the head's logit standardised within the query's candidates and its rank percentile, the
two-tower cosine, the candidate's log degree, the interest cosine, and the log distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURES = ("logit_z", "logit_rank", "cosine", "log_degree", "interest_cosine", "log_distance")


def pair_features(
    queries: np.ndarray, candidates: np.ndarray, logits: np.ndarray, cosine: np.ndarray,
    degree: np.ndarray, interest_cosine: np.ndarray, sq_chord: np.ndarray,
) -> np.ndarray:
    """(m, len(FEATURES)) for m (query, candidate) rows grouped by query (contiguous)."""
    z = np.zeros(len(logits))
    rank = np.zeros(len(logits))
    starts = np.flatnonzero(np.r_[True, queries[1:] != queries[:-1]])
    for start, end in zip(starts, np.r_[starts[1:], len(queries)], strict=True):
        part = logits[start:end]
        z[start:end] = (part - part.mean()) / (part.std() + 1e-6)
        rank[start:end] = np.argsort(np.argsort(part)) / max(end - start - 1, 1)
    distance_km = np.sqrt(np.maximum(sq_chord, 0.0)) * 6371.0
    return np.column_stack([z, rank, cosine, np.log1p(degree[candidates]), interest_cosine, np.log1p(distance_km)])


@dataclass
class CohortCalibrator:
    weights: np.ndarray
    bias: float
    mean: np.ndarray
    std: np.ndarray

    def score(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std) @ self.weights + self.bias


def fit(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-2, iterations: int = 50) -> CohortCalibrator:
    """L2-regularised logistic regression by Newton's method (a handful of features)."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    xs = np.column_stack([(x - mean) / std, np.ones(len(x))])
    w = np.zeros(xs.shape[1])
    reg = np.full(xs.shape[1], l2)
    reg[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(xs @ w)))
        grad = xs.T @ (p - y) + reg * w
        hessian = (xs * (p * (1 - p))[:, None]).T @ xs + np.diag(reg + 1e-9)
        step = np.linalg.solve(hessian, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return CohortCalibrator(weights=w[:-1], bias=float(w[-1]), mean=mean, std=std)
