"""Seed sets summarised by k-means, so that 100,000 seeds score a target in milliseconds.

RALM's local attention sums over every seed for every target. Clustering the seeds into k
centroids (k = 20 by default, as in the paper) and letting each centroid stand for its members,
with a ``log(count)`` bias in the softmax (``SeedSetAttention`` takes the counts), reduces the cost
per target from O(seeds) to O(k). The clusters depend only on the seeds, so they are recomputed
when a seed set changes (asynchronously in serving) and never need retraining of the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SeedClusters:
    centroids: np.ndarray  # (k, E) float32, L2-normalised
    counts: np.ndarray  # (k,) float32 members per centroid


def kmeans(x: np.ndarray, k: int = 20, *, iterations: int = 25, seed: int = 0) -> SeedClusters:
    """Spherical k-means (cosine) with k-means++ seeding; fewer points than k keeps every point.

    1. Pick k starting centroids by k-means++ (each next one far from those chosen).
    2. Repeat: assign each point to its most similar centroid; move each centroid to the
       normalised mean of its points (an empty cluster keeps its place).
    3. Stop when assignments no longer change or after ``iterations`` rounds.
    """
    x = np.asarray(x, dtype=np.float32)
    if len(x) <= k:
        return SeedClusters(centroids=_normalise(x.copy()), counts=np.ones(len(x), dtype=np.float32))
    rng = np.random.default_rng(seed)
    unit = _normalise(x)
    centroids = [unit[rng.integers(len(unit))]]
    closest = 1.0 - unit @ centroids[0]
    for _ in range(1, k):
        weights = np.maximum(closest, 0.0) ** 2
        total = weights.sum()
        pick = rng.choice(len(unit), p=weights / total) if total > 0 else rng.integers(len(unit))
        centroids.append(unit[pick])
        closest = np.minimum(closest, 1.0 - unit @ unit[pick])
    c = np.stack(centroids)
    assignment = np.full(len(unit), -1)
    for _ in range(iterations):
        new = np.argmax(unit @ c.T, axis=1)
        if np.array_equal(new, assignment):
            break
        assignment = new
        sums = np.zeros_like(c)
        np.add.at(sums, assignment, unit)
        filled = np.bincount(assignment, minlength=k) > 0
        c[filled] = _normalise(sums[filled])
    counts = np.bincount(assignment, minlength=k).astype(np.float32)
    keep = counts > 0
    return SeedClusters(centroids=c[keep], counts=counts[keep])


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
