"""Pair features for the ranking stage: one user against many candidates, vectorised.

``PairFeaturizer`` builds the sparse matrices once per ``CityData`` (friends, venues visited,
activities joined, weekly availability); ``pair_features(u, candidates)`` is then a handful of
sparse row products, never a Python loop over candidates.

Columns (``PAIR_NAMES``), with their scale:
    distance_km          haversine distance between current locations (NaN -> 0, flagged)
    distance_score       exp(-distance_km / 5): 1 next door, 0.37 at 5 km
    mutual_friends       log1p(common friends) / log1p(100)
    friend_adamic_adar   sum over common friends z of 1 / log(degree(z)), / 10, capped at 1
    common_venues        log1p(venues both visited) / log1p(100)
    venue_adamic_adar    sum over common venues of 1 / log(visitors(venue)), / 10, capped at 1
    interest_cosine      cosine of the preference vectors (interests, activities, places, times)
    interest_jaccard     Jaccard of the interests each holds (> 0)
    co_participation     log1p(activities both joined) / log1p(20)
    age_gap              |birth year difference| / 50, capped at 1 (0.5 when either is unknown)
    availability_overlap weekly hours both are free / 40, capped at 1
    has_distance         both locations known
    candidate_friends    log1p(the candidate's friend count) / log1p(1000): popular people are
                         more often befriended, a strong prior on social data
    user_friends         the same for the user asking
    candidate_venues     log1p(venues the candidate visited) / log1p(1000)
    resource_allocation  sum over common friends z of 1 / degree(z), capped at 1: like
                         Adamic-Adar, but discounting hubs harder
    paths3               log1p(paths of length 3 between the two) / log1p(1000): friends of
                         friends of friends, which finds people with no common friend yet
    co_located           log1p(days both were at the same spot) / log1p(20): location pings in
                         the same ~10 m cell on the same UTC day, by Adamic-Adar over those
                         (spot, day) cells so that a stadium on match day counts for little
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from matching.ml.data import KIND_CODE, CityData
from matching.ml.features import SCHEMA, friend_matrix, log_cap

PAIR_NAMES = (
    "distance_km", "distance_score", "mutual_friends", "friend_adamic_adar", "common_venues",
    "venue_adamic_adar", "interest_cosine", "interest_jaccard", "co_participation", "age_gap",
    "availability_overlap", "has_distance", "candidate_friends", "user_friends", "candidate_venues",
    "resource_allocation", "paths3", "co_located",
)
EARTH_RADIUS_KM = 6371.0088
WEEK_MINUTES = 7 * 1440
SLOT_MINUTES = 30  # availability is compared on a half-hour grid


def haversine_km(lon1: np.ndarray, lat1: np.ndarray, lon2: np.ndarray, lat2: np.ndarray) -> np.ndarray:
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(a, dtype=np.float64)) for a in (lon1, lat1, lon2, lat2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def adamic_adar_weights(degree: np.ndarray) -> np.ndarray:
    """1 / log(degree) for degree >= 2; a node with one neighbour links nobody, so 0."""
    degree = np.asarray(degree, dtype=np.float64)
    return np.where(degree >= 2, 1.0 / np.log(np.maximum(degree, 2.0)), 0.0)


class PairFeaturizer:
    """Precomputed sparse structure of a city, for pair features of one user against many."""

    def __init__(self, data: CityData, user_features: np.ndarray, *, venue_visitors: np.ndarray | None = None) -> None:
        """``data`` may be a neighbourhood of the whole city (serving loads only the asker, their
        friends, friends of friends and the candidates): degrees then come from
        ``data.requests_accepted``, the person's accepted connections in the whole city, and
        ``venue_visitors`` gives each venue's visitors in the whole city (default: counted here).
        """
        n, m = data.n_users, data.n_venues
        self.lon, self.lat = data.lon, data.lat
        self.birth_year = data.birth_year
        self.friends = friend_matrix(data)
        # The larger of the two: equal on a whole city, the whole-city count on a neighbourhood.
        friend_degree = np.maximum(np.asarray(self.friends.sum(axis=0)).ravel(), data.requests_accepted).astype(np.float64)
        self.friend_count = log_cap(friend_degree.astype(np.float64), 1000.0)
        inverse_degree = np.divide(1.0, friend_degree, out=np.zeros(len(friend_degree)), where=friend_degree > 0)
        self.friends_ra = (self.friends @ sp.diags(inverse_degree)).tocsr()
        self.friends_aa = self.friends @ sp.diags(adamic_adar_weights(friend_degree))
        visits = (data.event_kind == KIND_CODE["visit"]) & (data.event_venue >= 0)
        venues = sp.csr_matrix(
            (np.ones(int(visits.sum()), dtype=np.float32), (data.event_user[visits], data.event_venue[visits])),
            shape=(n, m),
        )
        venues.data[:] = 1.0
        self.venues = venues.tocsr()
        visitors = np.asarray(self.venues.sum(axis=0)).ravel() if venue_visitors is None else np.asarray(venue_visitors, dtype=np.float64)
        self.venues_aa = (self.venues @ sp.diags(adamic_adar_weights(visitors))).tocsr()
        self.venue_count = log_cap(np.asarray(self.venues.sum(axis=1)).ravel().astype(np.float64), 1000.0)
        activities, act_index = np.unique(data.join_activity, return_inverse=True)
        self.joins = sp.csr_matrix(
            (np.ones(len(act_index), dtype=np.float32), (data.join_user, act_index)), shape=(n, len(activities))
        )
        self.joins.data[:] = 1.0
        self.availability = _availability_matrix(data)
        self.co_location = _co_location_matrix(data)
        spot_visitors = np.asarray(self.co_location.sum(axis=0)).ravel()
        self.co_location_aa = (self.co_location @ sp.diags(adamic_adar_weights(spot_visitors))).tocsr()
        pref = user_features[:, SCHEMA.group_slices()["preference"]].astype(np.float32)
        norms = np.linalg.norm(pref, axis=1, keepdims=True)
        self.pref_unit = np.divide(pref, norms, out=np.zeros_like(pref), where=norms > 0)
        interests = pref[:, :20] > 0
        self.interest_sets = sp.csr_matrix(interests.astype(np.float32))
        self.interest_counts = interests.sum(axis=1).astype(np.float64)

    def for_pairs(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Features of arbitrary pairs ``(u[i], v[i])``, in their order: one ``pair_features``
        call per distinct ``u`` rather than one per pair."""
        u, v = np.asarray(u, dtype=np.int64), np.asarray(v, dtype=np.int64)
        out = np.zeros((len(u), len(PAIR_NAMES)), dtype=np.float32)
        order = np.argsort(u, kind="stable")
        starts = np.flatnonzero(np.r_[True, u[order][1:] != u[order][:-1]]) if len(u) else np.zeros(0, np.int64)
        for start, end in zip(starts, np.r_[starts[1:], len(u)], strict=True):
            rows = order[start:end]
            out[rows] = self.pair_features(int(u[rows[0]]), v[rows])
        return out

    def pair_features(self, user: int, candidates: np.ndarray) -> np.ndarray:
        """``(len(candidates), len(PAIR_NAMES))`` float32 features of ``user`` against each candidate."""
        c = np.asarray(candidates, dtype=np.int64)
        out = np.zeros((len(c), len(PAIR_NAMES)), dtype=np.float64)
        dist = haversine_km(self.lon[user], self.lat[user], self.lon[c], self.lat[c])
        known = np.isfinite(dist)
        out[:, 0] = np.where(known, dist, 0.0)
        out[:, 1] = np.where(known, np.exp(-np.nan_to_num(dist) / 5.0), 0.0)
        out[:, 2] = log_cap(_row_dot(self.friends, user, c), 100.0)
        out[:, 3] = np.minimum(_row_dot(self.friends_aa, user, c, rows=self.friends) / 10.0, 1.0)
        out[:, 4] = log_cap(_row_dot(self.venues, user, c), 100.0)
        out[:, 5] = np.minimum(_row_dot(self.venues_aa, user, c, rows=self.venues) / 10.0, 1.0)
        out[:, 6] = self.pref_unit[c] @ self.pref_unit[user]
        inter = _row_dot(self.interest_sets, user, c)
        union = self.interest_counts[user] + self.interest_counts[c] - inter
        out[:, 7] = np.divide(inter, union, out=np.zeros(len(c)), where=union > 0)
        out[:, 8] = log_cap(_row_dot(self.joins, user, c), 20.0)
        by = self.birth_year
        gap = np.abs(by[user] - by[c])
        out[:, 9] = np.where(np.isfinite(gap), np.minimum(np.nan_to_num(gap) / 50.0, 1.0), 0.5)
        overlap_hours = _row_dot(self.availability, user, c) * SLOT_MINUTES / 60.0
        out[:, 10] = np.minimum(overlap_hours / 40.0, 1.0)
        out[:, 11] = known
        out[:, 12] = self.friend_count[c]
        out[:, 13] = self.friend_count[user]
        out[:, 14] = self.venue_count[c]
        out[:, 15] = np.minimum(_row_dot(self.friends_ra, user, c, rows=self.friends), 1.0)
        two_hops = self.friends[user] @ self.friends  # (1, n): paths of length 2 from user
        paths3 = np.asarray((two_hops @ self.friends[c].T).todense()).ravel()
        out[:, 16] = log_cap(paths3, 1000.0)
        out[:, 17] = log_cap(_row_dot(self.co_location_aa, user, c, rows=self.co_location), 20.0)
        return np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0).astype(np.float32)


def _row_dot(matrix: sp.csr_matrix, user: int, candidates: np.ndarray, rows: sp.csr_matrix | None = None) -> np.ndarray:
    """``matrix[user] . rows[c]`` for every candidate c (``rows`` defaults to ``matrix``)."""
    other = matrix if rows is None else rows
    return np.asarray((other[candidates] @ matrix[user].T).todense()).ravel().astype(np.float64)


def _co_location_matrix(data: CityData) -> sp.csr_matrix:
    """Users x (spot, day) cells they had a location ping in; a spot is ~10 m (1e-4 degrees)."""
    if not len(data.ping_user):
        return sp.csr_matrix((data.n_users, 0), dtype=np.float32)
    spot_x = np.round(data.ping_lon * 1e4).astype(np.int64)
    spot_y = np.round(data.ping_lat * 1e4).astype(np.int64)
    day = np.floor(data.ping_time / 86_400.0).astype(np.int64)
    keys = np.stack([spot_x, spot_y, day], axis=1)
    _, cell = np.unique(keys, axis=0, return_inverse=True)
    cell = cell.ravel()
    matrix = sp.csr_matrix(
        (np.ones(len(cell), dtype=np.float32), (data.ping_user, cell)), shape=(data.n_users, int(cell.max()) + 1)
    )
    matrix.data[:] = 1.0
    return matrix


def _availability_matrix(data: CityData) -> sp.csr_matrix:
    """Users x half-hour slots of the week, 1 where the user is free for the whole slot."""
    n_slots = WEEK_MINUTES // SLOT_MINUTES
    first = np.ceil(data.avail_start / SLOT_MINUTES).astype(np.int64)
    last = np.floor(data.avail_end / SLOT_MINUTES).astype(np.int64)  # exclusive
    lengths = np.maximum(last - first, 0)
    users = np.repeat(data.avail_user, lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    slots = np.repeat(first, lengths) + offsets
    matrix = sp.csr_matrix(
        (np.ones(len(slots), dtype=np.float32), (users, np.clip(slots, 0, n_slots - 1))), shape=(data.n_users, n_slots)
    )
    matrix.data[:] = 1.0  # overlapping slots of one person count once
    return matrix
