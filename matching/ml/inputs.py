"""Everything the towers read about every user, and batches of it as ``TowerInput``.

``UserInputs`` holds the dense feature matrix and the id bags (venues visited, friends) as CSR
rows, plus each user's location cell. ``batch(rows)`` slices them for a batch of users, and can
hide chosen bag members: when a tower learns from the friendship (u, v), v is removed from u's
friend bag and u from v's, so that the model learns to predict an edge from the rest of the graph
instead of reading the answer from its input (held-out edges are absent from the bags too).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from matching.ml import kernels
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
    # bucket count -> (indices, keys, member rows) of ``_member_buckets``; a new instance (as
    # ``with_friends`` makes) starts empty, and a replaced matrix or key array is noticed.
    _bucket_cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False, compare=False,
    )

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
        # Re-normalise what dropout left, so a venue bag stays a weighted mean (stored bags are).
        dropped = bag_dropout > 0 and rng is not None
        if config.venue_buckets:
            members = self._member_buckets(self.venues, self.venue_keys, config.venue_buckets)
            idx, off, w = _bag(self.venues, members, rows, None, bag_dropout, rng, weights=True, renormalise=dropped)
            x.venue_index = torch.from_numpy(idx)
            x.venue_offsets = torch.from_numpy(off)
            x.venue_weights = torch.from_numpy(w)
        if config.user_buckets:
            members = self._member_buckets(self.friends, self.user_keys, config.user_buckets)
            idx, off, _ = _bag(self.friends, members, rows, hide, bag_dropout, rng, weights=False, renormalise=False)
            x.friend_index = torch.from_numpy(idx)
            x.friend_offsets = torch.from_numpy(off)
        if config.cell_buckets:
            x.cells = torch.from_numpy(self.cells[rows])
        return x

    def _member_buckets(self, matrix: sp.csr_matrix, keys: np.ndarray, buckets: int) -> np.ndarray:
        """The embedding row of every stored member of ``matrix``'s bags, computed once per matrix.

        A batch then gathers its members' rows instead of hashing their keys again (half the
        time of building a training batch). int32 while the buckets fit, to halve the memory.
        """
        cached = self._bucket_cache.get(buckets)
        if cached is None or cached[0] is not matrix.indices or cached[1] is not keys:
            dtype = np.int32 if buckets <= np.iinfo(np.int32).max else np.int64
            cached = (matrix.indices, keys, (keys[matrix.indices] % buckets).astype(dtype))
            self._bucket_cache[buckets] = cached
        return cached[2]


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
    members: np.ndarray,
    rows: np.ndarray,
    hide: np.ndarray | None,
    dropout: float,
    rng: np.random.Generator | None,
    *,
    weights: bool,
    renormalise: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat member embedding rows (``members[j]`` for stored member j), per-row offsets and member
    weights (empty unless ``weights``; each row's summing to 1 when ``renormalise``) of CSR
    ``rows``, without the hidden and dropped members. By the compiled ``kernels.bag_gather`` where
    it builds (the dropout then draws its seed from ``rng``), else in NumPy."""
    dropping = dropout > 0 and rng is not None
    seed = int(rng.integers(0, 2**63)) if dropping else 0
    compiled = kernels.bag_gather(
        matrix.indptr, matrix.indices, matrix.data, members, rows, hide, dropout if dropping else 0.0, seed,
        weights=weights, renormalise=renormalise,
    )
    if compiled is not None:
        return compiled
    starts = matrix.indptr[rows]
    lengths = matrix.indptr[rows + 1] - starts
    first = np.cumsum(lengths) - lengths  # where each row's members begin in the flat arrays
    total = int(lengths.sum())
    position = np.arange(total) + np.repeat(starts - first, lengths)  # into the CSR arrays
    keep: np.ndarray | None = None
    if hide is not None:
        keep = matrix.indices[position] != np.repeat(np.asarray(hide), lengths)
    if dropout > 0 and rng is not None:
        survived = rng.random(total) >= dropout
        keep = survived if keep is None else keep & survived
    offsets = first
    if keep is not None:
        position = position[keep]
        offsets = np.concatenate([[0], np.cumsum(keep)])[first]  # members kept before each row
    index = members[position].astype(np.int64)
    weight = matrix.data[position].astype(np.float32) if weights else np.zeros(0, dtype=np.float32)
    if renormalise and weights:
        weight = _renormalise(weight, offsets)
    return index, offsets.astype(np.int64), weight


def _renormalise(weights: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    total = len(weights)
    if total == 0:
        return weights
    counts = np.diff(np.append(offsets, total))
    owner = np.repeat(np.arange(len(offsets)), counts)
    sums = np.bincount(owner, weights=weights, minlength=len(offsets))
    return (weights / np.maximum(sums[owner], 1e-12)).astype(np.float32)
