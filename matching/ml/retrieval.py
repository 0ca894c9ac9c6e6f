"""Candidate retrieval: several channels merged before ranking, as production systems do.

Each channel proposes up to ``k`` people for a user, excluding themself and the people they are
already connected to:

1. ``two_tower``: nearest target embeddings to the user's seed embedding (inner product on
   L2-normalised vectors: the score the towers were trained on);
2. ``friends_of_friends``: people two hops away, by Adamic-Adar over friends;
3. ``co_visitors``: people who visited the same venues, by Adamic-Adar over venues;
4. ``nearby``: the closest current locations;
5. ``popular``: the most-connected people (in serving: the most-connected near the user), the
   prior that new members' first connections go to the well-connected.

The ranking head then scores the union. Channels are sparse-matrix products over a batch of
users at a time, never a loop over candidates.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from matching.ml.pairs import adamic_adar_weights

CHANNELS = ("two_tower", "friends_of_friends", "co_visitors", "nearby", "popular")


@dataclass
class Candidates:
    """Candidate users of each query user: ``users[i]`` with ``channel_mask[i]`` (bit per channel)."""

    queries: np.ndarray  # (Q,) user rows
    users: list[np.ndarray]
    channel_mask: list[np.ndarray]


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries of each row, best first (-inf entries come last)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _sparse_top_k(matrix: sp.csr_matrix, k: int) -> list[np.ndarray]:
    out = []
    for i in range(matrix.shape[0]):
        start, end = matrix.indptr[i], matrix.indptr[i + 1]
        cols, vals = matrix.indices[start:end], matrix.data[start:end]
        if len(cols) > k:
            keep = np.argpartition(-vals, k - 1)[:k]
            cols, vals = cols[keep], vals[keep]
        out.append(cols[np.argsort(-vals, kind="stable")])
    return out


class Retriever:
    def __init__(
        self,
        friends: sp.csr_matrix,
        venues: sp.csr_matrix,
        lon: np.ndarray,
        lat: np.ndarray,
        seed_embeddings: np.ndarray | None = None,
        target_embeddings: np.ndarray | None = None,
        k: int = 100,
    ) -> None:
        self.friends = friends.tocsr()
        self.k = k
        degree = np.asarray(self.friends.sum(axis=0)).ravel()
        self.friends_aa = (self.friends @ sp.diags(adamic_adar_weights(degree))).tocsr()
        binary = venues.tocsr().copy()
        binary.data[:] = 1.0
        self.venues = binary
        visitors = np.asarray(binary.sum(axis=0)).ravel()
        self.venues_aa = (binary @ sp.diags(adamic_adar_weights(visitors))).tocsr()
        known = np.isfinite(lon) & np.isfinite(lat)
        self.known = known
        # Unit vectors on the sphere: nearest by chord length == nearest by great circle.
        lon_r, lat_r = np.radians(np.nan_to_num(lon)), np.radians(np.nan_to_num(lat))
        self.xyz = np.column_stack([np.cos(lat_r) * np.cos(lon_r), np.cos(lat_r) * np.sin(lon_r), np.sin(lat_r)])
        self.seed_embeddings = seed_embeddings
        self.target_embeddings = target_embeddings

    def _exclusion(self, queries: np.ndarray) -> sp.csr_matrix:
        """Self and existing friends, per query row."""
        n = self.friends.shape[0]
        own = sp.csr_matrix((np.ones(len(queries)), (np.arange(len(queries)), queries)), shape=(len(queries), n))
        return (self.friends[queries] + own).tocsr()

    def channel(self, name: str, queries: np.ndarray) -> list[np.ndarray]:
        """Top-k candidates of one channel for each query, best first."""
        n = self.friends.shape[0]
        excluded = self._exclusion(queries)
        if name == "two_tower":
            if self.seed_embeddings is None or self.target_embeddings is None:
                return [np.zeros(0, dtype=np.int64) for _ in queries]
            scores = self.seed_embeddings[queries] @ self.target_embeddings.T
            scores[excluded.nonzero()] = -np.inf
            return [row[np.isfinite(scores[i, row])] for i, row in enumerate(top_k_rows(scores, self.k))]
        if name == "friends_of_friends":
            scores = (self.friends_aa[queries] @ self.friends.T).tocsr()
        elif name == "co_visitors":
            scores = (self.venues_aa[queries] @ self.venues.T).tocsr()
        elif name == "popular":
            degree = np.asarray(self.friends.sum(axis=0)).ravel().astype(np.float64)
            scores_dense = np.broadcast_to(degree, (len(queries), n)).copy()
            scores_dense[excluded.nonzero()] = -np.inf
            return [row[np.isfinite(scores_dense[i, row])] for i, row in enumerate(top_k_rows(scores_dense, self.k))]
        elif name == "nearby":
            d2 = ((self.xyz[queries][:, None, :] - self.xyz[None, :, :]) ** 2).sum(-1)
            d2[:, ~self.known] = np.inf
            d2[~self.known[queries]] = np.inf
            scores_dense = -d2
            scores_dense[excluded.nonzero()] = -np.inf
            return [row[np.isfinite(scores_dense[i, row])] for i, row in enumerate(top_k_rows(scores_dense, self.k))]
        else:
            raise ValueError(f"unknown channel {name!r}; known: {', '.join(CHANNELS)}")
        scores = scores - scores.multiply(excluded.astype(bool))
        scores.eliminate_zeros()
        assert scores.shape == (len(queries), n)
        return _sparse_top_k(scores, self.k)

    def retrieve(self, queries: np.ndarray, channels: tuple[str, ...] = CHANNELS, batch: int = 512) -> Candidates:
        users: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        for chunk in _chunks(np.asarray(queries, dtype=np.int64), batch):
            found = {name: self.channel(name, chunk) for name in channels}
            for i in range(len(chunk)):
                parts = [found[name][i] for name in channels]
                bits = [np.full(len(p), 1 << CHANNELS.index(name), dtype=np.int64) for name, p in zip(channels, parts, strict=True)]
                all_users = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
                all_bits = np.concatenate(bits) if bits else np.zeros(0, dtype=np.int64)
                unique, inverse = np.unique(all_users, return_inverse=True)
                mask = np.zeros(len(unique), dtype=np.int64)
                np.bitwise_or.at(mask, inverse, all_bits)
                users.append(unique.astype(np.int64))
                masks.append(mask)
        return Candidates(queries=np.asarray(queries, dtype=np.int64), users=users, channel_mask=masks)


def _chunks(values: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(values), size):
        yield values[start:start + size]
