"""Everything the towers read about every user, and batches of it as ``TowerInput``.

``UserInputs`` holds the dense feature matrix and the id bags (venues visited, friends) as CSR
rows, plus each user's location cell. ``batch(rows)`` slices them for a batch of users, and can
hide chosen bag members: when a tower learns from the friendship (u, v), v is removed from u's
friend bag and u from v's, so that the model learns to predict an edge from the rest of the graph
instead of reading the answer from its input (held-out edges are absent from the bags too).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from matching.ml.data import KIND_CODE, CityData
from matching.ml.features import friend_matrix
from matching.ml.model import ModelConfig, TowerInput


@dataclass
class UserInputs:
    features: np.ndarray  # (n, D) float32
    venues: sp.csr_matrix  # (n, m) visit weights, rows normalised to sum 1
    friends: sp.csr_matrix  # (n, n) 0/1
    cells: np.ndarray  # (n,) int64 bucket of the ~5 km cell (bucket 0 also means "unknown")
    # Stable ids behind bag members (database ids), so an embedding row keeps its meaning when
    # rows are added: member ``j`` of a venue bag is embedding ``venue_keys[j] % venue_buckets``.
    venue_keys: np.ndarray
    user_keys: np.ndarray

    @property
    def n_users(self) -> int:
        return self.features.shape[0]

    @classmethod
    def build(cls, data: CityData, features: np.ndarray, config: ModelConfig) -> UserInputs:
        n, m = data.n_users, data.n_venues
        visits = (data.event_kind == KIND_CODE["visit"]) & (data.event_venue >= 0)
        weights = np.log1p(np.maximum(data.event_weight[visits], 0.0)).astype(np.float32)
        venues = sp.csr_matrix((weights, (data.event_user[visits], data.event_venue[visits])), shape=(n, m))
        totals = np.asarray(venues.sum(axis=1)).ravel()
        venues = sp.diags(np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)) @ venues
        return cls(
            features=np.ascontiguousarray(features, dtype=np.float32),
            venues=venues.tocsr().astype(np.float32),
            friends=friend_matrix(data),
            cells=cell_buckets(data.lat, data.lon, config.cell_buckets),
            venue_keys=data.venue_ids.astype(np.int64),
            user_keys=data.user_ids.astype(np.int64),
        )

    def with_friends(self, friends: sp.csr_matrix) -> UserInputs:
        return dataclasses.replace(self, friends=friends)

    def batch(
        self,
        rows: np.ndarray,
        config: ModelConfig,
        *,
        hide: np.ndarray | None = None,
        bag_dropout: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> TowerInput:
        """The tower input of users ``rows``; ``hide[i]`` (a user row or -1) leaves row i's friend bag."""
        rows = np.asarray(rows, dtype=np.int64)
        x = TowerInput(dense=torch.from_numpy(self.features[rows]))
        if config.venue_buckets:
            idx, off, w = _bag(self.venues, rows, None, bag_dropout, rng)
            x.venue_index = torch.from_numpy(self.venue_keys[idx] % config.venue_buckets)
            x.venue_offsets = torch.from_numpy(off)
            # Re-normalise what dropout left, so a bag stays a weighted mean.
            x.venue_weights = torch.from_numpy(_renormalise(w, off, len(idx)))
        if config.user_buckets:
            idx, off, _ = _bag(self.friends, rows, hide, bag_dropout, rng)
            x.friend_index = torch.from_numpy(self.user_keys[idx] % config.user_buckets)
            x.friend_offsets = torch.from_numpy(off)
        if config.cell_buckets:
            x.cells = torch.from_numpy(self.cells[rows])
        return x


def cell_buckets(lat: np.ndarray, lon: np.ndarray, buckets: int) -> np.ndarray:
    """Hash the ~5 km grid cell (0.045 degrees) of each location into ``1..buckets-1``; 0 = unknown."""
    if buckets <= 1:
        return np.zeros(len(lat), dtype=np.int64)
    known = np.isfinite(lat) & np.isfinite(lon)
    row = np.floor((np.where(known, lat, 0.0) + 90.0) / 0.045).astype(np.int64)
    col = np.floor((np.where(known, lon, 0.0) + 180.0) / 0.045).astype(np.int64)
    bucket = 1 + (row * 1_000_003 + col) % (buckets - 1)
    return np.where(known, bucket, 0)


def _bag(
    matrix: sp.csr_matrix,
    rows: np.ndarray,
    hide: np.ndarray | None,
    dropout: float,
    rng: np.random.Generator | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat member indices, per-row offsets and member weights of CSR ``rows``."""
    starts, ends = matrix.indptr[rows], matrix.indptr[rows + 1]
    lengths = ends - starts
    total = int(lengths.sum())
    owner = np.repeat(np.arange(len(rows)), lengths)
    position = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(starts, lengths)
    index = matrix.indices[position].astype(np.int64)
    weight = matrix.data[position].astype(np.float32)
    keep = np.ones(total, dtype=bool)
    if hide is not None:
        keep &= index != np.asarray(hide)[owner]
    if dropout > 0 and rng is not None:
        keep &= rng.random(total) >= dropout
    index, weight, owner = index[keep], weight[keep], owner[keep]
    counts = np.bincount(owner, minlength=len(rows))
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return index, offsets, weight


def _renormalise(weights: np.ndarray, offsets: np.ndarray, total: int) -> np.ndarray:
    if total == 0:
        return weights
    owner = np.repeat(np.arange(len(offsets)), np.diff(np.concatenate([offsets, [total]])))
    sums = np.bincount(owner, weights=weights, minlength=len(offsets))
    return (weights / np.maximum(sums[owner], 1e-12)).astype(np.float32)
