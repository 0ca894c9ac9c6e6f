"""Small geographic helpers on plain arrays (no database)."""

from __future__ import annotations

import numpy as np

EARTH_RADIUS_M = 6_371_008.8


def haversine_m(lon1: np.ndarray, lat1: np.ndarray, lon2: np.ndarray, lat2: np.ndarray) -> np.ndarray:
    """Great-circle distance in metres between points given in degrees (broadcasts)."""
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(a, dtype=np.float64)) for a in (lon1, lat1, lon2, lat2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def robust_centre(
    lonlat: np.ndarray, weights: np.ndarray | None = None, *, iterations: int = 50, tol_m: float = 1.0
) -> tuple[float, float]:
    """Weighted geometric median of points (lon, lat in degrees) by Weiszfeld's algorithm.

    The geometric median minimises the sum of distances, so a few far-away points (a holiday, a
    trip to the airport) pull it far less than they pull the mean. Points are projected onto a
    local equirectangular plane, which is accurate to well under a metre at city scale.

    1. Start at the weighted coordinate-wise median (already robust).
    2. Repeat: move to the weighted mean of the points, each weighted by weight / distance.
    3. Stop when a step is shorter than ``tol_m`` metres or after ``iterations`` steps.
    """
    points = np.asarray(lonlat, dtype=np.float64).reshape(-1, 2)
    if len(points) == 0:
        raise ValueError("robust_centre needs at least one point")
    w = np.ones(len(points)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(points),) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    if len(points) == 1:
        return float(points[0, 0]), float(points[0, 1])
    lat0 = np.radians(np.median(points[:, 1]))
    scale = np.array([np.cos(lat0), 1.0]) * np.radians(1.0) * EARTH_RADIUS_M  # metres per degree
    xy = points * scale
    centre = np.array([_weighted_median(xy[:, 0], w), _weighted_median(xy[:, 1], w)])
    for _ in range(iterations):
        dist = np.linalg.norm(xy - centre, axis=1)
        # A point exactly at the centre would divide by zero; a metre floor keeps it finite.
        inv = w / np.maximum(dist, 1.0)
        new = (xy * inv[:, None]).sum(axis=0) / inv.sum()
        step = np.linalg.norm(new - centre)
        centre = new
        if step < tol_m:
            break
    lon, lat = centre / scale
    return float(lon), float(lat)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2.0)])
